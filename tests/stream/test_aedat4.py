"""AEDAT 4.0 reader/writer: real recordings, round trips, chunking, seek and damage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smastream.errors import FormatError
from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.formats import open_events, open_writer
from smastream.stream.formats.aedat4 import Aedat4Reader, Aedat4Writer, read_header
from tests.conftest import random_events

# From shared/data/real/SOURCES.md.
REAL: dict[str, dict[str, Any]] = {
    "tonic/sample.aedat4": dict(
        n=111_954,
        on=55_023,
        off=56_931,
        t0=1605537493718345,
        t1=1605537494308262,
        size=(320, 240),
        camera="DVXplorer_DXB00010",
        other={"imu": 475, "triggers": 0},
    ),
    "aestream/davis.aedat4": dict(
        n=117_667,
        on=72_363,
        off=45_304,
        t0=1633953690975950,
        t1=1633953691105949,
        size=(346, 260),
        camera="DAVIS346_00000104",
        other={"frames": 3, "imu": 130, "triggers": 15},
    ),
}


def read_all(path: Path, chunk_events: int = 1 << 18) -> Events:
    with open_events(path, chunk_events) as r:
        chunks = list(r)
    return np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)


def read_until_error(path: Path) -> tuple[Events, FormatError | None]:
    got: list[Events] = []
    err = None
    try:
        with Aedat4Reader(path, chunk_events=1000) as r:
            for c in r:
                got.append(c.copy())
    except FormatError as exc:
        err = exc
    ev = np.concatenate(got) if got else np.empty(0, EVENT_DTYPE)
    return ev, err


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_match_sources(real_data: Path, name: str) -> None:
    want = REAL[name]
    with open_events(real_data / name) as r:
        assert isinstance(r, Aedat4Reader)
        assert r.format == "aedat4"
        assert r.sensor_size == want["size"]
        assert r.camera == want["camera"]
        chunks = list(r)
        assert r.other_streams() == want["other"]
        assert all(c.dtype == EVENT_DTYPE for c in chunks)
    ev = np.concatenate(chunks)
    assert len(ev) == want["n"]
    assert int(np.count_nonzero(ev["p"] == 1)) == want["on"]
    assert int(np.count_nonzero(ev["p"] == 0)) == want["off"]
    assert (int(ev["t"][0]), int(ev["t"][-1])) == (want["t0"], want["t1"])
    assert np.all(np.diff(ev["t"]) >= 0)
    w, h = want["size"]
    assert int(ev["x"].max()) < w and int(ev["y"].max()) < h


def test_real_file_matches_dv_processing(real_data: Path) -> None:
    dv = pytest.importorskip("dv_processing")
    path = real_data / "aestream" / "davis.aedat4"
    rec = dv.io.MonoCameraRecording(str(path))
    ref = []
    while (batch := rec.getNextEventBatch()) is not None:
        ref.append(batch.numpy())
    want = np.concatenate(ref)
    got = read_all(path, chunk_events=777)
    np.testing.assert_array_equal(got["t"], want["timestamp"])
    np.testing.assert_array_equal(got["x"], want["x"])
    np.testing.assert_array_equal(got["y"], want["y"])
    np.testing.assert_array_equal(got["p"], want["polarity"])


def test_other_streams_before_iterating_and_skipped_counts(real_data: Path) -> None:
    with Aedat4Reader(real_data / "aestream" / "davis.aedat4") as r:
        assert r.other_streams() == REAL["aestream/davis.aedat4"]["other"]
        assert r.other_stream_units() == {
            "frames": "frames",
            "imu": "samples",
            "triggers": "triggers",
        }
        list(r)
        assert dict(r.skipped) == {"frames packets": 3, "imu packets": 13, "triggers packets": 11}


def test_chunks_are_bounded_and_lossless(real_data: Path) -> None:
    path = real_data / "tonic" / "sample.aedat4"
    whole = read_all(path)
    with open_events(path, chunk_events=500) as r:
        chunks = list(r)
    assert max(len(c) for c in chunks) <= 500
    assert len(chunks) >= len(whole) // 500
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_seek(real_data: Path) -> None:
    path = real_data / "aestream" / "davis.aedat4"
    whole = read_all(path)
    t = whole["t"]
    with open_events(path, chunk_events=3000) as r:
        for target in (int(t[0]) - 5, int(t[len(t) // 3]) + 1, int(t[-1]), int(t[-1]) + 1):
            r.seek(target)
            got = list(r)
            want = whole[np.searchsorted(t, target, side="left") :]
            if len(want):
                np.testing.assert_array_equal(np.concatenate(got), want)
            else:
                assert got == []
        # Iterating to the end leaves nothing; seek starts again.
        assert list(r) == []
        r.seek(0)
        assert sum(len(c) for c in r) == len(whole)


def test_round_trip_many_writes_big_timestamps(tmp_path: Path, rng: np.random.Generator) -> None:
    ev = random_events(rng, 50_000, size=(346, 260), t0=(1 << 31) - 20_000, mean_dt_us=3.0)
    ev["t"][-10_000:] += 1 << 40  # a jump far beyond 2**31 and 2**32 µs
    original = ev.copy()
    path = tmp_path / "rt.aedat4"
    cuts = np.sort(rng.choice(len(ev), 60, replace=False))
    pieces = np.split(ev, cuts)
    with Aedat4Writer(path, (346, 260), camera="DAVIS346_test") as w:
        w.write(ev[:0])
        for piece in pieces:
            w.write(piece)
            w.write(np.empty(0, EVENT_DTYPE))
        assert w.events_written == len(ev)
    np.testing.assert_array_equal(ev, original)  # input untouched
    with open_events(path, chunk_events=4000) as r:
        assert r.sensor_size == (346, 260)
        assert r.camera == "DAVIS346_test"
        assert r.other_streams() == {}
        back = np.concatenate(list(r))
    assert back.dtype == EVENT_DTYPE
    assert back.tobytes() == ev.tobytes()
    assert int(back["t"][-1]) > 1 << 40


@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_round_trip_compressions_and_dv_reads_it(
    tmp_path: Path, rng: np.random.Generator, compression: str
) -> None:
    ev = random_events(rng, 20_000, size=(640, 480), t0=5)
    path = tmp_path / f"{compression}.aedat4"
    with Aedat4Writer(path, "dvxplorer", camera="cam", compression=compression) as w:
        w.write(ev)
    assert read_header(open(path, "rb"), path).compression == compression.upper()
    assert read_all(path).tobytes() == ev.tobytes()
    dv = pytest.importorskip("dv_processing")
    rec = dv.io.MonoCameraRecording(str(path))
    assert rec.getEventResolution() == (640, 480)
    assert rec.getCameraName() == "cam"
    n = 0
    while (batch := rec.getNextEventBatch()) is not None:
        n += len(batch)
    assert n == len(ev)


def test_open_writer_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.aedat4"
    with open_writer(path, (128, 128)) as w:
        w.write(np.empty(0, EVENT_DTYPE))
    with open_events(path) as r:
        assert r.sensor_size == (128, 128)
        assert list(r) == []


def test_writer_rejects_bad_events(tmp_path: Path, rng: np.random.Generator) -> None:
    ev = random_events(rng, 100, size=(128, 128), t0=1000)
    w = Aedat4Writer(tmp_path / "bad.aedat4", (128, 128))
    w.write(ev)
    late = ev.copy()
    late["t"] += 10**6
    late["x"][5] = 128
    with pytest.raises(ValueError, match="outside the 128x128"):
        w.write(late)
    assert w.regressions == 0  # a refused write counts nothing
    w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        w.write(ev)
    assert read_all(tmp_path / "bad.aedat4").tobytes() == ev.tobytes()
    neg = ev.copy()
    neg["t"] -= 10**6
    with (
        Aedat4Writer(tmp_path / "neg.aedat4", (128, 128)) as w2,
        pytest.raises(ValueError, match=">= 0"),
    ):
        w2.write(neg)
    with pytest.raises(ValueError, match="compression"):
        Aedat4Writer(tmp_path / "x.aedat4", (128, 128), compression="gzip")


def _packet_table(path: Path) -> list[tuple[int, int, int, int]]:
    """(header offset, payload size, track id, elements) of every packet, from the file's
    own data table as faery parses it: an oracle independent of our packet walk."""
    from faery.extension import aedat

    d = aedat.Decoder(str(path))
    return [
        (f.byte_offset - 8, f.size, f.track_id, f.elements_count) for f in d.file_data_definitions()
    ]


def _expected_after_cut(path: Path, cut: int) -> tuple[int, int]:
    """Events deliverable from a copy cut at ``cut`` bytes, and the damage offset."""
    with open(path, "rb") as f:
        header = read_header(f, path)
    if cut < header.data_start:
        return 0, -1
    n = 0
    for offset, size, track, count in _packet_table(path):
        if offset + 8 + size > cut:
            return n, offset
        if track == 0:
            n += count
    return n, header.data_table_position


@pytest.mark.parametrize("name", ["aestream/davis.aedat4", "written"])
def test_truncation_delivers_events_then_format_error(
    real_data: Path, tmp_path: Path, rng: np.random.Generator, name: str
) -> None:
    if name == "written":
        src = tmp_path / "src.aedat4"
        with Aedat4Writer(src, (128, 128)) as w:
            for _ in range(5):
                w.write(random_events(rng, 5000, t0=int(rng.integers(0, 10)) + 10**7 * _))
    else:
        src = real_data / name
    data = src.read_bytes()
    whole = read_all(src)
    cuts = sorted(
        {
            0,
            5,
            14,
            17,
            30,
            200,
            len(data) - 1,
            len(data) - 2,
            len(data) - 100,
            *np.linspace(300, len(data) - 2, 25).astype(int).tolist(),
        }
    )
    cut_path = tmp_path / "cut.aedat4"
    for cut in cuts:
        cut_path.write_bytes(data[:cut])
        got, err = read_until_error(cut_path)
        want_n, want_offset = _expected_after_cut(src, cut)
        assert got.tobytes() == whole[: len(got)].tobytes(), cut
        assert err is not None, cut
        assert err.path == str(cut_path)
        assert len(got) == want_n, (cut, err)
        if want_offset >= 0:
            assert err.offset == want_offset, (cut, err)
        else:
            assert err.offset <= cut
        assert "\n" not in str(err)


def test_damaged_packets(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "aestream" / "davis.aedat4"
    data = bytearray(src.read_bytes())
    whole = read_all(src)
    table = _packet_table(src)
    events_before = [sum(c for o, _, t, c in table if o < off and t == 0) for off, *_ in table]
    k = 20
    offset = table[k][0]
    bad_stream = bytearray(data)
    bad_stream[offset : offset + 4] = (99).to_bytes(4, "little")
    bad_payload = bytearray(data)
    bad_payload[offset + 8 : offset + 16] = b"\xff" * 8
    for blob, cause in ((bad_stream, "unknown stream id 99"), (bad_payload, "corrupt")):
        p = tmp_path / "bad.aedat4"
        p.write_bytes(bytes(blob))
        got, err = read_until_error(p)
        assert err is not None and err.offset == offset
        assert cause in err.cause
        assert len(got) == events_before[k]
        assert got.tobytes() == whole[: len(got)].tobytes()


def test_not_aedat4(tmp_path: Path) -> None:
    p = tmp_path / "x.aedat4"
    p.write_bytes(b"#!AER-DAT3.1\r\n")
    with pytest.raises(FormatError, match=r"not AEDAT 4\.0"):
        Aedat4Reader(p)


_KILLED_WRITER = """
import os, sys
import numpy as np
from smastream.stream.formats.aedat4 import Aedat4Writer
from smastream.stream.events import EVENT_DTYPE
ev = np.zeros(200_000, EVENT_DTYPE)
ev["t"] = np.arange(len(ev)) * 7
ev["x"] = np.arange(len(ev)) % 128
ev["y"] = (np.arange(len(ev)) // 128) % 128
ev["p"] = np.arange(len(ev)) % 2
w = Aedat4Writer(sys.argv[1], (128, 128))
for i in range(0, len(ev), 1000):
    w.write(ev[i : i + 1000])
os._exit(0)  # killed: no close()
"""


def test_killed_writer_leaves_readable_prefix(tmp_path: Path) -> None:
    path = tmp_path / "killed.aedat4"
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], check=True, timeout=120)
    got, _err = read_until_error(path)
    assert len(got) >= 190_000  # all but the encoder's last buffer
    np.testing.assert_array_equal(got["t"], np.arange(len(got)) * 7)


def test_writer_rebases_timestamps_that_go_back(tmp_path: Path, rng: np.random.Generator) -> None:
    """Every event is recorded: a step back (within or across writes) becomes a step of
    0, everything after keeps its spacing, and the steps are counted."""
    ev = random_events(rng, 100, size=(128, 128), t0=1000)
    t = ev["t"].copy()
    swapped = ev.copy()
    swapped["t"][[10, 11]] = swapped["t"][[11, 10]]
    with Aedat4Writer(tmp_path / "r.aedat4", (128, 128)) as w:
        w.write(ev)
        w.write(swapped)  # goes back across the writes and once inside
        w.write(ev[::-1].copy())
    got = read_all(tmp_path / "r.aedat4")
    sent = np.concatenate([ev, swapped, ev[::-1]])
    assert len(got) == len(sent) == w.events_written
    for f in ("x", "y", "p"):
        assert (got[f] == sent[f]).all()
    assert (np.diff(got["t"]) >= 0).all()
    steps = np.diff(sent["t"].astype(np.int64))
    assert w.regressions == int((steps < 0).sum()) >= 3
    assert w.rebased_us == int(-steps[steps < 0].sum())
    assert (np.diff(got["t"]) == np.maximum(steps, 0)).all()
    assert got["t"][: len(ev)].tobytes() == t.tobytes()  # exact while time never goes back


@pytest.mark.parametrize("target", ["/dev/full", "missing-dir/x.aedat4", "."])
def test_writer_failures_are_write_errors(tmp_path: Path, target: str) -> None:
    from smastream.stream.formats.aedat4 import WriteError

    path = target if target.startswith("/") else tmp_path / target
    ev = random_events(np.random.default_rng(0), 50_000, size=(128, 128), t0=0)
    with pytest.raises(WriteError, match=r"cannot write: .*\(os error \d+\)$"):
        w = Aedat4Writer(path, (128, 128))
        try:
            w.write(ev)
        finally:
            w.close()
