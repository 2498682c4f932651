"""``smastream bench-engine`` refuses what the shared bounded number types refuse
elsewhere (issue 12 hardening): ``--threads 100000`` would make ONNX Runtime start
threads until the machine stalls; a negative seed was a numpy traceback."""

from __future__ import annotations

import pytest

from smastream.cli import main
from smastream.commands.common import max_threads
from tests.conftest import assert_refused


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--threads", "100000", f"1..{max_threads()}"),
        ("--threads", str(max_threads() + 1), f"1..{max_threads()}"),
        ("--threads", "0", f"1..{max_threads()}"),
        ("--threads", "-2", f"1..{max_threads()}"),
        ("--threads", "2.5", f"1..{max_threads()}"),
        ("--seed", "-1", "0..4294967295"),
        ("--warmup", "-1", "0..1000000"),
        ("--warmup", "1e12", "0..1000000"),
    ],
)
def test_bench_engine_refuses_out_of_range_numbers_in_one_line(
    option: str, value: str, says: str, capfd: pytest.CaptureFixture[str]
) -> None:
    error = assert_refused(
        ["bench-engine", "--preset", "edge", "--windows", "1", option, value], capfd
    )
    assert option in error and repr(value) in error and says in error, error


def test_bench_engine_runs_at_the_largest_thread_count_it_allows(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The bound is not off by one: max_threads() itself runs (a real ONNX Runtime)."""
    pytest.importorskip("torch")
    argv = ["bench-engine", "--preset", "edge", "--windows", "2", "--warmup", "0"]
    assert main([*argv, "--threads", str(max_threads()), "--json"]) == 0
    out = capfd.readouterr().out
    assert f'"threads": {max_threads()}' in out
