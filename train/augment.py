"""Event augmentation for the stream protocol: tonic's event transforms plus crop/zoom.

Applied to a recording's *events*, before the live :class:`~smastream.stream.binning.Binner`
bins them (:func:`smastream.train.datasets._preprocess_stream`), so the network trains on
exactly the frames the live path would make of such events: no train/serve skew.

One draw per recording copy (seeded by ``(seed, recording name)``), in this order:

1. time scaling (tonic ``TimeSkew``): ``t -> t0 + (t - t0) * c``, ``c`` in ``time_scale``;
   the label windows are scaled with it, so gestures stay labelled;
2. temporal jitter (tonic ``TimeJitter``), ``time_jitter_us`` standard deviation;
3. spatial jitter (tonic ``SpatialJitter``), ``spatial_jitter_px`` standard deviation;
4. random zoom about the centre (``zoom``) and shift (``shift_px``): a random crop of a
   larger or smaller field of view; events that leave the sensor are dropped;
5. drop events (tonic ``DropEvent``), a fraction drawn from ``drop``;
6. uniform noise events (tonic ``UniformNoise``), ``noise`` x the number of events.

No left-right or up-down flips: a flip swaps "left" and "right" classes (and arm rotation
directions). tonic's transforms draw from numpy's legacy global generator: it is seeded
for the call and restored afterwards. Its ``SpatialJitter``/``TimeJitter`` assign float
shifts into the input's dtype (``uint16`` coordinates would wrap below 0), so they run on
a float64 copy that is rounded back. ``Denoise`` is not used: a Python loop (0.5 Mevents/s).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from smastream.stream.events import EVENT_DTYPE
from smastream.stream.formats.labels import GestureWindow

__all__ = ["AUGMENT_VERSION", "AugmentSpec", "augment_events", "augment_seed_for", "scale_windows"]

AUGMENT_VERSION = 1
"""Bump when :func:`augment_events` changes what it draws (part of the cache key)."""

_WORK_DTYPE = np.dtype([("x", "<f8"), ("y", "<f8"), ("t", "<f8"), ("p", "<f8")])


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges of the augmentation (each drawn uniformly per recording copy)."""

    time_scale: tuple[float, float] = (0.8, 1.25)
    time_jitter_us: float = 1000.0
    spatial_jitter_px: float = 0.7
    zoom: tuple[float, float] = (0.8, 1.2)
    shift_px: float = 10.0
    drop: tuple[float, float] = (0.0, 0.3)
    noise: tuple[float, float] = (0.0, 0.05)


def augment_seed_for(seed: int, name: str) -> int:
    """The seed of one recording's copy: stable across processes and runs."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**32)


def scale_windows(
    windows: Sequence[GestureWindow], t0_us: int, scale: float
) -> list[GestureWindow]:
    """Label windows under ``t -> t0 + (t - t0) * scale`` (as :func:`augment_events`)."""
    return [
        GestureWindow(
            round(t0_us + (w.start_us - t0_us) * scale),
            round(t0_us + (w.end_us - t0_us) * scale),
            w.label,
        )
        for w in windows
    ]


def augment_events(
    events: npt.NDArray[np.void],
    sensor_size: tuple[int, int],
    seed: int,
    spec: AugmentSpec | None = None,
) -> tuple[npt.NDArray[np.void], float]:
    """Augmented copy of ``events`` (``EVENT_DTYPE``, time-sorted) and its time scale.

    Args:
        events: One recording's events.
        sensor_size: ``(W, H)``.
        seed: The copy's seed (see :func:`augment_seed_for`).
        spec: The ranges; ``None``: :class:`AugmentSpec` defaults.

    Returns:
        ``(events, scale)``: new time-sorted ``EVENT_DTYPE`` events inside the sensor and
        the time scale ``c`` (``t0`` is the first input event's time; scale the label
        windows with :func:`scale_windows`).
    """
    from tonic import transforms as T

    spec = spec or AugmentSpec()
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if len(events) == 0:
        return np.zeros(0, dtype=EVENT_DTYPE), 1.0
    rng = np.random.default_rng(seed)
    scale = float(rng.uniform(*spec.time_scale))
    zoom = float(rng.uniform(*spec.zoom))
    dx, dy = (float(v) for v in rng.uniform(-spec.shift_px, spec.shift_px, 2))
    drop = float(rng.uniform(*spec.drop))
    noise = float(rng.uniform(*spec.noise))
    t0 = int(events["t"][0])

    ev = np.empty(len(events), dtype=_WORK_DTYPE)
    for name in ("x", "y", "p"):
        ev[name] = events[name]
    ev["t"] = events["t"] - t0  # tonic's TimeSkew scales about 0
    saved = np.random.get_state()  # noqa: NPY002 - tonic draws from the legacy generator
    np.random.seed(int(rng.integers(2**32)))  # noqa: NPY002
    try:
        ev = T.TimeSkew(coefficient=scale, offset=0)(ev)
        if spec.time_jitter_us > 0:
            ev = T.TimeJitter(std=spec.time_jitter_us, clip_negative=False)(ev)
        if spec.spatial_jitter_px > 0:
            var = spec.spatial_jitter_px**2
            ev = T.SpatialJitter(sensor_size=(w, h, 2), var_x=var, var_y=var, clip_outliers=False)(
                ev
            )
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        ev["x"] = (ev["x"] - cx) * zoom + cx + dx
        ev["y"] = (ev["y"] - cy) * zoom + cy + dy
        ev["x"] = np.round(ev["x"])
        ev["y"] = np.round(ev["y"])
        inside = (ev["x"] >= 0) & (ev["x"] < w) & (ev["y"] >= 0) & (ev["y"] < h)
        ev = ev[inside]
        if drop > 0 and len(ev):
            ev = T.DropEvent(p=drop)(ev)
        n_noise = int(noise * len(ev))
        if n_noise and len(ev):
            ev = T.UniformNoise(sensor_size=(w, h, 2), n=n_noise)(ev)
    finally:
        np.random.set_state(saved)  # noqa: NPY002

    t = np.maximum(np.round(ev["t"]).astype(np.int64), 0) + t0  # jitter before t0: at t0
    order = np.argsort(t, kind="stable")
    out = np.empty(len(ev), dtype=EVENT_DTYPE)
    out["t"] = t[order]
    out["x"] = np.clip(np.floor(ev["x"][order]), 0, w - 1).astype(np.uint16)
    out["y"] = np.clip(np.floor(ev["y"][order]), 0, h - 1).astype(np.uint16)
    out["p"] = np.clip(np.floor(ev["p"][order]), 0, 1).astype(np.uint8)
    return out, scale
