"""Seeded fuzzing of the packet path and the options, plus real signals (issue 11).

- Packets: hostile messages (random header corruptions, truncations, kind 2, absurd
  timestamps and sequence numbers, unsorted events) interleaved with good ones into a
  running subscriber over a real socket; then the same stream into ``smastream infer``
  in its own process: no traceback, malformed ones counted and dropped, decisions go on.
- Options: hostile values for every numeric option through ``main(argv)``: a one-line
  error and a non-zero exit, never a traceback, never a run.
- Signals: SIGINT/SIGTERM at several delays, then a second and a third, into a real
  ``replay --video``: exit 0, no traceback, and any video left behind opens.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from smastream.cli import main
from smastream.stream.binning import Binner
from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.transport import Subscriber
from smastream.stream.wire import (
    HEADER_SIZE,
    MessageKind,
    PacketFlags,
    PacketHeader,
    decode_packet,
    encode_packet,
)
from tests.conftest import assert_refused, random_events

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recordings" / "demo.aedat4"
TIMEOUT_S = 20.0
SENSOR = (128, 128)


# ------------------------------------------------------------------------------ packets


def _good(events: Events, seq: int, t_range: tuple[int, int] | None = None) -> list[Any]:
    t0, t1 = t_range or (int(events["t"][0]), int(events["t"][-1]))
    header = PacketHeader(3, seq, SENSOR, t0, t1, len(events))
    return encode_packet(header, events)


def _hostile(rng: np.random.Generator, events: Events, seq: int) -> tuple[str, list[bytes]]:
    """One malformed or wire-valid-but-wrong message: (what, frames)."""
    head, payload = (bytes(f) for f in _good(events, seq))
    kind = int(rng.integers(0, 9))

    def patched(offset: int, fmt: str, value: int) -> bytes:
        b = bytearray(head)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    if kind == 0:  # random bytes flipped anywhere in the header
        b = bytearray(head)
        for i in rng.integers(0, HEADER_SIZE, int(rng.integers(1, 6))):
            b[i] ^= int(rng.integers(1, 256))
        return "flipped header", [bytes(b), payload]
    if kind == 1:  # truncated or padded frames
        cut = int(rng.integers(0, len(payload)))
        return "truncated payload", [head, payload[:cut]]
    if kind == 2:
        return "kind 2", [patched(5, "<B", int(MessageKind.PREDICTIONS)), payload]
    if kind == 3:  # an empty packet whose span ends at 2**63-1
        empty = PacketHeader(3, seq, SENSOR, 0, 0, 0).pack()
        b = bytearray(empty)
        struct.pack_into("<q", b, 32, 2**63 - 1)
        return "t_last 2**63-1", [bytes(b), b""]
    if kind == 4:  # one event at t = 2**62 (pack refuses it: patched in)
        return "t 2**62", _far_packet(events[:1], seq)
    if kind == 5:  # unsorted events inside a correct span
        bad = events.copy()
        bad[[1, 2]] = bad[[2, 1]]
        return "unsorted", [head, bad.tobytes()]
    if kind == 6:
        return "three frames", [head, payload, b"x"]
    if kind == 7:
        return "garbage", [rng.bytes(int(rng.integers(0, 80)))]
    return "bad flags", [patched(6, "<H", 0x8000), payload]


def _far_packet(event: Events, seq: int) -> list[bytes]:
    """A one-event packet at t = 2**62, header span and event both (absurd, wire-valid)."""
    far = event.copy()
    far["t"] = 2**62
    head = bytearray(PacketHeader(3, seq, SENSOR, 0, 0, 1).pack())
    struct.pack_into("<qq", head, 24, 2**62, 2**62)
    return [bytes(head), far.tobytes()]


def _malformed(rng: np.random.Generator, events: Events, seq: int) -> tuple[str, list[bytes]]:
    """A hostile message that the wire rules reject (a flipped byte can leave a valid
    header, e.g. in ``send_time_ns``: such messages are drawn again)."""
    from smastream.stream.wire import MalformedPacket

    while True:
        what, frames = _hostile(rng, events, seq)
        try:
            decode_packet(frames)
        except MalformedPacket:
            return what, frames


@pytest.fixture
def xpub():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.bind("tcp://127.0.0.1:*")
    yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close()
    ctx.term()


def _wait_subscribed(sock: zmq.Socket[Any]) -> None:
    assert sock.poll(int(TIMEOUT_S * 1000)), "no subscription"
    assert sock.recv()[:1] == b"\x01"


def test_hostile_packets_are_counted_and_dropped_and_good_ones_delivered(xpub) -> None:
    sock, endpoint = xpub
    rng = np.random.default_rng(11)
    n_good, n_bad = 200, 400
    sent_good: list[Events] = []
    hostile: list[str] = []
    with Subscriber(endpoint, buffer_packets=10_000) as sub:
        _wait_subscribed(sock)
        seq = 0
        t = 0
        for _ in range(n_good):
            events = random_events(rng, 20, t0=t)
            t = int(events["t"][-1]) + 1
            sock.send_multipart(_good(events, seq))
            sent_good.append(events)
            for _ in range(2):
                what, frames = _malformed(rng, events, seq)
                hostile.append(what)
                sock.send_multipart(frames)
            seq += 1
        end = PacketHeader(3, seq, SENSOR, t, t, 0, PacketFlags.END_OF_STREAM)
        sock.send_multipart([end.pack(), b""])
        assert sub.wait_for_end(TIMEOUT_S), sub.stats
        got = []
        while (p := sub.recv(0)) is not None:
            got.append(p)
        stats = sub.stats
    assert len(hostile) == n_bad
    # every good packet arrived intact, in order; every hostile one was dropped
    good = [p for p in got if not p.header.end_of_stream]
    assert [p.header.seq for p in good] == list(range(n_good))
    np.testing.assert_array_equal(
        np.concatenate([p.events for p in good]), np.concatenate(sent_good)
    )
    assert stats.malformed == n_bad
    assert stats.received == n_good + 1
    assert stats.lost == 0 and stats.restarts == 0
    for reason in ("kind", "timestamps", "frames", "payload size"):
        assert stats.malformed_reasons.get(reason, 0) > 0, stats.malformed_reasons
    # what got through goes into the binner without overflow or hang
    binner = Binner(None, 10_000, 4, SENSOR)
    for p in got:
        if p.header.discontinuity:
            binner.reset()
        binner.push(p.events)
        binner.flush(p.header.t_last_us + 1)


def test_decode_never_raises_anything_but_malformed_packet() -> None:
    rng = np.random.default_rng(12)
    events = random_events(rng, 30)
    from smastream.stream.wire import MalformedPacket

    for i in range(3000):
        _, frames = _hostile(rng, events, i)
        try:
            header, ev = decode_packet(frames)
        except MalformedPacket:
            continue
        # accepted: it must be a sane packet
        assert header.kind == MessageKind.EVENTS
        assert abs(header.t_first_us) <= 2**53 and abs(header.t_last_us) <= 2**53
        assert len(ev) == header.n_events and ev.dtype == EVENT_DTYPE
        if len(ev) > 1:
            assert bool(np.all(np.diff(ev["t"]) >= 0))


def _run(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "smastream", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_infer_survives_hostile_packets_and_reports_them(xpub, tmp_path: Path) -> None:
    """The issue's cases into a real `infer`: kind 2, t_last 2**63-1, t = 2**62, seq
    2**64-1: counted, dropped or passed on as a restart; decisions go on; rc 0."""
    sock, endpoint = xpub
    rng = np.random.default_rng(13)
    predictions = tmp_path / "p.jsonl"
    proc = _run(
        [
            "infer",
            "--connect",
            endpoint,
            "--no-display",
            "--lossless",
            "--predictions",
            str(predictions),
            "--wait",
            "20",
        ]
    )
    try:
        _wait_subscribed(sock)
        seq, t = 0, 0
        bin_us = 50_000

        def send_span(n_packets: int) -> None:
            nonlocal seq, t
            for _ in range(n_packets):
                events = random_events(rng, 200, t0=t, mean_dt_us=25.0)
                t_end = t + 5_000
                events = events[events["t"] < t_end]
                sock.send_multipart(_good(events, seq, (t, t_end - 1)))
                seq, t = seq + 1, t_end

        send_span(200)  # 1 s
        kind2 = bytearray(bytes(_good(random_events(rng, 5, t0=t), seq)[0]))
        kind2[5] = 2
        sock.send_multipart([bytes(kind2), random_events(rng, 5, t0=t).tobytes()])
        huge = bytearray(PacketHeader(3, seq, SENSOR, t, t, 0).pack())
        struct.pack_into("<q", huge, 32, 2**63 - 1)
        sock.send_multipart([bytes(huge), b""])
        sock.send_multipart(_far_packet(random_events(rng, 1, t0=t), seq))
        renumbered = PacketHeader(3, 2**64 - 1, SENSOR, t, t, 0).pack()
        sock.send_multipart([renumbered, b""])
        # a wire-valid jump far ahead (2**52 us, 143 years), then time as before: the
        # jump is skipped, the return is a backward jump, i.e. a discontinuity
        ahead = random_events(rng, 3, t0=2**52)
        sock.send_multipart(_good(ahead, seq))
        seq += 1
        send_span(200)  # 1 s more after the attacks
        end = PacketHeader(3, seq, SENSOR, t, t, 0, PacketFlags.END_OF_STREAM)
        sock.send_multipart([end.pack(), b""])
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    decisions = [json.loads(line) for line in predictions.read_text().splitlines()]
    t_us = [d["t_us"] for d in decisions]
    # decisions continue after the attacks, up to the end of the second second
    assert max(t_us) >= 2 * 1_000_000 - 4 * bin_us, t_us[-5:]
    transport = next(line for line in err.splitlines() if line.startswith("transport:"))
    assert "3 malformed" in transport and "kind: 1" in transport, transport
    assert "timestamps: 2" in transport and "2 restarts" in transport, transport
    assert " 1 late" in transport, transport


# ------------------------------------------------------------------------------ options

HOSTILE_NUMBERS = ("inf", "-inf", "nan", "1e999", "-1", "1e300", "abc", "", "²", "1e-300")
PIPELINE_NUMERIC = (
    "--speed",
    "--packet-ms",
    "--bin-ms",
    "--seconds",
    "--threads",
    "--steps-per-window",
    "--start-us",
    "--hold-steps",
    "--min-confidence",
)


def _hostile_argv(rng: np.random.Generator, n: int) -> list[list[str]]:
    cases: list[list[str]] = []
    missing = "no-such-file.aedat4"
    for _ in range(n):
        value = str(rng.choice(HOSTILE_NUMBERS))
        which = int(rng.integers(0, 4))
        if which == 0:
            opt = str(rng.choice(PIPELINE_NUMERIC))
            cases.append(["replay", missing, "--no-display", opt, value])
        elif which == 1:
            opt = str(rng.choice(("--hwm", "--wait-subscribers", "--seconds", "--synthetic")))
            cases.append(["publish", missing, opt, value])
        elif which == 2:
            opt = str(rng.choice(("--wait", "--bin-ms", "--threads", "--seconds")))
            cases.append(["infer", "--connect", "tcp://127.0.0.1:1", "--wait", "0.5", opt, value])
        else:
            port = str(rng.choice(("65536", "99999", "-1", "x", "5555x", "", "٥٥٥٥")))
            cases.append(["publish", missing, "--bind", f"tcp://127.0.0.1:{port}"])
    return cases


EXPLICIT = [
    ["publish", "--synthetic", "1", "--curve-clients", "keys"],
    ["infer", "--connect", "tcp://127.0.0.1:1", "--curve-client-secret", "k.key_secret"],
    ["publish", "--synthetic", "1", "--hwm", "-1"],
    ["infer", "--connect", "tcp://127.0.0.1:1", "--wait", "inf"],
    ["replay", str(DEMO), "--bin-ms", "inf"],
    ["replay", str(DEMO), "--bin-ms", "1e-9"],
    ["replay", str(DEMO), "--bin-ms", "9.99"],
    ["replay", str(DEMO), "--packet-ms", "inf"],
    ["replay", str(DEMO), "--speed", "1e-300"],
    ["replay", str(DEMO), "--threads", "100000"],
    ["publish", "--synthetic", "1", "--bind", "tcp://127.0.0.1:99999"],
    ["infer", "--connect", "tcp://127.0.0.1:99999"],
]


@pytest.mark.parametrize("argv", EXPLICIT, ids=lambda a: " ".join(a[:1] + a[-2:]))
def test_issue_option_cases_are_one_line_errors(argv: list[str], capfd) -> None:
    assert_refused(argv, capfd)


def test_seeded_hostile_option_values_are_one_line_errors(capfd) -> None:
    for argv in _hostile_argv(np.random.default_rng(14), 60):
        assert_refused(argv, capfd)


def test_model_whose_logits_disagree_with_its_metadata_is_refused_at_open(
    tmp_path: Path, capfd
) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(ROOT / "engine" / "models" / "demo.onnx"))
    for prop in model.metadata_props:
        if prop.key == "smastream":
            meta = json.loads(prop.value)
            n_classes = len(meta["class_names"])
            meta["class_names"] = meta["class_names"][:5]
            prop.value = json.dumps(meta)
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    code = main(["replay", str(DEMO), "--no-display", "--model", str(bad), "--seconds", "1"])
    err = capfd.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"{bad}: the model returns logits of shape [" in err
    assert f", {n_classes}], its metadata says [" in err
    assert "x 5 class names): re-export it" in err
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ signals

# The launcher prints a marker just before main() (with argv=None, as the console script
# runs it), so that delays are measured from main's start, not from the interpreter's.
LAUNCH = (
    "import sys; from smastream.cli import main; "
    "print('go', file=sys.stderr, flush=True); sys.exit(main())"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
@pytest.mark.parametrize("delay_s", [0.05, 0.3, 1.0, 3.0])
def test_signals_at_any_time_exit_cleanly_and_leave_a_playable_video(
    tmp_path: Path, sig: signal.Signals, delay_s: float
) -> None:
    video = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH,
            "replay",
            str(DEMO),
            "--no-display",
            "--quiet",
            "--video",
            str(video),
            "--seconds",
            "60",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == "go"
        time.sleep(delay_s)
        proc.send_signal(sig)
        time.sleep(0.05)
        for _ in range(2):  # a second and a third while it cleans up
            if proc.poll() is None:
                proc.send_signal(sig)
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    if video.exists():
        cap = cv2.VideoCapture(str(video))
        ok, frame = cap.read()
        cap.release()
        assert ok and frame is not None, f"{video} ({video.stat().st_size} bytes) does not open"


def test_sigterm_during_a_long_runtime_setup_is_honoured(tmp_path: Path) -> None:
    """The bound on --threads keeps ONNX Runtime from starting threads for minutes."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH,
            "replay",
            str(DEMO),
            "--no-display",
            "--quiet",
            "--threads",
            str(4 * (os.cpu_count() or 1)),
            "--seconds",
            "60",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stderr.readline().strip() == "go"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err


