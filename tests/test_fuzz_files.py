"""Seeded fuzzing of the file readers through the CLI: damaged AEDAT 4.0, 3.1 and 2.0,
Prophesee EVT 2 / EVT 3 and DAT files (real ones from ``../shared/data/real`` and small
synthetic ones) and label files.

Every damaged file must end as the README promises: exit 0, or exit 1 with a one-line
error naming the file; never a traceback, a death by signal or a hang; and a recording
(``replay --record``) holds every event the reader delivered before the damage.

Cost: about a minute on two loaded cores (sized by the counts below).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from smastream.cli import main
from smastream.errors import SmastreamError
from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.formats import open_events
from tests.stream.test_aedat2 import aedat2_bytes, encode, safe_events

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
HANG_S = 60  # a single in-process run slower than this is a hang

Mutation = Callable[[bytearray, np.random.Generator], bytearray]


# -- the corpus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seed files by name: real AEDAT 4 files, synthetic AEDAT 4 / 3.1, an AEDAT 2.0 file."""
    d = tmp_path_factory.mktemp("corpus")
    out = {
        "davis.aedat4": REAL / "aestream" / "davis.aedat4",
        "tonic.aedat4": REAL / "tonic" / "sample.aedat4",
        "evt2.raw": REAL / "expelliarmus" / "evt2_sample.raw",
        "evt3.raw": REAL / "expelliarmus" / "evt3_sample.raw",
        "faery-evt2.raw": REAL / "faery" / "evt2.raw",
        "ncars.dat": REAL / "tonic" / "sample_ncars.dat",
    }
    for name, fmt in (("synth.aedat4", "aedat4"), ("synth.aedat", "aedat3.1")):
        assert main(["synth", str(d / name), "--format", fmt, "--seconds", "2", "--seed", "3"]) == 0
        (d / name).with_name(Path(name).stem + "_labels.csv").unlink()  # labels fuzzed apart
        out[name] = d / name
    ev = safe_events(np.random.default_rng(1), 3000, "dvs128")
    out["dvs128.aedat2"] = d / "dvs128.aedat"
    out["dvs128.aedat2"].write_bytes(
        aedat2_bytes(encode(ev, "dvs128"), ev["t"], ["# AEChip: DVS128"])
    )
    return out


def _truncate(data: bytearray, rng: np.random.Generator) -> bytearray:
    return data[: int(rng.integers(1, len(data)))]


def _set_byte(data: bytearray, rng: np.random.Generator) -> bytearray:
    data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
    return data


def _header_byte(data: bytearray, rng: np.random.Generator) -> bytearray:
    """A byte in the first 4 KiB: file headers, AEDAT 4's XML, the first packet headers."""
    data[int(rng.integers(0, min(4096, len(data))))] = int(rng.choice([0x00, 0xBF, 0xC8, 0xFF]))
    return data


def _int32_field(data: bytearray, rng: np.random.Generator) -> bytearray:
    """An aligned 32-bit field set to an extreme or random value (sizes, counts, stamps)."""
    at = int(rng.integers(0, len(data) - 4)) & ~3
    value = int(rng.choice([0, 1, -1, 2**31 - 1, -(2**31), int(rng.integers(-(2**31), 2**31))]))
    struct.pack_into("<i", data, at, value)
    return data


def _run_of_garbage(data: bytearray, rng: np.random.Generator) -> bytearray:
    at = int(rng.integers(0, len(data)))
    n = int(rng.integers(1, 64))
    data[at : at + n] = rng.integers(0, 256, size=len(data[at : at + n]), dtype=np.uint8).tobytes()
    return data


MUTATIONS: dict[str, Mutation] = {
    "truncate": _truncate,
    "byte": _set_byte,
    "header-byte": _header_byte,
    "int32": _int32_field,
    "garbage": _run_of_garbage,
}
INFO_CASES_PER_FILE = 40  # 5 files x 40: about 200 damaged files through `info`


