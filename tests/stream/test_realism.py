"""The calibrated synthetic sensor against the real DVS128 figures (shared/spec/real-dvs128.md).

Each statistic of a generated 40 s 128x128 recording (default config, the demo seed 7 and
the first training seed 1000) must fall inside the **union of the three real sets' ranges**
(people, objects, hand). The union, not the people range alone, because a synthetic
recording mixes DVS-Gesture-distance gestures (closer than the people set, farther than the
hand set) with whole-body no-gesture scenes: no single real set matches its scene type.

Known gaps, held as strict xfails (or, for the active-pixel share, a test of the gap) so a
fix shows up (values of the generator of commit 53dea01: people with fingers, second person,
held objects, camera pan/shake, lamp flicker):

- the share of pixels active in 50 ms is 2-4x below the real medians (seed 7: 0.0069,
  seed 1000: 0.0076; real >= 0.017);
- the 1 % most active pixels hold 25 % of seed 7's events and 26 % of seed 1000's (real:
  <= 23 %; which pixels they are was not measured); seed 7 was inside (0.219) with the
  generator before the people got fingers, objects and camera motion;
- a high-contrast recording with whole-frame sweeps (seed 8: walking out of the frame on a
  bright textured background) exceeds the peak rate (234 kev/s vs <= 120) and the neighbour
  share (0.497 vs <= 0.48); its background activity (0.023) is now inside.

The recordings are 40 s, as in ``benchmarks/realism.py`` and ``docs/realism.md``: shorter
ones hold one or two scenes and their statistics swing with the scene (seed 7 over 20 s:
1 % share 0.32; over 10 s: peak 13.9 kev/s, below the real band), so they would test the
schedule, not the sensor.
"""

from __future__ import annotations

import numpy as np
import pytest

from smastream.stream.events import EVENT_DTYPE
from smastream.stream.realism import REAL_RANGES, STAT_NAMES, realism_stats
from smastream.stream.synthetic import SynthConfig, generate

_KNOWN_LOW = {"active_pixels_50ms_median"}


def _stats(seed: int) -> dict[str, float]:
    events, _ = generate(SynthConfig(sensor_size=(128, 128), seconds=40.0, seed=seed))
    return realism_stats(events, (128, 128))


# share of the 1 % most active pixels vs <= 0.23: seed 7 0.250, seed 1000 0.259
_KNOWN_OUT = {(7, "top1pct_share"), (1000, "top1pct_share")}


@pytest.fixture(scope="module", params=[7, 1000])
def stats(request: pytest.FixtureRequest) -> dict[str, float]:
    return {"seed": float(request.param), **_stats(int(request.param))}


@pytest.mark.parametrize("name", [n for n in STAT_NAMES if n not in _KNOWN_LOW])
def test_statistic_is_inside_the_real_union_band(
    stats: dict[str, float], name: str, request: pytest.FixtureRequest
) -> None:
    if (int(stats["seed"]), name) in _KNOWN_OUT:
        request.applymarker(pytest.mark.xfail(strict=True, reason="known gap, see _KNOWN_OUT"))
    lo, hi = REAL_RANGES[name].union
    assert lo <= stats[name] <= hi, (name, stats[name], (lo, hi))


def test_active_pixel_share_is_a_known_gap_below_the_real_medians(
    stats: dict[str, float],
) -> None:
    value = stats["active_pixels_50ms_median"]
    lo, _ = REAL_RANGES["active_pixels_50ms_median"].union
    assert 0.002 < value < lo  # when this fails upwards, move the name out of _KNOWN_LOW


@pytest.mark.xfail(strict=True, reason="seed 8: whole-frame sweeps on a bright background")
def test_high_contrast_sweeping_recording_is_inside_the_band() -> None:
    s = _stats(8)
    for name in ("peak_10ms_kevs", "background_activity", "neighbour_share"):
        lo, hi = REAL_RANGES[name].union
        assert lo <= s[name] <= hi, (name, s[name])


def test_statistics_follow_their_definitions_on_a_hand_made_array() -> None:
    # Pixel (0, 0): events at 0, 1, 3000 us (one burst of 3), then 20 ms later one more;
    # pixel (1, 0) fires 1 ms after the first: it has a fresh neighbour, the others do not.
    ev = np.zeros(5, dtype=EVENT_DTYPE)
    ev["t"] = [0, 1, 1000, 3000, 23_000]
    ev["x"] = [0, 0, 1, 0, 0]
    ev["p"] = [1, 1, 0, 0, 1]
    s = realism_stats(ev, (10, 10))
    assert s["on_share"] == pytest.approx(3 / 5)
    assert s["neighbour_share"] == pytest.approx(2 / 5)  # (1,0) at 1000; (0,0) at 3000
    # Bursts: {0, 1, 3000} and {23000} at (0, 0), {1000} at (1, 0).
    assert s["events_per_burst"] == pytest.approx(5 / 3)
    assert s["same_polarity_next"] == pytest.approx(1 / 3)  # 1->1 same, 1->0, 0->1
    assert s["iei_median_ms"] == pytest.approx(2.999)
    assert s["top1pct_share"] == pytest.approx(4 / 5)  # 1 % of 100 pixels: (0, 0)
    assert s["background_activity"] == 0.0
    assert s["peak_10ms_kevs"] == pytest.approx(4 / 0.01 / 1e3)
