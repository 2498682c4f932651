"""DVS128 Gesture: download (resume, checksum, unreachable host), extract, split, label quirks.

Downloads run against a real HTTP server on 127.0.0.1 started in the test (with Range
support, which http.server's SimpleHTTPRequestHandler lacks); the unreachable host is a
real closed port.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from smastream.errors import FormatError, SmastreamError
from smastream.stream.events import EVENT_DTYPE
from smastream.stream.formats import open_writer
from smastream.stream.formats.labels import GestureWindow, read_labels, write_labels
from smastream.train.datasets import (
    NO_GESTURE,
    ClipConfig,
    ClipDataset,
    StreamConfig,
    StreamDataset,
)
from smastream.train.dvsgesture import (
    download,
    dvsgesture_recordings,
    prepare_dvsgesture,
    trial_user,
)

# --------------------------------------------------------------------------- HTTP server


@dataclass
class Served:
    """What the test server sends and what it saw."""

    files: dict[str, bytes]
    ignore_range: bool = False
    cut_first_response_at: int | None = None  # send only this many bytes, then close
    requests: list[dict[str, str]] = field(default_factory=list)


def make_handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            served.requests.append({"path": self.path, "range": self.headers.get("Range", "")})
            data = served.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and not served.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = served.cut_first_response_at
            if cut is not None:
                served.cut_first_response_at = None
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served(files={})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(served))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------- fixtures


def trial_bytes(rng: np.random.Generator, tmp: Path, t0: int, t1: int, n: int) -> bytes:
    """A tiny DVS128 AEDAT 3.1 trial with ``n`` events spanning ``[t0, t1]``."""
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(t0, t1 + 1, n))
    ev["t"][[0, -1]] = t0, t1
    ev["x"] = rng.integers(0, 128, n)
    ev["y"] = rng.integers(0, 128, n)
    ev["p"] = rng.integers(0, 2, n)
    path = tmp / "trial.aedat"
    with open_writer(path, (128, 128), format="aedat3.1") as w:
        w.write(ev)
    data = path.read_bytes()
    path.unlink()
    return data


def make_archive(rng: np.random.Generator, tmp: Path, listings: bool = True) -> bytes:
    """A miniature DvsGesture.tar.gz: users 1, 2 (train) and 24 (test)."""
    members: dict[str, bytes] = {}
    labels = b"class,startTime_usec,endTime_usec\n1,1000,5000\n11,6000,9000\n"
    for name in ("user01_fluorescent", "user02_led", "user24_natural"):
        members[f"DvsGesture/{name}.aedat"] = trial_bytes(rng, tmp, 500, 9_500, 300)
        members[f"DvsGesture/{name}_labels.csv"] = labels
    if listings:
        members["DvsGesture/trials_to_train.txt"] = (
            b"user01_fluorescent.aedat\nuser02_led.aedat\n\n"
        )
        members["DvsGesture/trials_to_test.txt"] = b"user24_natural.aedat\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- download


def test_download_extract_and_split(server, tmp_path, rng):
    base, served = server
    archive = make_archive(rng, tmp_path)
    served.files["/DvsGesture.tar.gz"] = archive
    root = tmp_path / "data"
    data = prepare_dvsgesture(
        root, urls=[f"{base}/DvsGesture.tar.gz"], md5=md5(archive), progress=False
    )
    assert data == root / "DvsGesture"
    assert (root / "DvsGesture.tar.gz").read_bytes() == archive
    assert not list(root.glob("*.part")) and not list(root.glob(".extract-*"))
    train = dvsgesture_recordings(data, "train", check_span=True)
    test = dvsgesture_recordings(data, "test")
    assert [r.name for r in train] == ["user01_fluorescent", "user02_led"]
    assert [r.name for r in test] == ["user24_natural"]
    # already there: no second request; --data may point at the DvsGesture folder itself
    n = len(served.requests)
    assert prepare_dvsgesture(root, urls=[f"{base}/DvsGesture.tar.gz"]) == data
    assert prepare_dvsgesture(data, urls=[]) == data
    assert len(served.requests) == n
    with pytest.raises(ValueError, match="split"):
        dvsgesture_recordings(data, "val")


def test_download_resumes_a_partial_file(server, tmp_path):
    base, served = server
    payload = bytes(range(256)) * 4000
    served.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(payload[:300_001])
    download(f"{base}/f.bin", dest, md5=md5(payload), progress=False)
    assert dest.read_bytes() == payload
    assert served.requests[-1]["range"] == "bytes=300001-"
    assert not (tmp_path / "f.bin.part").exists()


def test_interrupted_download_keeps_part_then_resumes(server, tmp_path):
    base, served = server
    payload = np.random.default_rng(1).bytes(500_000)
    served.files["/f.bin"] = payload
    served.cut_first_response_at = 123_456
    dest = tmp_path / "f.bin"
    part = tmp_path / "f.bin.part"
    with pytest.raises(SmastreamError, match="resume") as err:
        download(f"{base}/f.bin", dest, md5=md5(payload), progress=False)
    assert "\n" not in str(err.value)
    assert not dest.exists() and part.read_bytes() == payload[:123_456]
    download(f"{base}/f.bin", dest, md5=md5(payload), progress=False)
    assert served.requests[-1]["range"] == "bytes=123456-"
    assert dest.read_bytes() == payload and not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    base, served = server
    payload = b"abc" * 10_000
    served.files["/f.bin"] = payload
    served.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(b"garbage that is not the start")
    download(f"{base}/f.bin", tmp_path / "f.bin", md5=md5(payload), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == payload


def test_complete_part_file_answered_416_is_verified(server, tmp_path):
    base, served = server
    payload = b"xyz" * 1000
    served.files["/f.bin"] = payload
    (tmp_path / "f.bin.part").write_bytes(payload)
    download(f"{base}/f.bin", tmp_path / "f.bin", md5=md5(payload), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == payload


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    base, served = server
    served.files["/f.bin"] = b"not the archive" * 100
    dest = tmp_path / "f.bin"
    with pytest.raises(SmastreamError, match="checksum mismatch") as err:
        download(f"{base}/f.bin", dest, md5="0" * 32, progress=False)
    assert "\n" not in str(err.value) and f"{base}/f.bin" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_http_error_names_the_url(server, tmp_path):
    base, _ = server
    with pytest.raises(SmastreamError, match="HTTP 404") as err:
        download(f"{base}/missing.tar.gz", tmp_path / "x", progress=False)
    assert f"{base}/missing.tar.gz" in str(err.value) and "--data" in str(err.value)


def test_unreachable_host_is_one_line_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/DvsGesture.tar.gz"
    with pytest.raises(SmastreamError) as err:
        prepare_dvsgesture(tmp_path, urls=[url], timeout_s=5, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and url in msg and "--data PATH" in msg
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SmastreamError, match="--data"):
        prepare_dvsgesture(tmp_path, download_missing=False)


# --------------------------------------------------------------------------- split


def test_split_by_user_number_and_bad_trials(tmp_path, rng):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_archive(rng, tmp_path, listings=False))
    from smastream.train.dvsgesture import extract_archive

    data = extract_archive(archive, tmp_path / "x") / "DvsGesture"
    assert [r.name for r in dvsgesture_recordings(data, "train")] == [
        "user01_fluorescent",
        "user02_led",
    ]
    assert [r.name for r in dvsgesture_recordings(data, "test")] == ["user24_natural"]
    assert trial_user("user24_natural.aedat") == 24
    with pytest.raises(ValueError, match="trial name"):
        trial_user("notes.aedat")
    # a listed trial that is missing / not an AEDAT file / without labels
    (data / "trials_to_test.txt").write_text("user24_natural.aedat\nuser25_led.aedat\n")
    with pytest.raises(SmastreamError, match=re.escape("user25_led.aedat: trial file missing")):
        dvsgesture_recordings(data, "test")
    (data / "user25_led.aedat").write_bytes(b"PK\x03\x04 not an aedat file")
    with pytest.raises(FormatError, match=re.escape("user25_led.aedat")) as err:
        dvsgesture_recordings(data, "test")
    assert "\n" not in str(err.value)
    shutil.copy(data / "user24_natural.aedat", data / "user25_led.aedat")
    with pytest.raises(
        SmastreamError, match=re.escape("user25_led_labels.csv: label file missing")
    ):
        dvsgesture_recordings(data, "test")


def test_damaged_archive_is_named(tmp_path, rng):
    from smastream.train.dvsgesture import extract_archive

    good = make_archive(rng, tmp_path)
    bad = tmp_path / "DvsGesture.tar.gz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(FormatError, match=re.escape("DvsGesture.tar.gz")):
        extract_archive(bad, tmp_path / "out")
    assert not (tmp_path / "out" / "DvsGesture").exists()
    assert not list((tmp_path / "out").glob(".extract-*"))


# --------------------------------------------------------------------------- real labels


def test_real_user01_natural_labels(real_data, tmp_path, rng):
    """The real label file of trial user01_natural (class 8 twice) on a tiny recording."""
    src = real_data / "aestream" / "user01_natural_labels.csv"
    windows = read_labels(src).windows
    t_first = windows[0].start_us - 1_000_000
    t_last = windows[-1].end_us + 1_000_000
    folder = tmp_path / "DvsGesture"
    folder.mkdir()
    n = 20_000
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["t"] = np.linspace(t_first, t_last, n).astype(np.int64)
    ev["x"] = rng.integers(0, 128, n)
    ev["y"] = rng.integers(0, 128, n)
    ev["p"] = rng.integers(0, 2, n)
    with open_writer(folder / "user01_natural.aedat", (128, 128), format="aedat3.1") as w:
        w.write(ev)
    shutil.copy(src, folder / "user01_natural_labels.csv")

    recs = dvsgesture_recordings(folder, "train", check_span=True)
    assert [r.name for r in recs] == ["user01_natural"]
    clips = ClipDataset(recs, tmp_path / "cache", ClipConfig(n_frames=4, downsample=4),
                        progress=False)  # fmt: skip
    assert len(clips) == 12
    assert np.count_nonzero(clips.labels == 7) == 2  # class 8 in the file ("arm roll")
    assert sorted(set(clips.labels.tolist())) == list(range(11))
    assert clips.report.repeated_classes == {"user01_natural": {7: 2}}
    assert clips.report.overlapping_windows == []
    for i, win in enumerate(windows):
        in_window = np.count_nonzero((ev["t"] >= win.start_us) & (ev["t"] < win.end_us))
        assert clips[i][0].sum() == in_window

    bin_us = 500_000
    stream = StreamDataset(recs, tmp_path / "cache", StreamConfig(bin_us=bin_us, chunk_steps=32),
                           progress=False)  # fmt: skip
    targets = stream.targets(0)
    t0 = stream.t0_us[0]
    assert t0 == t_first // bin_us * bin_us
    assert len(targets) == (t_last - t0) // bin_us + 1
    # bin end rule, checked bin by bin against the label file (no overlaps here)
    for k, target in enumerate(targets):
        last_us = t0 + (k + 1) * bin_us - 1
        inside = [w.label for w in windows if w.start_us <= last_us < w.end_us]
        assert target == (inside[0] if inside else NO_GESTURE)
    # the gap between the two arm-roll windows (141.59 s .. 142.36 s) is a no-gesture bin
    gap_bin = (141_800_000 - t0) // bin_us
    assert targets[gap_bin] == NO_GESTURE
    assert targets[gap_bin - 1] == 7 and targets[gap_bin + 1] == 7
    # overlapping windows in a label file (as in user22_led) are reported
    write_labels(recs[0].labels, [*windows, GestureWindow(150_000_000, 162_000_000, 4)])
    again = ClipDataset(recs, tmp_path / "cache", ClipConfig(n_frames=4, downsample=4),
                        progress=False)  # fmt: skip
    assert len(again) == 13 and len(again.report.overlapping_windows) == 2