def _cases(n: int, seed: int) -> Iterator[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    names = list(MUTATIONS)
    for k in range(n):
        yield names[k % len(names)], int(rng.integers(0, 2**31))


def _mutate(src: Path, dst: Path, kind: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    data = bytearray(src.read_bytes())
    if kind != "truncate" and src.stat().st_size > 300_000:
        # Real files: damage within their first 300 kB, so the read stays short.
        data = data[:300_000] if rng.random() < 0.5 else data
    dst.write_bytes(bytes(MUTATIONS[kind](data, rng)))
    return dst


# -- checks ---------------------------------------------------------------------------------


class _Hang(Exception):
    pass


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail (instead of hanging CI) when one test runs longer than ``HANG_S`` per run."""

    def expire(signum: int, frame: object) -> None:
        raise _Hang(f"no result within {HANG_S} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    try:
        rc = main(argv)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _assert_clean_end(rc: int, err: str, path: Path, what: str) -> None:
    assert "Traceback" not in err, f"{what}: traceback\n{err}"
    assert rc in (0, 1), f"{what}: exit {rc}"
    if rc == 1:
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1, f"{what}: not one error line\n{err}"
        assert str(path) in errors[0], f"{what}: the error does not name the file\n{err}"


def delivered(path: Path) -> tuple[Events, SmastreamError | None]:
    """Everything the reader yields before its error (or the end), and the error."""
    parts: list[Events] = []
    try:
        with open_events(path) as reader:
            for chunk in reader:
                parts.append(chunk.copy())
    except SmastreamError as exc:
        return _cat(parts), exc
    return _cat(parts), None


def _cat(parts: list[Events]) -> Events:
    return np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)


# -- the fuzz ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed_file",
    [
        "davis.aedat4",
        "tonic.aedat4",
        "synth.aedat4",
        "synth.aedat",
        "dvs128.aedat2",
        "evt2.raw",
        "evt3.raw",
        "faery-evt2.raw",
        "ncars.dat",
    ],
)
def test_damaged_files_through_info(
    seed_file: str,
    corpus: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_hang: None,
) -> None:
    """``info`` on damaged files: a clean end, and the events it reports are exactly the
    events the reader delivers before the damage."""
    src = corpus[seed_file]
    for i, (kind, seed) in enumerate(_cases(INFO_CASES_PER_FILE, zlib.crc32(seed_file.encode()))):
        bad = _mutate(src, tmp_path / f"bad{i}{src.suffix}", kind, seed)
        what = f"{seed_file} {kind} seed {seed}"
        rc, out, err = _run_cli(["info", str(bad)], capsys)
        _assert_clean_end(rc, err, bad, what)
        if "unknown format" in err or not out:
            continue  # nothing was read (the header is gone)
        events, error = delivered(bad)
        assert (rc == 1) == (error is not None), what
        assert f"events         {len(events):,} " in out, what


REPLAY_CASES = [
    ("synth.aedat4", "truncate", 11),
    ("synth.aedat4", "garbage", 12),
    ("synth.aedat", "truncate", 13),
    ("synth.aedat", "int32", 14),
    ("synth.aedat", "swap", 15),
    ("dvs128.aedat2", "truncate", 16),
    ("dvs128.aedat2", "byte", 17),
    ("davis.aedat4", "truncate", 18),
    ("evt2.raw", "garbage", 19),
    ("evt3.raw", "truncate", 20),
    ("evt3.raw", "int32", 21),
    ("faery-evt2.raw", "byte", 22),
    ("ncars.dat", "int32", 23),
]


@pytest.mark.parametrize(("seed_file", "kind", "seed"), REPLAY_CASES)
def test_damaged_files_through_replay_record(
    seed_file: str,
    kind: str,
    seed: int,
    corpus: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_hang: None,
) -> None:
    """``replay --record`` of a damaged file: a clean end, and the recording is complete
    and holds every event the reader delivered (timestamps that go back are rebased)."""
    src = corpus[seed_file]
    bad = tmp_path / f"bad{src.suffix}"
    if kind == "swap":  # two timestamps swapped: time goes back once
        data = bytearray(src.read_bytes())
        header = data.index(b"#!END-HEADER\r\n") + 14 + 28
        a, b = header + 4 * 8 + 4, header + 4 * 40 + 4  # timestamps of events 8 and 40
        data[a : a + 4], data[b : b + 4] = data[b : b + 4], data[a : a + 4]
        bad.write_bytes(bytes(data))
    else:
        _mutate(src, bad, kind, seed)
    events, _ = delivered(bad)
    rec = tmp_path / "rec.aedat4"
    rc, _, err = _run_cli(
        ["replay", str(bad), "--no-display", "--as-fast-as-possible", "--record", str(rec)],
        capsys,
    )
    what = f"{seed_file} {kind} seed {seed}"
    _assert_clean_end(rc, err, bad, what)
    if not len(events):
        return
    got, rec_error = delivered(rec)
    assert rec_error is None, f"{what}: the recording is damaged: {rec_error}"
    assert len(got) == len(events), f"{what}: {len(got)} recorded of {len(events)} delivered"
    for field in ("x", "y", "p"):
        assert (got[field] == events[field]).all(), what
    steps = np.diff(events["t"].astype(np.int64))
    assert (np.diff(got["t"]) == np.maximum(steps, 0)).all(), what
    if kind == "swap":
        assert (steps < 0).any(), "the swap made no step back"


@pytest.mark.parametrize(
    "text",
    [
        "class,startTime_usec,endTime_usec\n1,--5,10\n",
        "class,startTime_usec,endTime_usec\n1,\u00b2,10\n",
        "class,startTime_usec,endTime_usec\n1,0,99999999999999999999999\n",
        "class,startTime_usec,endTime_usec\n1,0\x00,10\n",
        "class,startTime_usec,endTime_usec\n99,0,10\n",
        'class,startTime_usec,endTime_usec\n1,"0,10\n',
        "\xff\xfe",
    ],
)
def test_damaged_label_files(
    text: str,
    corpus: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_hang: None,
) -> None:
    """A bad label file beside a recording: ``info`` and ``replay`` fail with one line
    naming the label file, and ``replay`` fails before running (no recording made)."""
    rec = tmp_path / "r.aedat"
    rec.write_bytes(corpus["synth.aedat"].read_bytes())
    labels = tmp_path / "r_labels.csv"
    labels.write_bytes(text.encode("utf-8", "surrogateescape"))
    rc, _, err = _run_cli(["info", str(rec)], capsys)
    _assert_clean_end(rc, err, labels, "info")
    assert rc == 1
    out = tmp_path / "out.aedat4"
    rc, _, err = _run_cli(
        ["replay", str(rec), "--no-display", "--as-fast-as-possible", "--record", str(out)],
        capsys,
    )
    _assert_clean_end(rc, err, labels, "replay")
    assert rc == 1


def test_seeded_label_corruptions(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_hang: None
) -> None:
    """The real label file, damaged 40 ways, beside a recording: ``info`` ends cleanly."""
    real = REAL / "aestream" / "user01_natural_labels.csv"
    recording = corpus["synth.aedat"].read_bytes()
    for i, (kind, seed) in enumerate(_cases(40, 7)):
        rec = tmp_path / f"r{i}.aedat"
        rec.write_bytes(recording)
        labels = _mutate(real, tmp_path / f"r{i}_labels.csv", kind, seed)
        rc, _, err = _run_cli(["info", str(rec)], capsys)
        _assert_clean_end(rc, err, labels, f"labels {kind} seed {seed}")


# -- in a separate process: signals and aborts --------------------------------------------


def _damaged_by_the_issue(tmp_path: Path) -> list[Path]:
    """The files of issue 11 that aborted the process or escaped as Rust panics."""
    out = []
    d = bytearray((REAL / "tonic" / "sample.aedat4").read_bytes())
    d[2071] = 0xBF  # XML header: not UTF-8 (a PanicException, 99-line traceback)
    out.append(tmp_path / "p1.aedat4")
    out[-1].write_bytes(bytes(d))
    d = bytearray((REAL / "aestream" / "davis.aedat4").read_bytes())
    struct.pack_into("<i", d, 3130, 1)  # first packet of 1 byte (a panic in flatbuffers)
    out.append(tmp_path / "p1b.aedat4")
    out[-1].write_bytes(bytes(d))
    d = bytearray((REPO / "recordings" / "demo.aedat4").read_bytes()[:200_000])
    d[670] = 0xC8  # XML header: faery's error text is not UTF-8 (SIGABRT)
    out.append(tmp_path / "p2.aedat4")
    out[-1].write_bytes(bytes(d))
    return out


@pytest.mark.parametrize("command", ["info", "replay"])
def test_no_signal_or_panic_in_a_subprocess(command: str, tmp_path: Path) -> None:
    """Aborts (SIGABRT) and Rust panics print to stderr themselves: only a separate
    process shows them. Each file ends with exit 1 and exactly one line on stderr."""
    env = dict(os.environ, RUST_BACKTRACE="1")
    for bad in _damaged_by_the_issue(tmp_path):
        argv = [sys.executable, "-m", "smastream", command, str(bad)]
        if command == "replay":
            argv += [
                "--no-display",
                "--as-fast-as-possible",
                "--record",
                str(tmp_path / "r.aedat4"),
            ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
        assert proc.returncode == 1, f"{bad.name}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0], f"{bad.name}:\n{proc.stderr[-2000:]}"


# -- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root, as in CI): writes fail with ENOSPC part-way."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("fmt", ["aedat4", "aedat3.1"])
def test_synth_on_a_full_disk(
    fmt: str, small_disk: Path, capsys: pytest.CaptureFixture[str], no_hang: None
) -> None:
    out = small_disk / ("x.aedat4" if fmt == "aedat4" else "x.aedat")
    rc, _, err = _run_cli(["synth", str(out), "--format", fmt, "--seconds", "30"], capsys)
    assert rc == 1 and "No space left on device" in err
    _assert_clean_end(rc, err, out, "synth")  # names x.aedat4, not its temporary file
    assert list(small_disk.iterdir()) == []  # no partial recording, no labels .part


def test_replay_record_on_a_full_disk(
    corpus: dict[str, Path], small_disk: Path, capsys: pytest.CaptureFixture[str], no_hang: None
) -> None:
    rec = small_disk / "rec.aedat4"
    src = corpus["davis.aedat4"]
    argv = ["replay", str(src), "--no-display", "--as-fast-as-possible", "--record", str(rec)]
    rc, _, err = _run_cli(argv, capsys)
    assert rc == 1 and "No space left on device" in err
    _assert_clean_end(rc, err, rec, "replay --record")


def test_keys_on_a_full_disk(small_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (small_disk / "fill").write_bytes(b"\0" * (60 * 1024))
    with pytest.raises(OSError):  # the disk is full
        (small_disk / "more").write_bytes(b"\0" * 8192)
    (small_disk / "more").unlink(missing_ok=True)
    rc, _, err = _run_cli(["keys", str(small_disk / "k")], capsys)
    _assert_clean_end(rc, err, small_disk / "k", "keys")
    assert rc == 1 and "No space left on device" in err
    assert list((small_disk / "k").iterdir()) == []  # no 0-byte server.key


def test_predictions_on_a_full_disk_keep_whole_lines(
    corpus: dict[str, Path], small_disk: Path, capsys: pytest.CaptureFixture[str], no_hang: None
) -> None:
    """``--predictions`` on a disk that fills up: a one-line error, and the file holds
    only whole JSON lines (the one that did not fit is cut back)."""
    import json

    (small_disk / "fill").write_bytes(b"\0" * (60 * 1024))  # leaves room for a few lines
    pred = small_disk / "p.jsonl"
    src = corpus["synth.aedat4"]
    argv = ["replay", str(src), "--no-display", "--as-fast-as-possible", "--predictions", str(pred)]
    rc, _, err = _run_cli(argv, capsys)
    _assert_clean_end(rc, err, pred, "replay --predictions")
    assert rc == 1 and "No space left on device" in err
    text = pred.read_text()
    assert text and text.endswith("\n")
    for line in text.splitlines():
        json.loads(line)


def test_video_on_a_full_disk_is_an_error(
    corpus: dict[str, Path], small_disk: Path, capsys: pytest.CaptureFixture[str], no_hang: None
) -> None:
    """OpenCV's ``write`` reports nothing when the disk fills: the finished file is
    checked, and a video that does not open is a one-line error, not exit 0."""
    video = small_disk / "v.mp4"
    src = corpus["synth.aedat4"]
    argv = ["replay", str(src), "--no-display", "--as-fast-as-possible", "--video", str(video)]
    rc, _, err = _run_cli(argv, capsys)
    _assert_clean_end(rc, err, video, "replay --video")
    assert rc == 1 and "does not open" in err


def test_synth_never_renames_over_a_special_file(tmp_path: Path) -> None:
    """synth writes a hidden temporary and renames it over the target; a FIFO (standing in
    for a device such as /dev/full, which root would replace) is refused, left as it was."""
    import os
    import stat

    from smastream.cli import main

    fifo = tmp_path / "pipe.aedat4"
    os.mkfifo(fifo)
    assert main(["synth", str(fifo), "--seconds", "1"]) != 0
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert not [p for p in tmp_path.iterdir() if p != fifo]  # no temporary, no labels left
