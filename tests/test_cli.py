from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from smastream import __version__
from smastream.cli import COMMANDS, main
from smastream.errors import FormatError
from smastream.stream.formats import open_events, open_writer
from smastream.stream.formats.labels import read_labels
from tests.conftest import random_events


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_synth_then_info_reports_sensor_rate_and_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec.aedat4"
    assert main(["synth", str(out), "--seconds", "20", "--sensor", "davis346", "--seed", "5"]) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sensor_size"] == [346, 260]
    assert info["format"] == "aedat4"
    assert 1e4 <= info["mean_rate_eps"] <= 5e6
    labels = read_labels(tmp_path / "rec_labels.csv")
    assert info["labels"]["count"] == len(labels) >= 2
    assert info["problems"] == []


@pytest.fixture
def aedat3_file(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, int]:
    ev = random_events(rng, 30_000, size=(128, 128), t0=(1 << 31) - 50_000)
    path = tmp_path / "trial.aedat"
    with open_writer(path, (128, 128), format="aedat3.1") as w:
        for part in np.array_split(ev, 10):
            w.write(part)
    return path, len(ev)


def test_truncated_files_give_one_line_error_after_the_good_events(
    aedat3_file: tuple[Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, n = aedat3_file
    data = path.read_bytes()
    for cut in (20, 150, len(data) // 3, len(data) // 2 + 5, len(data) - 3):
        bad = tmp_path / f"cut{cut}.aedat"
        bad.write_bytes(data[:cut])
        delivered = 0
        with pytest.raises(FormatError) as err, open_events(bad) as reader:
            for chunk in reader:
                delivered += len(chunk)
        assert "at byte" in str(err.value) and str(bad) in str(err.value)
        assert delivered < n
        assert main(["info", str(bad)]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and "at byte" in lines[0]


def test_a_real_process_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.aedat4"
    bad.write_bytes(b"#!AER-DAT4.0\r\n" + bytes(range(256)) * 4)
    proc = subprocess.run(
        [sys.executable, "-m", "smastream", "info", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unwritable_output_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["synth", str(blocker / "sub" / "out.aedat4"), "--seconds", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smastream synth: error:")


def test_a_first_signal_lost_in_a_callback_is_raised_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A signal's KeyboardInterrupt that lands in a callback (an import lock's weakref
    callback, a __del__) is only printed by Python, with a traceback, and lost; the CLI's
    unraisable hook raises the signal again, so the command still ends as interrupted."""
    import gc
    import signal as signal_mod

    from smastream.cli import _Signals

    class RaisesOnDel:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    signals = _Signals()
    signals.install()
    try:
        signals.received = 1  # as the handler does for the first signal
        with pytest.raises(KeyboardInterrupt):
            obj = RaisesOnDel()
            del obj
            gc.collect()
            for _ in range(1000):  # the re-raised signal lands in ordinary code
                time.sleep(0.001)
        assert signals.received == 1
    finally:
        signals.restore()
    assert signal_mod.getsignal(signal_mod.SIGINT) is not signals.handler
    assert "Traceback" not in capsys.readouterr().err


def test_an_interrupt_that_passed_through_an_embedded_eval_still_exits_zero(
    tmp_path: Path,
) -> None:
    """A real SIGINT whose KeyboardInterrupt passes through code that an extension ran
    with ``PyRun_String`` (pybind11's ``py::exec`` while it is imported): CPython notes it
    and, after the teardown of a ``python -m`` run, killed the process with SIGINT
    (status -2) although the CLI had caught the interruption and returned 0."""
    (tmp_path / "launch_interrupted.py").write_text(
        "import ctypes, sys\n"
        "import smastream.commands.info as info\n"
        "def run(args):\n"
        "    ctypes.pythonapi.PyRun_SimpleString(\n"
        "        b'import os, signal; os.kill(os.getpid(), signal.SIGINT)')\n"
        "    raise KeyboardInterrupt  # as the interrupted import hands it on\n"
        "info.run = run\n"
        "from smastream.cli import main\n"
        "sys.exit(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "launch_interrupted", "info", "x.aedat4"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "smastream info: interrupted"
