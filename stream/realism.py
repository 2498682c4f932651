"""Realism statistics of an event recording, with the definitions of ``shared/spec/real-dvs128.md``.

:func:`realism_stats` computes, on any event array and sensor size, the twelve figures the
spec measured on real DVS128 recordings (people walking, objects moved by hand, close-up
hands), so the synthetic sensor can be compared with them figure by figure.
:data:`REAL_RANGES` holds the real ranges typed in from the spec's table.

Example:
    >>> stats = realism_stats(events, (128, 128))
    >>> stats["neighbour_share"]
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from smastream.stream.events import Events

__all__ = ["REAL_RANGES", "STAT_NAMES", "RealRange", "realism_stats"]


@dataclass(frozen=True)
class RealRange:
    """The real figures of one statistic (``None`` where the spec gives none)."""

    definition: str
    people: tuple[float, float]
    objects: tuple[float, float]
    hand: tuple[float, float]

    @property
    def union(self) -> tuple[float, float]:
        """Lowest and highest value over the three real sets."""
        lo = min(self.people[0], self.objects[0], self.hand[0])
        hi = max(self.people[1], self.objects[1], self.hand[1])
        return lo, hi


# Typed in from ../shared/spec/real-dvs128.md, one row each (same order as the spec table).
# Single values ("0.55", "≈1", "~0") are given as (v, v); "≈1" µs as (0, 1) with "≈0".
REAL_RANGES: dict[str, RealRange] = {
    "mean_rate_kevs": RealRange("mean event rate, kev/s", (2.8, 15.5), (11, 18), (42, 65)),
    "peak_10ms_kevs": RealRange("peak rate in a 10 ms bin, kev/s", (15, 47), (32, 63), (79, 120)),
    "median_10ms_kevs": RealRange(
        "median rate over 10 ms bins, kev/s", (1.2, 11), (9.6, 17.5), (44, 65)
    ),
    "on_share": RealRange("ON share of events", (0.37, 0.55), (0.55, 0.55), (0.47, 0.47)),
    "background_activity": RealRange(
        "mean events per pixel per s over the least active half of the pixels",
        (0.0, 0.013),
        (0.018, 0.061),
        (0.0, 0.0),
    ),
    "iei_p1_us": RealRange(
        "same-pixel inter-event interval, 1st percentile, µs", (0, 1), (0, 1), (0, 0)
    ),
    "iei_median_ms": RealRange(
        "same-pixel inter-event interval, median, ms", (2.4, 82), (34, 63), (2.7, 6.6)
    ),
    "events_per_burst": RealRange(
        "events per same-pixel burst (next event within 5 ms joins)",
        (1.04, 2.27),
        (1.33, 1.47),
        (1.9, 2.3),
    ),
    "same_polarity_next": RealRange(
        "next event at the same pixel has the same polarity",
        (0.18, 0.82),
        (0.29, 0.41),
        (0.23, 0.29),
    ),
    "neighbour_share": RealRange(
        "share of events with an event at one of the 8 neighbours in the previous 2 ms",
        (0.12, 0.37),
        (0.18, 0.25),
        (0.43, 0.48),
    ),
    "active_pixels_50ms_median": RealRange(
        "share of pixels with >= 1 event in a 50 ms window, median",
        (0.017, 0.017),
        (0.030, 0.030),
        (0.060, 0.060),
    ),
    "top1pct_share": RealRange(
        "share of all events in the 1 % most active pixels",
        (0.10, 0.16),
        (0.08, 0.15),
        (0.19, 0.23),
    ),
}
STAT_NAMES = tuple(REAL_RANGES)


@numba.njit(cache=True, nogil=True)
def _neighbour_share(
    t: npt.NDArray[np.int64], x: npt.NDArray[np.int64], y: npt.NDArray[np.int64], w: int, h: int
) -> float:
    """Share of events (in time order) with an earlier event at one of the 8 neighbours
    no more than 2 ms before."""
    last = np.full((h + 2, w + 2), -(1 << 62), dtype=np.int64)
    hit = 0
    for i in range(t.shape[0]):
        ti = t[i]
        xi = x[i] + 1
        yi = y[i] + 1
        found = False
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                if (dx != 0 or dy != 0) and ti - last[yi + dy, xi + dx] <= 2000:
                    found = True
        if found:
            hit += 1
        last[yi, xi] = ti
    return hit / max(1, t.shape[0])


def realism_stats(events: Events, sensor_size: tuple[int, int]) -> dict[str, float]:
    """The spec's statistics of ``events`` (sorted by ``t``) on a ``(width, height)`` sensor.

    Returns:
        One float per name of :data:`STAT_NAMES`, plus ``active_pixels_50ms_p90``; NaN where
        a statistic is undefined (e.g. no two events at one pixel).
    """
    w, h = (int(v) for v in sensor_size)
    n = len(events)
    nan = float("nan")
    if n == 0:
        return {name: nan for name in (*STAT_NAMES, "active_pixels_50ms_p90")}
    t = events["t"].astype(np.int64)
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    p = events["p"].astype(np.int64)
    t0 = int(t[0])
    dur_s = max((int(t[-1]) - t0) / 1e6, 1e-6)
    bins = np.bincount((t - t0) // 10_000)
    out: dict[str, float] = {
        "mean_rate_kevs": n / dur_s / 1e3,
        "peak_10ms_kevs": float(bins.max()) / 0.01 / 1e3,
        "median_10ms_kevs": float(np.median(bins)) / 0.01 / 1e3,
        "on_share": float(np.mean(p > 0)),
    }
    pix = y * w + x
    counts = np.bincount(pix, minlength=w * h)
    ordered = np.sort(counts)
    out["background_activity"] = float(ordered[: (w * h) // 2].mean()) / dur_s
    order = np.lexsort((t, pix))
    same = pix[order][1:] == pix[order][:-1]
    iei = np.diff(t[order])[same]
    pol = p[order]
    if iei.size:
        out["iei_p1_us"] = float(np.percentile(iei, 1))
        out["iei_median_ms"] = float(np.median(iei)) / 1e3
        joins = int(np.count_nonzero(iei <= 5000))
        out["events_per_burst"] = n / (n - joins)
        out["same_polarity_next"] = float(np.mean(pol[1:][same] == pol[:-1][same]))
    else:
        out.update(iei_p1_us=nan, iei_median_ms=nan, events_per_burst=1.0, same_polarity_next=nan)
    out["neighbour_share"] = float(_neighbour_share(t, x, y, w, h))
    win = (t - t0) // 50_000
    n_win = int(win[-1]) + 1
    active = np.zeros(n_win)
    uniq = np.unique(win * (w * h) + pix)
    np.add.at(active, uniq // (w * h), 1.0)
    share = active / (w * h)
    out["active_pixels_50ms_median"] = float(np.median(share))
    out["active_pixels_50ms_p90"] = float(np.percentile(share, 90))
    k = max(1, round(0.01 * w * h))
    out["top1pct_share"] = float(ordered[-k:].sum()) / n
    return out
