"""Prophesee RAW EVT 2.0 / 3.0 and DAT readers, on the real files in ../shared/data/real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smastream.cli import main
from smastream.errors import FormatError
from smastream.stream.formats import open_events, sniff_format

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"

# file, format, sensor, events, ON, OFF, first t, last t  (SOURCES.md)
FILES = [
    ("expelliarmus/evt2_sample.raw", "evt2", (640, 480), 539_481, 367_855, 171_626,
     1_317_888, 1_367_888),
    ("expelliarmus/evt3_sample.raw", "evt3", (1280, 720), 219_596, 115_532, 104_064,
     11_718_656, 11_772_513),
    ("faery/evt2.raw", "evt2", (640, 480), 521_252, 185_861, 335_391,
     913_716_224, 913_812_095),
    ("tonic/sample_ncars.dat", "dat", (304, 240), 2_009, 1_350, 659, 0, 99_952),
]  # fmt: skip


def read_all(path: Path, **kw: object) -> np.ndarray:
    with open_events(path, **kw) as reader:  # type: ignore[arg-type]
        chunks = list(reader)
    return np.concatenate(chunks)


@pytest.mark.parametrize(("name", "fmt", "size", "n", "on", "off", "t0", "t1"), FILES)
def test_real_file_counts_and_spans(
    name: str, fmt: str, size: tuple[int, int], n: int, on: int, off: int, t0: int, t1: int
) -> None:
    path = REAL / name
    assert sniff_format(path) == fmt
    with open_events(path, chunk_events=50_000) as reader:
        assert reader.format == fmt and reader.sensor_size == size
        chunks = list(reader)
        assert reader.non_monotonic == 0 and not reader.skipped
    assert max(len(c) for c in chunks) <= 50_000 + 11
    ev = np.concatenate(chunks)
    assert len(ev) == n
    assert int(ev["p"].sum()) == on and len(ev) - int(ev["p"].sum()) == off
    assert (int(ev["t"][0]), int(ev["t"][-1])) == (t0, t1)
    assert int(ev["x"].max()) < size[0] and int(ev["y"].max()) < size[1]


def test_evt3_matches_the_reference_decoding_event_for_event() -> None:
    ref = np.load(REAL / "expelliarmus" / "evt3_sample.npy")
    for chunk_events in (7_777, 1 << 18):
        ev = read_all(REAL / "expelliarmus" / "evt3_sample.raw", chunk_events=chunk_events)
        assert len(ev) == len(ref)
        for k in "txyp":
            np.testing.assert_array_equal(ev[k], ref[k])


@pytest.mark.parametrize("name", ["expelliarmus/evt2_sample.raw", "faery/evt2.raw",
                                  "tonic/sample_ncars.dat"])  # fmt: skip
def test_numpy_decoders_match_expelliarmus(name: str, tmp_path: Path) -> None:
    from expelliarmus import Wizard

    enc = "dat" if name.endswith(".dat") else "evt2"
    ref = Wizard(encoding=enc, fpath=REAL / name).read()
    ev = read_all(REAL / name, chunk_events=30_000)
    for k in "txyp":
        np.testing.assert_array_equal(ev[k], ref[k])


@pytest.mark.parametrize("name", [f[0] for f in FILES])
def test_seek_starts_at_the_first_event_at_or_after(name: str) -> None:
    full = read_all(REAL / name)
    with open_events(REAL / name, chunk_events=20_000) as reader:
        for frac in (0.0, 0.37, 0.9):
            t = int(full["t"][int(frac * (len(full) - 1))])
            reader.seek(t)
            got = np.concatenate(list(reader))
            np.testing.assert_array_equal(got, full[np.searchsorted(full["t"], t) :])


def test_sensor_override_and_outside_events_are_counted() -> None:
    path = REAL / "expelliarmus" / "evt2_sample.raw"
    with open_events(path, sensor_size=(320, 240)) as reader:
        ev = np.concatenate(list(reader))
        dropped = sum(reader.skipped.values())
    assert reader.sensor_size == (320, 240)
    assert int(ev["x"].max()) < 320 and int(ev["y"].max()) < 240
    assert len(ev) + dropped == 539_481 and dropped > 0


def _damage(data: bytes, seed: int, kind: str, start: int) -> bytes:
    rng = np.random.default_rng(seed)
    if kind == "cut":
        return data[: int(rng.integers(start + 1, len(data)))]
    out = bytearray(data)
    at = int(rng.integers(start, len(data) - 64))
    out[at : at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    return bytes(out)


@pytest.mark.parametrize("name", [f[0] for f in FILES])
def test_damaged_copies_give_the_events_before_then_a_one_line_error(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (REAL / name).read_bytes()
    full = read_all(REAL / name)
    with open_events(REAL / name) as reader:
        start = reader.data_start  # type: ignore[attr-defined]
    for seed in range(4):
        for kind in ("cut", "garbage"):
            bad = tmp_path / f"{kind}{seed}{Path(name).suffix}"
            bad.write_bytes(_damage(data, seed, kind, start))
            got: list[np.ndarray] = []
            try:
                with open_events(bad, chunk_events=16_384) as reader:
                    for chunk in reader:
                        got.append(chunk)
                error = None
            except FormatError as exc:
                error = exc
            ev = np.concatenate(got) if got else full[:0]
            if kind == "cut":
                # Everything delivered is exactly the start of the intact decoding.
                np.testing.assert_array_equal(ev, full[: len(ev)])
                if (len(bad.read_bytes()) - start) % (2 if "evt3" in name else 4 if
                                                      "dat" not in name else 8):  # fmt: skip
                    assert error is not None and "truncated" in error.cause
            if error is not None:
                assert str(bad) in str(error) and "at byte" in str(error)
                assert start <= error.offset <= len(bad.read_bytes())
            rc = main(["info", str(bad)])
            lines = capsys.readouterr().err.strip().splitlines()
            assert rc == (1 if error is not None else 0)
            if rc:
                assert len(lines) == 1 and str(bad) in lines[0] and "at byte" in lines[0]


def test_a_corrupt_evt3_in_a_real_process_is_one_line_and_quiet(tmp_path: Path) -> None:
    data = bytearray((REAL / "expelliarmus" / "evt3_sample.raw").read_bytes())
    data[400_000:400_002] = b"\xff\x9f"  # type 0x9: not an EVT 3.0 word type
    bad = tmp_path / "bad.raw"
    bad.write_bytes(bytes(data))
    proc = subprocess.run(
        [sys.executable, "-m", "smastream", "info", str(bad)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "at byte 400000" in lines[0] and "0x9" in lines[0]


def test_header_without_version_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.raw"
    bad.write_bytes(b"% Date 2020-09-14\n% plugin_name hal_plugin_gen3_fx3\n" + bytes(64))
    with pytest.raises(FormatError, match="not a Prophesee RAW/DAT file"):
        sniff_format(bad)


@pytest.mark.parametrize("name", [f[0] for f in FILES])
def test_replay_runs_end_to_end_headless(name: str) -> None:
    # evt3_sample.raw is 1280x720: the binner centre-crops it to the model's input.
    proc = subprocess.run(
        [sys.executable, "-m", "smastream", "replay", str(REAL / name), "--no-display",
         "--as-fast-as-possible"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    n = next(f[3] for f in FILES if f[0] == name)
    assert f"{n} events" in proc.stdout + proc.stderr


def test_replay_sensor_option_for_a_header_without_size(tmp_path: Path) -> None:
    src = REAL / "expelliarmus" / "evt2_sample.raw"
    with open_events(src) as reader:
        start = reader.data_start  # type: ignore[attr-defined]
    bare = tmp_path / "bare.raw"
    bare.write_bytes(b"% evt 2.0\n" + src.read_bytes()[start:])
    with open_events(bare) as reader:
        assert reader.sensor_size is None
    cmd = [sys.executable, "-m", "smastream", "replay", str(bare), "--no-display",
           "--as-fast-as-possible"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "sensor size" in proc.stderr
    proc = subprocess.run([*cmd, "--sensor", "640x480"], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "539481 events" in proc.stdout + proc.stderr


def test_evt3_ext_trigger_words_are_stepped_over_without_changing_events(
    tmp_path: Path,
) -> None:
    # expelliarmus 1.1 rejects EXT_TRIGGER (0xA) words; the reader steps over them itself.
    src = REAL / "expelliarmus" / "evt3_sample.raw"
    ref = np.load(REAL / "expelliarmus" / "evt3_sample.npy")
    with open_events(src) as reader:
        start = reader.data_start  # type: ignore[attr-defined]
    data = src.read_bytes()
    words = np.frombuffer(data[start:], dtype="<u2")
    rng = np.random.default_rng(5)
    at = np.sort(rng.choice(len(words), 25, replace=False))
    at[0] = 0  # one before anything else, one at the very end
    trigger = np.uint16(0xA000 | 0x21)
    body = np.insert(words, np.append(at, len(words)), trigger)
    path = tmp_path / "triggers.raw"
    path.write_bytes(data[:start] + body.tobytes())
    with open_events(path, chunk_events=10_000) as reader:
        ev = np.concatenate(list(reader))
        assert reader.skipped["EXT_TRIGGER words"] == len(at) + 1
    for k in "txyp":
        np.testing.assert_array_equal(ev[k], ref[k])