def test_an_untrusted_checkpoint_is_refused_without_advice_to_unpickle_it(
    tmp_path: Path, capfd
) -> None:
    import pickle

    import torch

    rng = np.random.default_rng(15)
    files = {"random.pt": rng.bytes(3000), "short.pt": rng.bytes(10)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with open(tmp_path / "pickle.pt", "wb") as f:
        pickle.dump({"a": object}, f)
    torch.save({"f": print}, tmp_path / "code.pt")  # a global: only unpickling runs it
    for path in sorted(tmp_path.glob("*.pt")):
        code = main(["replay", str(DEMO), "--no-display", "--model", str(path)])
        err = capfd.readouterr().err
        assert code == 1, err
        assert len(err.strip().splitlines()) == 1, err
        assert f"{path}:" in err and "weights_only" not in err and "Traceback" not in err


def test_a_video_closed_before_its_first_frame_still_opens(tmp_path: Path) -> None:
    """What a signal before the first overlay frame leaves behind (was 258 bytes that
    no player opens)."""
    from smastream.stream.overlay import VideoSink

    path = tmp_path / "early.mp4"
    VideoSink(path, (120, 160), fps=20.0).close()
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (120, 160, 3)


def test_a_signal_while_the_video_opens_leaves_no_unplayable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT that comes while OpenCV opens the writer: Python raises it the moment
    the constructor returns, and the dropped writer finished a file with no frame (the
    258 bytes of the issue). No file, or one that opens."""
    import ctypes
    import functools
    import operator

    from smastream.stream.pipeline import OverlayDisplay

    real = cv2.VideoWriter
    kill = functools.partial(ctypes.CDLL(None).kill, os.getpid(), int(signal.SIGINT))

    class Interrupted:  # open, then the signal, from C: no bytecode in between
        fourcc = staticmethod(real.fourcc)

        def __new__(cls, *args: Any) -> Any:
            writer, _ = map(operator.call, [functools.partial(real, *args), kill])
            return writer

    monkeypatch.setattr(cv2, "VideoWriter", Interrupted)
    video = tmp_path / "out.mp4"
    display = OverlayDisplay(window=False, video=video, fps=20.0)
    with pytest.raises(KeyboardInterrupt):
        display._open_sink(SENSOR)
    assert display.sink is None
    if video.exists():
        cap = cv2.VideoCapture(str(video))
        ok = cap.read()[0]
        cap.release()
        assert ok, f"{video} ({video.stat().st_size} bytes) does not open"
