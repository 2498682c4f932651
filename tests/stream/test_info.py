"""`describe` and `smastream info`: statistics, labels, JSON, and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from smastream.cli import main
from smastream.errors import FormatError
from smastream.stream.events import EVENT_DTYPE
from smastream.stream.formats import open_events
from smastream.stream.formats.aedat4 import Aedat4Writer
from smastream.stream.info import PEAK_BIN_US, EventStats, bin_counts, describe
from tests.conftest import random_events


def test_bin_counts_runs() -> None:
    t = np.array([0, 5, 9_999, 10_000, 35_000, 35_001, 4, 4], dtype=np.int64)
    bins, counts = bin_counts(t, 10_000)
    assert bins.tolist() == [0, 1, 3, 0]
    assert counts.tolist() == [3, 1, 2, 2]
    assert bin_counts(t[:0], 10_000)[1].size == 0
    with pytest.raises(ValueError, match="positive"):
        bin_counts(t, 0)


@pytest.mark.parametrize("chunk", [1, 7, 1000, 10**6])
def test_stats_do_not_depend_on_chunking(rng: np.random.Generator, chunk: int) -> None:
    ev = random_events(rng, 3000, size=(64, 48), t0=123_456, mean_dt_us=40.0)
    ev["t"][1000:1500] = ev["t"][1000]  # a burst: one bin holds many events
    ev["t"][1500:] += ev["t"][1000] - ev["t"][1500] + 1
    stats = EventStats(size=(64, 48))
    for i in range(0, len(ev), chunk):
        stats.update(ev[i : i + chunk])
    _, direct = np.unique(ev["t"] // PEAK_BIN_US, return_counts=True)
    assert stats.peak_count == int(direct.max())
    assert stats.peak_rate_eps == direct.max() * 1e6 / PEAK_BIN_US
    assert stats.n_events == 3000 and stats.n_on == int(ev["p"].sum())
    assert (stats.t_min, stats.t_max) == (int(ev["t"].min()), int(ev["t"].max()))
    assert stats.unsorted == 0 and stats.out_of_range == 0


def test_stats_count_problems_across_chunks() -> None:
    ev = np.zeros(6, EVENT_DTYPE)
    ev["t"] = [10, 20, 30, 5, 40, 50]
    ev["x"] = [0, 1, 99, 2, 3, 4]
    stats = EventStats(size=(10, 10))
    stats.update(ev[:3])
    stats.update(ev[3:])  # goes back across the chunk boundary
    assert stats.unsorted == 1
    assert stats.out_of_range == 1
    stats.update(ev[3:4])  # 5 after 50
    assert stats.unsorted == 2


def test_describe_real_file(real_data: Path) -> None:
    path = real_data / "aestream" / "davis.aedat4"
    s = describe(path)
    assert (s.format, s.sensor_size, s.camera) == ("aedat4", (346, 260), "DAVIS346_00000104")
    assert (s.n_events, s.n_on, s.n_off) == (117_667, 72_363, 45_304)
    assert (s.t_first_us, s.t_last_us) == (1633953690975950, 1633953691105949)
    assert s.duration_s == pytest.approx(0.129999)
    assert s.mean_rate_eps == pytest.approx(117_667 / 0.129999)
    with open_events(path) as r:
        ev = np.concatenate(list(r))
    _, counts = np.unique(ev["t"] // PEAK_BIN_US, return_counts=True)
    assert s.peak_rate_eps == counts.max() * 1e6 / PEAK_BIN_US
    assert s.other_streams == {"frames": 3, "imu": 130, "triggers": 15}
    assert s.labels is None and s.problems == []


def test_info_text(real_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = real_data / "tonic" / "sample.aedat4"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())
    assert lines["format"] == "aedat4"
    assert lines["sensor"] == "320 x 240"
    assert lines["camera"] == "DVXplorer_DXB00010"
    assert lines["events"] == "111,954 (ON 55,023 / OFF 56,931)"
    assert "imu 475" in lines["other streams"]
    assert lines["problems"] == "none"
    # Values start in one column.
    starts = {len(line) - len(line.split("  ", 1)[1].lstrip()) for line in out.splitlines()}
    assert len(starts) == 1


def test_info_json_with_labels(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "user01_natural.aedat4"
    shutil.copy(real_data / "aestream" / "davis.aedat4", rec)
    shutil.copy(real_data / "aestream" / "user01_natural_labels.csv", tmp_path)
    assert main(["info", str(rec), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    d = json.loads(out)
    assert d["n_events"] == 117_667 and d["sensor_size"] == [346, 260]
    assert d["peak_bin_us"] == PEAK_BIN_US
    lab = d["labels"]
    assert lab["count"] == 12
    assert lab["repeated_classes"] == {"arm roll": 2}
    assert lab["overlaps"] == 0
    # The label times are DVS Gesture's clock, not this camera's: all 12 are outside.
    assert lab["outside_recording"] == 12
    assert any("12 label windows" in p for p in d["problems"])


def test_info_labels_inside_recording(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "trial.aedat4"
    ev = random_events(rng, 20_000, size=(128, 128), t0=1_000_000, mean_dt_us=100.0)
    with Aedat4Writer(rec, "dvs128", camera="DVS128") as w:
        w.write(ev)
    (tmp_path / "trial_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n1,1000000,1500000\n9,1400000,1800000\n"
    )
    assert main(["info", str(rec)]) == 0
    out = capsys.readouterr().out
    assert "2 windows" in out and "label overlaps  1" in out
    assert "hand clap, air drums" in out
    assert out.strip().endswith("problems        none")


def test_info_truncated_file_one_line_error(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "cut.aedat4"
    bad.write_bytes((real_data / "aestream" / "davis.aedat4").read_bytes()[:600_000])
    assert main(["info", str(bad)]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(bad) in err and "at byte 543465" in err and "truncated" in err
    # What was read before the damage is printed first, and it is what a reader delivers.
    delivered = 0
    with open_events(bad) as reader, pytest.raises(FormatError):
        for chunk in reader:
            delivered += len(chunk)
    assert delivered > 0
    assert f"events         {delivered:,} " in captured.out
    assert "problems       damaged at byte 543465" in captured.out
    assert main(["info", str(bad), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["n_events"] == delivered and "at byte 543465" in out["error"]


def test_info_lists_a_forward_timestamp_jump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An AEDAT 3.1 file whose last packet's eventTSOverflow is 1: a 2,147 s jump."""
    src = tmp_path / "s.aedat"
    assert main(["synth", str(src), "--format", "aedat3.1", "--seconds", "3"]) == 0
    data = bytearray(src.read_bytes())
    offset, last = data.index(b"#!END-HEADER\r\n") + 14, -1
    while offset + 28 <= len(data):
        _, _, size, _, _, capacity, _, _ = struct.unpack_from("<hhiiiiii", data, offset)
        last, offset = offset, offset + 28 + capacity * size
    assert offset == len(data) and last > 0
    struct.pack_into("<i", data, last + 12, 1)  # eventTSOverflow of the last packet
    bad = tmp_path / "jump.aedat"
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["info", str(bad)]) == 0
    problems = capsys.readouterr().out.splitlines()[-1]
    assert re.search(r"1 forward timestamp jump\(s\) over 10 s \(largest 214\d\.\d{3} s", problems)
    assert not any("jump" in p for p in describe(src).problems)


def test_stats_count_forward_jumps_across_chunks() -> None:
    ev = np.zeros(6, EVENT_DTYPE)
    ev["t"] = [0, 5, 20_000_010, 20_000_020, 20_000_021, 50_000_000]
    whole, split = EventStats(), EventStats()
    whole.update(ev)
    split.update(ev[:2])
    split.update(ev[2:5])
    split.update(ev[5:])
    for s in (whole, split):
        assert (s.jumps, s.largest_jump_us, s.jump_at_us) == (2, 29_999_979, 50_000_000)


def test_info_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"hello")
    assert main(["info", str(p)]) == 1
    assert "unknown format" in capsys.readouterr().err
