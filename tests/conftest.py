"""Shared fixtures: the real recordings in ../shared/data/real and seeded random events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smastream.stream.events import EVENT_DTYPE, Events

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "real"


@pytest.fixture
def real_data() -> Path:
    """The folder of real recordings (see its SOURCES.md); skips when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real recordings not found beside the repository ({REAL_DATA.name})")
    return REAL_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def random_events(
    rng: np.random.Generator,
    n: int,
    size: tuple[int, int] = (128, 128),
    t0: int = 0,
    mean_dt_us: float = 10.0,
) -> Events:
    """``n`` sorted events on a ``size`` sensor, in the real dtype."""
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["t"] = t0 + np.cumsum(rng.exponential(mean_dt_us, n)).astype(np.int64)
    ev["x"] = rng.integers(0, size[0], n)
    ev["y"] = rng.integers(0, size[1], n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def assert_refused(argv: list[str], capfd: pytest.CaptureFixture[str]) -> str:
    """Run ``smastream ARGV`` in-process and check it is refused the product's way: a
    non-zero exit, no traceback, exactly one ``error:`` line (returned)."""
    from smastream.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage + one error line, exit 2
        code = exc.code  # type: ignore[assignment]
    err = capfd.readouterr().err
    assert code not in (0, None), (argv, err)
    assert "Traceback" not in err, (argv, err)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, (argv, err)
    return errors[0]
