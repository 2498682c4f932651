"""AEDAT 3.1 reader/writer: round trips, tonic agreement, damage, seek, chunking."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from smastream.errors import FormatError
from smastream.stream.events import EVENT_DTYPE, Events, make_events
from smastream.stream.formats import open_events, open_writer, sniff_format
from smastream.stream.formats.aedat3 import (
    Aedat3Reader,
    Aedat3Writer,
    camera_sensor_size,
    decode_polarity,
)
from tests.conftest import random_events

# ---------------------------------------------------------------------------------------
# Helpers that build AEDAT 3.1 bytes by hand, independently of the writer under test.


def header_bytes(source: str = "DVS128") -> bytes:
    lines = [
        "#!AER-DAT3.1",
        "#Format: RAW",
        f"#Source 1: {source}",
        "#Start-Time: 2017-06-01 12:00:00 (TZ+0200)",
        "#-Source 1: some other note",
        "#!END-HEADER",
    ]
    return "".join(line + "\r\n" for line in lines).encode()


def polarity_payload(
    t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, valid: np.ndarray | None = None
) -> bytes:
    """8-byte polarity events (libcaer polarity.h), 31-bit timestamps."""
    n = len(t)
    v = np.ones(n, np.int64) if valid is None else np.asarray(valid, np.int64)
    data = (np.asarray(x, np.int64) << 17) | (np.asarray(y, np.int64) << 2)
    data |= (np.asarray(p, np.int64) << 1) | v
    rec = np.empty(n, dtype=[("data", "<u4"), ("ts", "<i4")])
    rec["data"] = data
    rec["ts"] = np.asarray(t, np.int64) & 0x7FFFFFFF
    return rec.tobytes()


def packet(
    payload: bytes,
    *,
    etype: int = 1,
    size: int = 8,
    tsoff: int = 4,
    over: int = 0,
    number: int | None = None,
    capacity: int | None = None,
    valid: int | None = None,
) -> bytes:
    num = len(payload) // size if number is None else number
    cap = num if capacity is None else capacity
    val = num if valid is None else valid
    return struct.pack("<hhiiiiii", etype, 1, size, tsoff, over, cap, num, val) + payload


def events_of(t: list[int], x: list[int], y: list[int], p: list[int]) -> Events:
    return make_events(np.array(t), np.array(x), np.array(y), np.array(p))


def read_all(path: Path, **kw: int) -> tuple[Events, Aedat3Reader]:
    with Aedat3Reader(path, **kw) as r:
        chunks = list(r)
    out = np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)
    return out, r


def write_file(path: Path, events_per_call: list[Events], size=(128, 128), **kw) -> Path:
    with Aedat3Writer(path, size, **kw) as w:
        for ev in events_per_call:
            w.write(ev)
    return path


# ---------------------------------------------------------------------------------------
# Round trips


def test_round_trip_with_overflow_and_empty_writes(tmp_path: Path, rng) -> None:
    a = random_events(rng, 5000, t0=(1 << 31) - 20_000)  # crosses 2^31
    b = random_events(rng, 3000, t0=int(a["t"][-1]) + (1 << 32))  # crosses several 2^31
    c = random_events(rng, 1, t0=int(b["t"][-1]) + 1)
    empty = np.empty(0, EVENT_DTYPE)
    path = write_file(tmp_path / "rt.aedat", [empty, a, empty, b, c, empty], max_packet_events=700)
    assert sniff_format(path) == "aedat3.1"
    out, r = read_all(path)
    expected = np.concatenate([a, b, c])
    assert out.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(out, expected)
    assert int(out["t"].max()) > 3 * (1 << 31)
    assert r.camera == "DVS128" and r.sensor_size == (128, 128)
    assert r.skipped == {} and r.non_monotonic == 0 and r.capacity_mismatches == 0


def test_empty_file_round_trip(tmp_path: Path) -> None:
    path = write_file(tmp_path / "empty.aedat", [])
    out, r = read_all(path)
    assert len(out) == 0 and r.skipped == {}


@pytest.mark.parametrize(
    ("size", "name"),
    [((346, 260), "DAVIS346"), ((640, 480), "Generic 640x480"), ((240, 180), "DAVIS240")],
)
def test_sensor_size_round_trips_through_source_line(tmp_path: Path, rng, size, name) -> None:
    ev = random_events(rng, 1000, size=size)
    path = write_file(tmp_path / "s.aedat", [ev], size=size)
    out, r = read_all(path)
    assert r.camera == name and r.sensor_size == size
    np.testing.assert_array_equal(out, ev)


def test_camera_names() -> None:
    assert camera_sensor_size("DVS128") == (128, 128)
    assert camera_sensor_size("DAVIS346B") == (346, 260)
    assert camera_sensor_size("DAVIS240C") == (240, 180)
    assert camera_sensor_size("DVXplorer") == (640, 480)
    assert camera_sensor_size("DVXplorer Lite") == (320, 240)
    assert camera_sensor_size("Generic 300x200") == (300, 200)
    assert camera_sensor_size("Mystery cam") is None


def test_real_recording_round_trips(tmp_path: Path, real_data: Path) -> None:
    """Real DVXplorer events (Unix-µs timestamps, so eventTSOverflow is ~750,000)."""
    dv = pytest.importorskip("dv_processing")
    rec = dv.io.MonoCameraRecording(str(real_data / "tonic" / "sample.aedat4"))
    parts = []
    while rec.isRunning():
        batch = rec.getNextEventBatch()
        if batch is None:
            break
        parts.append(batch.numpy())
    raw = np.concatenate(parts)
    ev = make_events(raw["timestamp"], raw["x"], raw["y"], raw["polarity"])
    size = tuple(int(v) for v in rec.getEventResolution())
    assert len(ev) == 111_954
    path = write_file(tmp_path / "real.aedat", [ev[:50_000], ev[50_000:]], size=size)
    out, r = read_all(path, chunk_events=10_000)
    np.testing.assert_array_equal(out, ev)
    assert r.sensor_size == size
    assert r.non_monotonic == int(np.count_nonzero(np.diff(ev["t"]) < 0))


# ---------------------------------------------------------------------------------------
# Agreement with tonic's low-level reader, and what it gets wrong


def tonic_read(path: Path) -> np.ndarray:
    tio = pytest.importorskip("tonic.io")
    version, start, _ = tio.read_aedat_header_from_file(str(path))
    assert version == pytest.approx(3.1)
    return tio.get_aer_events_from_file(str(path), version, start)


def test_agrees_with_tonic_event_for_event(tmp_path: Path, rng) -> None:
    ev = random_events(rng, 20_000, t0=1000)
    path = write_file(tmp_path / "t.aedat", [ev[:1234], ev[1234:]], max_packet_events=999)
    raw = tonic_read(path)
    addr = raw["address"].astype(np.int64)
    theirs = make_events(
        raw["timeStamp"], (addr >> 17) & 0x1FFF, (addr >> 2) & 0x1FFF, (addr >> 1) & 1
    )
    ours, _ = read_all(path)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, ev)


def test_overflow_and_special_packets_where_tonic_is_wrong(tmp_path: Path) -> None:
    t = np.array([(1 << 31) - 2, (1 << 31) + 5, (1 << 31) + 9])
    x, y, p = np.array([1, 2, 3]), np.array([4, 5, 6]), np.array([1, 0, 1])
    special = struct.pack("<Ii", 0x12345678, 17) * 2  # two 8-byte special events
    data = header_bytes()
    data += packet(polarity_payload(t[:1], x[:1], y[:1], p[:1]), over=0)
    data += packet(special, etype=0)
    data += packet(polarity_payload(t[1:], x[1:], y[1:], p[1:]), over=1)
    path = tmp_path / "ov.aedat"
    path.write_bytes(data)

    ours, r = read_all(path)
    np.testing.assert_array_equal(ours, make_events(t, x, y, p))
    assert r.skipped == {"packets of type 0 (special)": 1}
    with Aedat3Reader(path) as r2:
        assert r2.other_streams() == {"special": 1}

    theirs = tonic_read(path)
    assert len(theirs) == 5  # counts the 2 special events as polarity events
    tonic_pol = theirs[[0, 3, 4]]["timeStamp"].astype(np.int64)
    assert (tonic_pol != t)[1:].all()  # ignores eventTSOverflow
    np.testing.assert_array_equal(tonic_pol, t & 0x7FFFFFFF)


def test_capacity_layout_where_tonic_reads_padding(tmp_path: Path) -> None:
    t, x, y, p = np.arange(4) + 10, np.arange(4), np.arange(4) + 1, np.array([0, 1, 0, 1])
    slots = polarity_payload(t, x, y, p) + bytes(8 * 6)  # capacity 10, 4 events present
    data = header_bytes() + packet(slots, number=4, capacity=10)
    path = tmp_path / "cap.aedat"
    path.write_bytes(data)
    ours, r = read_all(path)
    np.testing.assert_array_equal(ours, make_events(t, x, y, p))
    assert r.capacity_mismatches == 1
    assert r.skipped == {"unused slots after eventNumber (eventCapacity layout)": 6}
    assert len(tonic_read(path)) == 10  # tonic reads the empty slots as events


# ---------------------------------------------------------------------------------------
# Irregular content: counted, never silent


def test_invalid_events_and_special_packets_are_counted(tmp_path: Path) -> None:
    t = np.arange(6) * 10
    x, y, p = np.arange(6), np.arange(6) * 2, np.array([1, 0, 1, 0, 1, 0])
    valid = np.array([1, 0, 1, 1, 0, 1])
    data = header_bytes()
    data += packet(b"", etype=0)  # empty special packet
    data += packet(polarity_payload(t[:3], x[:3], y[:3], p[:3], valid[:3]), valid=2)
    data += packet(bytes(40), etype=2, size=40, tsoff=36)  # a "frame" packet
    data += packet(b"")  # empty polarity packet
    data += packet(polarity_payload(t[3:], x[3:], y[3:], p[3:], valid[3:]), valid=2)
    data += packet(bytes(16), etype=77, size=16, tsoff=0)  # unknown type
    path = tmp_path / "irr.aedat"
    path.write_bytes(data)
    out, r = read_all(path)
    keep = valid == 1
    np.testing.assert_array_equal(out, make_events(t[keep], x[keep], y[keep], p[keep]))
    assert r.skipped == {
        "packets of type 0 (special)": 1,
        "packets of type 2 (frame)": 1,
        "packets of type 77 (unknown)": 1,
        "invalid events (valid bit 0)": 2,
    }
    with Aedat3Reader(path) as r2:
        assert r2.other_streams() == {"special": 1, "frame": 1, "type 77": 1}


def test_events_outside_sensor_are_dropped_and_counted(tmp_path: Path) -> None:
    t, x, y, p = np.arange(4), np.array([0, 200, 127, 5]), np.array([0, 0, 128, 127]), np.ones(4)
    data = header_bytes("DVS128") + packet(polarity_payload(t, x, y, p))
    (tmp_path / "a.aedat").write_bytes(data)
    out, r = read_all(tmp_path / "a.aedat")
    np.testing.assert_array_equal(out, make_events(t[[0, 3]], x[[0, 3]], y[[0, 3]], p[[0, 3]]))
    assert r.skipped == {"events outside the 128x128 sensor": 2}
    # an unknown camera has no size: nothing is dropped
    (tmp_path / "b.aedat").write_bytes(
        header_bytes("Mystery") + packet(polarity_payload(t, x, y, p))
    )
    out, r = read_all(tmp_path / "b.aedat")
    assert len(out) == 4 and r.sensor_size is None and r.camera == "Mystery"


def test_number_layout_with_smaller_event_number(tmp_path: Path) -> None:
    """libcaer layout: eventNumber events stored although eventCapacity is larger."""
    t = np.arange(7) * 3
    x, y, p = np.arange(7), np.arange(7), np.zeros(7)
    data = header_bytes()
    data += packet(polarity_payload(t[:4], x[:4], y[:4], p[:4]), number=4, capacity=4096)
    data += packet(polarity_payload(t[4:], x[4:], y[4:], p[4:]), number=3, capacity=9)  # last
    (tmp_path / "n.aedat").write_bytes(data)
    out, r = read_all(tmp_path / "n.aedat")
    np.testing.assert_array_equal(out, make_events(t, x, y, p))
    assert r.capacity_mismatches == 2 and r.skipped == {}


def test_non_monotonic_timestamps_are_kept_and_counted(tmp_path: Path, rng) -> None:
    a = random_events(rng, 100, t0=1000)
    b = random_events(rng, 100, t0=500)  # goes back across calls
    a["t"][50] = 0  # back once inside a (and forward again right after)
    path = tmp_path / "nm.aedat"
    with Aedat3Writer(path, (128, 128)) as w:
        w.write(a)
        w.write(b)
    assert w.non_monotonic == 2
    out, r = read_all(path, chunk_events=7)
    np.testing.assert_array_equal(out, np.concatenate([a, b]))
    assert r.non_monotonic == 2


# ---------------------------------------------------------------------------------------
# Damage: every event before it, then FormatError at the right offset


def test_truncation_at_every_offset(tmp_path: Path) -> None:
    t = np.arange(12) * 100 + (1 << 31) - 500
    x, y, p = np.arange(12), np.arange(12) + 3, np.arange(12) % 2
    head = header_bytes()
    parts = [  # (bytes, polarity events in it)
        (packet(polarity_payload(t[:5], x[:5], y[:5], p[:5]), over=0), slice(0, 5)),
        (packet(struct.pack("<Ii", 7, 8) * 2, etype=0), slice(0, 0)),
        (packet(polarity_payload(t[5:8], x[5:8], y[5:8], p[5:8]), over=1), slice(5, 8)),
        (packet(polarity_payload(t[8:], x[8:], y[8:], p[8:]), over=1), slice(8, 12)),
    ]
    data = head + b"".join(b for b, _ in parts)
    truth = make_events(t, x, y, p)
    starts = np.cumsum([len(head)] + [len(b) for b, _ in parts])
    path = tmp_path / "cut.aedat"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        if cut < len(head):
            with pytest.raises(FormatError) as info:
                Aedat3Reader(path)
            assert info.value.offset == data.rfind(b"\n", 0, cut) + 1, cut
            continue
        got: list[Events] = []
        k = int(np.searchsorted(starts, cut, side="right")) - 1  # packet the cut falls in
        with Aedat3Reader(path, chunk_events=3) as r:
            if cut in starts:  # a clean packet boundary: no damage
                got = list(r)
                before = _events_before(parts, starts.tolist().index(cut))
                np.testing.assert_array_equal(np.concatenate(got or [truth[:0]]), truth[:before])
                continue
            with pytest.raises(FormatError) as info:
                for chunk in r:
                    got.append(chunk)
        assert info.value.offset == starts[k], cut
        assert str(path) in str(info.value)
        done = _events_before(parts, k)
        sl = parts[k][1]
        complete = max(0, (cut - int(starts[k]) - 28) // 8) if sl.stop > sl.start else 0
        expected = truth[: done + min(complete, sl.stop - sl.start)]
        np.testing.assert_array_equal(
            np.concatenate(got or [truth[:0]]), expected, err_msg=str(cut)
        )


def _events_before(parts: list[tuple[bytes, slice]], k: int) -> int:
    return sum(s.stop - s.start for _, s in parts[:k])


def test_garbage_after_header(tmp_path: Path) -> None:
    garbage = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path = tmp_path / "g.aedat"
    path.write_bytes(header_bytes() + garbage)
    with Aedat3Reader(path) as r, pytest.raises(FormatError) as info:
        list(r)
    assert info.value.offset == len(header_bytes())
    assert "garbage" in info.value.cause or "eventSize" in info.value.cause


def test_garbage_after_good_packets(tmp_path: Path, rng) -> None:
    ev = random_events(rng, 300)
    path = write_file(tmp_path / "g2.aedat", [ev], max_packet_events=100)
    good = path.stat().st_size
    with open(path, "ab") as f:
        f.write(struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, -5, -5, 0) + bytes(64))
    got: list[Events] = []
    with Aedat3Reader(path, chunk_events=64) as r, pytest.raises(FormatError) as info:
        for chunk in r:
            got.append(chunk)
    np.testing.assert_array_equal(np.concatenate(got), ev)
    assert info.value.offset == good and "negative" in info.value.cause
    with pytest.raises(FormatError):  # iterating again re-raises at the damage
        list(r)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ((1, 1, 16, 4, 0, 2, 2, 2), "eventSize 16"),
        ((1, 1, 8, 0, 0, 2, 2, 2), "eventTSOffset 0"),
        ((1, 1, -8, 4, 0, 2, 2, 2), "eventSize -8"),
        ((-3, 1, 8, 4, 0, 2, 2, 2), "eventType -3"),
        ((1, 1, 8, 4, -1, 2, 2, 2), "eventTSOverflow -1"),
        ((1, 1, 8, 4, 0, 2, 5, 2), "eventNumber 5 > eventCapacity 2"),
        ((1, 1, 8, 4, 0, 2, 2, 3), "eventValid 3 > eventNumber 2"),
        ((0, 1, 1 << 24, 4, 0, 2, 2, 2), "eventSize 16777216"),
        ((1, 1, 8, 4, 0, 1 << 28, 1 << 28, 0), "truncated packet"),
    ],
)
def test_bad_packet_headers(tmp_path: Path, fields, words) -> None:
    good = packet(polarity_payload(np.array([5]), np.array([1]), np.array([2]), np.array([1])))
    path = tmp_path / "bad.aedat"
    path.write_bytes(header_bytes() + good + struct.pack("<hhiiiiii", *fields) + bytes(16))
    got: list[Events] = []
    with Aedat3Reader(path) as r, pytest.raises(FormatError) as info:
        for chunk in r:
            got.append(chunk)
    assert sum(len(c) for c in got) == 1
    assert info.value.offset == len(header_bytes()) + len(good)
    assert words in info.value.cause


@pytest.mark.parametrize(
    "content",
    [b"", b"#!AER-DAT2.0\r\n", b"#!AER-DAT3.1\r\n#Format: RAW\r\nbad line\r\n#!END-HEADER\r\n"],
)
def test_bad_headers(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "h.aedat"
    path.write_bytes(content)
    with pytest.raises(FormatError) as info:
        Aedat3Reader(path)
    assert info.value.offset == (28 if b"bad line" in content else 0)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot open"):
        Aedat3Reader(tmp_path / "nope.aedat")


# ---------------------------------------------------------------------------------------
# Streaming: chunking, block boundaries, resume, seek


@pytest.fixture
def recording(tmp_path: Path, rng) -> tuple[Path, Events]:
    a = random_events(rng, 6000, t0=(1 << 31) - 30_000, mean_dt_us=10)
    b = random_events(rng, 4000, t0=int(a["t"][-1]) + 1, mean_dt_us=10)
    path = write_file(tmp_path / "rec.aedat", [a, b], max_packet_events=512)
    return path, np.concatenate([a, b])


@pytest.mark.parametrize("chunk", [1, 3, 511, 512, 1000, 1 << 20])
@pytest.mark.parametrize("block", [28, 1000, 1 << 23])
def test_chunking_is_lossless_and_bounded(recording, chunk: int, block: int) -> None:
    if chunk == 1 and block == 28:
        pytest.skip("slow combination, covered by the others")
    path, ev = recording
    with Aedat3Reader(path, chunk_events=chunk, block_bytes=block) as r:
        chunks = list(r)
    assert max(len(c) for c in chunks) <= chunk
    assert all(len(c) for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), ev)


def test_huge_packet_is_streamed_in_bounded_pieces(tmp_path: Path, rng) -> None:
    ev = random_events(rng, 50_000)
    path = write_file(tmp_path / "big.aedat", [ev], max_packet_events=1 << 20)  # one packet
    with Aedat3Reader(path, chunk_events=1000, block_bytes=4096) as r:
        lengths = []
        parts = []
        for chunk in r:
            lengths.append(len(chunk))
            parts.append(chunk)
    assert max(lengths) == 1000 and len(lengths) == 50
    np.testing.assert_array_equal(np.concatenate(parts), ev)


def test_resume_after_break(recording) -> None:
    path, ev = recording
    with Aedat3Reader(path, chunk_events=700) as r:
        first = next(iter(r))
        rest = list(r)
        assert r.capacity_mismatches == 0
    np.testing.assert_array_equal(np.concatenate([first, *rest]), ev)


@pytest.mark.parametrize("chunk", [5, 1 << 18])
def test_seek(recording, chunk: int) -> None:
    path, ev = recording
    t = ev["t"]
    targets = [0, int(t[0]), int(t[1]) + 0, int(t[4321]), 1 << 31, int(t[-1]), int(t[-1]) + 1]
    with Aedat3Reader(path, chunk_events=chunk) as r:
        for target in targets:
            r.seek(target)
            got = list(r)
            out = np.concatenate(got) if got else ev[:0]
            np.testing.assert_array_equal(out, ev[t >= target], err_msg=str(target))
            if len(out):
                assert out["t"][0] >= target


def test_seek_stops_at_damage(tmp_path: Path, rng) -> None:
    ev = random_events(rng, 100)
    path = write_file(tmp_path / "sd.aedat", [ev], max_packet_events=10)
    data = bytearray(path.read_bytes())
    start = data.index(b"#!END-HEADER\r\n") + 14
    bad_at = start + 5 * (28 + 80)
    data[bad_at : bad_at + 4] = struct.pack("<hh", -1, 1)
    path.write_bytes(bytes(data))
    with Aedat3Reader(path) as r:
        r.seek(int(ev["t"][-1]))
        with pytest.raises(FormatError) as info:
            list(r)
    assert info.value.offset == bad_at


# ---------------------------------------------------------------------------------------
# Sniffing, writer checks, the pure decoder


def test_open_events_and_open_writer(tmp_path: Path, rng) -> None:
    ev = random_events(rng, 100, size=(346, 260))
    path = tmp_path / "x.bin"  # the extension does not matter
    with open_writer(path, (346, 260), format="aedat3.1") as w:
        w.write(ev)
    with open_events(path) as r:
        assert isinstance(r, Aedat3Reader) and r.format == "aedat3.1"
        np.testing.assert_array_equal(np.concatenate(list(r)), ev)


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    w = Aedat3Writer(tmp_path / "w.aedat", (128, 128))
    with pytest.raises(ValueError, match="outside the 128x128"):
        w.write(events_of([1], [128], [0], [1]))
    with pytest.raises(ValueError, match="negative"):
        w.write(events_of([-1], [0], [0], [1]))
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write(events_of([1], [0], [0], [1]))
    with pytest.raises(ValueError, match=r"1\.\.32768"):
        Aedat3Writer(tmp_path / "w2.aedat", (40000, 10))
    with pytest.raises(ValueError, match="positive"):
        Aedat3Reader(tmp_path / "w.aedat", chunk_events=0)


def test_decode_polarity_does_not_touch_input() -> None:
    words = np.array([[(5 << 17) | (6 << 2) | 2 | 1, 99], [(1 << 17) | 0, 3]], dtype="<u4")
    before = words.copy()
    ev, n_invalid, n_outside, n_neg = decode_polarity(words, 2, (128, 128))
    np.testing.assert_array_equal(words, before)
    assert (n_invalid, n_outside, n_neg) == (1, 0, 0)
    assert ev.tolist() == [((2 << 31) | 99, 5, 6, 1)]


@pytest.mark.parametrize("target", ["/dev/full", "missing-dir/x.aedat", "."])
def test_writer_failures_are_write_errors(tmp_path: Path, target: str) -> None:
    from smastream.stream.formats.base import WriteError

    path = target if target.startswith("/") else tmp_path / target
    ev = random_events(np.random.default_rng(0), 100_000, size=(128, 128), t0=0)
    with pytest.raises(WriteError, match=r"cannot write: [A-Z][a-z ]+$"):
        w = open_writer(path, (128, 128), format="aedat3.1")
        try:
            w.write(ev)
        finally:
            w.close()
