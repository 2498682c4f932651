"""AEDAT 2.0 (jAER) reader: address layouts, wraps, damage, seek, chunking, tonic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smastream.errors import FormatError
from smastream.stream.events import EVENT_DTYPE, Events, make_events
from smastream.stream.formats import open_events, sniff_format
from smastream.stream.formats.aedat2 import (
    Aedat2Reader,
    decode_addresses,
    infer_chip,
    unwrap_timestamps,
)
from tests.conftest import random_events

SIZES = {"dvs128": (128, 128), "davis240": (240, 180), "davis346": (346, 260)}
AECHIP = {
    "dvs128": "ch.unizh.ini.jaer.chip.retina.DVS128",
    "davis240": "eu.seebetter.ini.chips.davis.DAVIS240C",
    "davis346": "eu.seebetter.ini.chips.davis.Davis346B",
}

# ---------------------------------------------------------------------------------------
# A tiny AEDAT 2.0 writer for the tests (jAER layouts; the DAVIS one follows v2e's writer).


def encode(ev: Events, chip: str) -> np.ndarray:
    """Raw jAER addresses for upper-left-origin events."""
    w, h = SIZES[chip]
    x = (w - 1) - ev["x"].astype(np.int64)
    y = (h - 1) - ev["y"].astype(np.int64)
    p = ev["p"].astype(np.int64)
    if chip == "dvs128":  # DVS128.Extractor: x bits 1-7, y bits 8-14, raw polarity 0 = ON
        return (y << 8) | (x << 1) | (1 - p)
    return (y << 22) | (x << 12) | (p << 11)  # v2e AEDat2Output for DAVIS


def aedat2_bytes(addr, ts, header: list[str] | None = None, end_marker: bool = False) -> bytes:
    lines = ["#!AER-DAT2.0", "# This is a raw AE data file - do not edit"]
    lines += header or []
    if end_marker:
        lines.append("#End Of ASCII Header")
    rec = np.empty(len(addr), dtype=[("a", ">u4"), ("t", ">u4")])
    rec["a"] = np.asarray(addr, np.int64) & 0xFFFFFFFF
    rec["t"] = np.asarray(ts, np.int64) & 0xFFFFFFFF
    return "".join(line + "\r\n" for line in lines).encode() + rec.tobytes()


def safe_events(rng, n: int, chip: str, t0: int = 0) -> Events:
    """Random events whose first record cannot start with a '#' byte."""
    ev = random_events(rng, n, size=SIZES[chip], t0=t0)
    ev["y"][0] = SIZES[chip][1] - 1  # raw y 0 -> first byte 0x00
    return ev


def write(path: Path, ev: Events, chip: str, hint: bool = True, **kw) -> Path:
    header = [f"# AEChip: {AECHIP[chip]}"] if hint else []
    path.write_bytes(aedat2_bytes(encode(ev, chip), ev["t"], header, **kw))
    return path


def read_all(path: Path, **kw) -> tuple[Events, Aedat2Reader]:
    with Aedat2Reader(path, **kw) as r:
        chunks = list(r)
    return (np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)), r


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chip", ["dvs128", "davis240", "davis346"])
def test_round_trip_with_chip_in_header(tmp_path: Path, rng, chip: str) -> None:
    ev = safe_events(rng, 5000, chip)
    path = write(tmp_path / "a.aedat", ev, chip)
    assert sniff_format(path) == "aedat2"
    out, r = read_all(path)
    np.testing.assert_array_equal(out, ev)
    assert (r.chip, r.chip_source, r.sensor_size) == (chip, "header", SIZES[chip])
    assert r.camera == AECHIP[chip].rsplit(".", 1)[-1]
    assert r.skipped == {} and r.wraps == 0 and r.non_monotonic == 0


@pytest.mark.parametrize("chip", ["dvs128", "davis240", "davis346"])
def test_chip_inferred_from_addresses(tmp_path: Path, rng, chip: str) -> None:
    ev = safe_events(rng, 3000, chip)
    out, r = read_all(write(tmp_path / "b.aedat", ev, chip, hint=False))
    assert (r.chip, r.chip_source) == (chip, "inferred from addresses")
    np.testing.assert_array_equal(out, ev)


def test_chip_argument_overrides(tmp_path: Path, rng) -> None:
    ev = safe_events(rng, 100, "davis346")
    ev["x"] = np.maximum(ev["x"], 346 - 240)  # raw x = 345 - x stays below 240
    ev["y"] = np.maximum(ev["y"], 260 - 180)
    path = write(tmp_path / "c.aedat", ev, "davis346", hint=False)
    _, r = read_all(path)
    assert r.chip == "davis240"  # a plausible but wrong guess...
    out, r = read_all(path, chip="davis346")  # ...that the argument fixes
    assert r.chip_source == "argument"
    np.testing.assert_array_equal(out, ev)
    with pytest.raises(ValueError, match="davis240"):
        Aedat2Reader(path, chip="davis999")


def test_layouts_pinned_to_jaer_examples(tmp_path: Path) -> None:
    # jAER's Matlab getraw: raw = y*256 + (127-x)*2 + pol, jAER coordinates (origin lower
    # left), raw polarity 0 = ON (DVS128.Extractor fliptype).
    dvs = [20 * 256 + (127 - 10) * 2 + 0, 0 * 256 + (127 - 0) * 2 + 1]
    # DavisChip: y bits 22-30, x bits 12-21 (mirrored), polarity bit 11.
    davis = [(259 - 7) << 22 | (345 - 300) << 12 | 1 << 11]
    (tmp_path / "d.aedat").write_bytes(aedat2_bytes(dvs, [5, 6], ["# AEChip: DVS128"]))
    out, _ = read_all(tmp_path / "d.aedat")
    assert out.tolist() == [(5, 10, 127 - 20, 1), (6, 0, 127, 0)]
    (tmp_path / "e.aedat").write_bytes(aedat2_bytes(davis, [9], ["# AEChip: Davis346B"]))
    out, _ = read_all(tmp_path / "e.aedat")
    assert out.tolist() == [(9, 300, 7, 1)]


def test_non_dvs_records_are_skipped_and_counted(tmp_path: Path, rng) -> None:
    ev = safe_events(rng, 10, "davis346")
    addr = encode(ev, "davis346")
    extra_addr = [
        0x80000000 | (5 << 12),  # APS sample
        0x80000C00,  # IMU sample
        0x80000C00 | 7,  # IMU sample
        0x00000400 | (3 << 12),  # external input event
        (400 << 12),  # x 400 on a 346-wide array
    ]
    all_addr = np.concatenate([addr[:5], extra_addr, addr[5:]])
    ts = np.arange(len(all_addr)) * 10
    t_ev = np.concatenate([ts[:5], ts[10:]])
    (tmp_path / "f.aedat").write_bytes(aedat2_bytes(all_addr, ts, ["# AEChip: DAVIS346"]))
    out, r = read_all(tmp_path / "f.aedat")
    expected = ev.copy()
    expected["t"] = t_ev
    np.testing.assert_array_equal(out, expected)
    assert r.skipped == {
        "APS samples": 1,
        "IMU samples": 2,
        "external input events (bit 10)": 1,
        "events outside the 346x260 sensor": 1,
    }
    # DVS128: sync (bit 15) and bit-31 specials, and addresses it cannot hold
    dvs = np.array([0x8000, 0x80000000, 1 << 20, 2 * 256 + 3 * 2])
    (tmp_path / "g.aedat").write_bytes(aedat2_bytes(dvs, [1, 2, 3, 4], ["# AEChip: DVS128"]))
    out, r = read_all(tmp_path / "g.aedat")
    assert out.tolist() == [(4, 124, 125, 1)]
    assert r.skipped == {
        "special/sync events (bit 15 or 31)": 2,
        "addresses outside the DVS128 layout (bits 16-30)": 1,
    }


def test_timestamp_wraps_and_backward_steps(tmp_path: Path, rng) -> None:
    raw_t = np.array(
        [(1 << 32) - 30, (1 << 32) - 10, 5, 20, 15, (1 << 31) - 4, 2, 3],  # 32-bit wrap,
        dtype=np.int64,  # a small step back (kept), a 31-bit wrap
    )
    truth = np.array(
        [
            *((1 << 32) - 30, (1 << 32) - 10, (1 << 32) + 5, (1 << 32) + 20, (1 << 32) + 15),
            *((3 << 31) - 4, (3 << 31) + 2, (3 << 31) + 3),
        ]
    )
    ev = safe_events(rng, len(raw_t), "dvs128")
    path = tmp_path / "w.aedat"
    path.write_bytes(aedat2_bytes(encode(ev, "dvs128"), raw_t, ["# AEChip: DVS128"]))
    for chunk in (1, 3, 100):
        out, r = read_all(path, chunk_events=chunk)
        np.testing.assert_array_equal(out["t"], truth)
        assert (r.wraps, r.non_monotonic) == (2, 1)


def test_unwrap_is_pure_and_carries() -> None:
    raw = np.array([10, 4_000_000_000, 7, 8], dtype=np.uint32)
    before = raw.copy()
    t, off, prev, wraps = unwrap_timestamps(raw[:2])
    t2, off2, prev2, wraps2 = unwrap_timestamps(raw[2:], off, prev)
    np.testing.assert_array_equal(raw, before)
    assert t.tolist() == [10, 4_000_000_000] and (wraps, wraps2) == (0, 1)
    assert t2.tolist() == [(1 << 32) + 7, (1 << 32) + 8] and off2 == 1 << 32 and prev2 == 8


def test_end_of_header_marker_allows_hash_first_byte(tmp_path: Path) -> None:
    addr = [(0x23 << 24) | (100 << 12), 0]  # first data byte is '#'
    path = tmp_path / "h.aedat"
    path.write_bytes(aedat2_bytes(addr, [1, 2], ["# AEChip: DAVIS346"], end_marker=True))
    out, r = read_all(path)
    assert len(out) == 2 and r.header[-1] == "#End Of ASCII Header"
    assert out["t"].tolist() == [1, 2]


def test_truncation_at_every_offset(tmp_path: Path, rng) -> None:
    ev = safe_events(rng, 6, "dvs128")
    data = aedat2_bytes(encode(ev, "dvs128"), ev["t"], ["# AEChip: DVS128"])
    start = len(data) - 8 * len(ev)
    path = tmp_path / "t.aedat"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        if cut < start and (cut == 0 or data[cut - 1 : cut] != b"\n"):
            with pytest.raises(FormatError) as info:
                Aedat2Reader(path)
            assert info.value.offset == data.rfind(b"\n", 0, cut) + 1, cut
            continue
        got: list[Events] = []
        complete, partial = divmod(max(cut - start, 0), 8)  # a header-only file is valid
        with Aedat2Reader(path, chunk_events=4) as r:
            if partial:
                with pytest.raises(FormatError) as info:
                    for chunk in r:
                        got.append(chunk)
                assert info.value.offset == start + 8 * complete
                assert "truncated record" in info.value.cause
            else:
                got = list(r)
        out = np.concatenate(got) if got else ev[:0]
        np.testing.assert_array_equal(out, ev[:complete], err_msg=str(cut))


def test_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "x.aedat"
    path.write_bytes(b"#!AER-DAT3.1\r\n")
    with pytest.raises(FormatError, match=r"not an AEDAT 2\.0"):
        Aedat2Reader(path)
    with pytest.raises(FormatError, match="cannot open"):
        Aedat2Reader(tmp_path / "missing.aedat")
    path.write_bytes(aedat2_bytes([], []))  # header only: nothing to read, no chip
    out, r = read_all(path)
    assert len(out) == 0 and r.chip is None and r.sensor_size is None


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
def test_chunking_is_lossless_and_bounded(tmp_path: Path, rng, chunk: int) -> None:
    ev = safe_events(rng, 3000, "davis346")
    path = write(tmp_path / "k.aedat", ev, "davis346")
    with Aedat2Reader(path, chunk_events=chunk) as r:
        chunks = list(r)
    assert max(len(c) for c in chunks) <= chunk
    np.testing.assert_array_equal(np.concatenate(chunks), ev)


def test_seek_across_wraps(tmp_path: Path, rng) -> None:
    ev = safe_events(rng, 4000, "dvs128", t0=(1 << 32) - 20_000)  # raw times wrap at 2^32
    path = write(tmp_path / "s.aedat", ev, "dvs128")
    t = ev["t"]
    with Aedat2Reader(path, chunk_events=333) as r:
        for target in [0, int(t[10]), 1 << 32, int(t[3999]), int(t[-1]) + 1, int(t[5])]:
            r.seek(target)
            got = list(r)
            out = np.concatenate(got) if got else ev[:0]
            np.testing.assert_array_equal(out, ev[t >= target], err_msg=str(target))


def test_resume_after_break(tmp_path: Path, rng) -> None:
    ev = safe_events(rng, 1000, "davis240")
    with Aedat2Reader(write(tmp_path / "r.aedat", ev, "davis240"), chunk_events=300) as r:
        first = next(iter(r))
        rest = list(r)
    np.testing.assert_array_equal(np.concatenate([first, *rest]), ev)


def test_agrees_with_tonic_framing(tmp_path: Path, rng) -> None:
    tio = pytest.importorskip("tonic.io")
    ev = safe_events(rng, 2000, "davis346")
    path = write(tmp_path / "tonic.aedat", ev, "davis346")
    version, start, _ = tio.read_aedat_header_from_file(str(path))
    raw = tio.get_aer_events_from_file(str(path), version, start)
    assert version == pytest.approx(2.0)
    theirs, _ = decode_addresses(
        raw["address"].astype(np.uint32), raw["timeStamp"].astype(np.int64), "davis346"
    )
    out, _ = read_all(path)
    np.testing.assert_array_equal(out, theirs)
    np.testing.assert_array_equal(out, ev)


def test_open_events_and_pure_helpers(tmp_path: Path, rng) -> None:
    ev = safe_events(rng, 50, "dvs128")
    with open_events(write(tmp_path / "o.dat", ev, "dvs128")) as r:
        assert isinstance(r, Aedat2Reader) and r.format == "aedat2"
        np.testing.assert_array_equal(np.concatenate(list(r)), ev)
    assert infer_chip(np.array([], np.uint32)) is None
    with pytest.raises(ValueError, match="dvs128"):
        decode_addresses(np.zeros(1, np.uint32), np.zeros(1, np.int64), "dvs64")
    ev2 = make_events([1], [3], [4], [1])
    np.testing.assert_array_equal(
        decode_addresses(encode(ev2, "davis240").astype(np.uint32), ev2["t"], "davis240")[0], ev2
    )
