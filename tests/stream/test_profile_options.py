"""``smastream profile`` refuses what the shared bounded number types refuse elsewhere
(issue 12 hardening): one error line, a non-zero exit, no run, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_refused

DEMO = Path(__file__).resolve().parents[2] / "recordings" / "demo.aedat4"


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--speed", "0", "0.001..1000 (x recorded speed)"),
        ("--speed", "1e-300", "0.001..1000 (x recorded speed)"),
        ("--speed", "1e9", "0.001..1000 (x recorded speed)"),
        ("--speed", "nan", "0.001..1000 (x recorded speed)"),
        ("--bin-ms", "9.99", "10..10000 (ms)"),
        ("--bin-ms", "1e-9", "10..10000 (ms)"),
        ("--bin-ms", "inf", "10..10000 (ms)"),
        ("--bin-ms", "1e12", "10..10000 (ms)"),
        ("--seconds", "0", "(0..1e+09 (s)"),
        ("--seconds", "1e10", "(0..1e+09 (s)"),
        ("--threads", "100000", "1.."),
    ],
)
def test_profile_refuses_out_of_range_numbers_in_one_line(
    option: str, value: str, says: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prof"
    error = assert_refused(
        ["profile", "--source", str(DEMO), "--out", str(out), option, value], capfd
    )
    assert option in error and repr(value) in error and says in error, error
    assert not out.exists()  # refused before anything ran
