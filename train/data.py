"""Data plumbing shared by training and evaluation: synthetic recordings by seed, the
sensor size of a recording and the binner geometry from a sensor to the model input.

Seed ranges of the synthetic data (the generator is deterministic, a seed is a recording):
training ``synth_seed + i`` (default 1000 + i), validation ``synth_seed +``
:data:`VAL_SEED_OFFSET` ``+ i``, evaluation :data:`SYNTH_TEST_SEEDS` and, with DVS
Gesture's timing, :data:`SYNTH_LONG_SEEDS`; the demo recording's
seeds 7 and 8 are refused for training (:class:`~smastream.train.config.TrainConfig`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smastream.errors import FormatError

from .datasets import Recording, make_synthetic_recordings

__all__ = [
    "DVSGESTURE_TIMING",
    "SYNTH_LONG_SECONDS",
    "SYNTH_LONG_SEEDS",
    "SYNTH_SENSOR",
    "SYNTH_TEST_SEEDS",
    "VAL_SEED_OFFSET",
    "geometry_for",
    "sensor_of",
    "synthetic_profile",
    "synthetic_recordings",
]

SYNTH_SENSOR = (128, 128)
"""Sensor size ``(W, H)`` of the synthetic recordings (a DVS128)."""
VAL_SEED_OFFSET = 10_000
"""Validation seeds are ``synth_seed + VAL_SEED_OFFSET + i``."""
SYNTH_TEST_SEEDS = tuple(range(21_000, 21_015))
"""Seeds of ``evaluate --data synthetic``: outside the default training (1000 + i) and
validation (11000 + i) ranges, one of each generator profile."""
SYNTH_LONG_SEEDS = tuple(range(22_000, 22_005))
"""Seeds of ``evaluate --data synthetic-long``: recordings of :data:`SYNTH_LONG_SECONDS`
with :data:`DVSGESTURE_TIMING`, in no training, validation, tuning or evaluation range."""
SYNTH_LONG_SECONDS = 120.0
DVSGESTURE_TIMING: dict[str, Any] = {"gesture_s": (6.0, 11.0), "gap_s": (0.3, 5.5)}
"""Gesture and gap durations of DVS Gesture's own trials, from the real label file
(``user01_natural_labels.csv``: 12 gestures of 6.4-10.6 s, gaps of 0.3-5.4 s between them),
instead of the training recordings' 2-3.5 s gestures and 0.5-1.5 s gaps."""


def geometry_for(sensor_size: tuple[int, int], input_size: tuple[int, int]) -> dict[str, Any]:
    """Binner geometry (``crop``, ``output_size``/``downsample``) from a sensor to the model
    input ``(H, W)``, the same mapping as the live pipeline (centred crop to the input's
    aspect ratio, then resize); an exact integer ratio uses sum-pooling."""
    from smastream.stream.pipeline import model_geometry

    h, w = input_size
    sw, sh = sensor_size
    if sw % w == 0 and sh % h == 0 and sw // w == sh // h:
        return {"crop": None, "downsample": sw // w, "output_size": None}
    crop, out = model_geometry((sw, sh), (w, h))
    return {"crop": crop, "downsample": 1, "output_size": out}


def synthetic_profile(seed: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generator options of synthetic training recording ``seed``.

    Two profiles alternate so the model sees both sensor settings: even seeds use the
    generator's calibrated defaults (:class:`~smastream.stream.synthetic.SynthConfig`:
    threshold 0.25, noise 0.03 Hz), odd seeds a less sensitive sensor (threshold 0.3, noise
    0.05 Hz, inside the real range of ``spec/real-dvs128.md``). Gestures last 2-3.5 s,
    gaps 0.5-1.5 s. ``options`` are other generator fields, or override these (e.g.
    :data:`DVSGESTURE_TIMING`, or ``scene_weights``).
    """
    opts: dict[str, Any] = {"gesture_s": (2.0, 3.5), "gap_s": (0.5, 1.5), **(options or {})}
    if seed % 2:
        opts.update(threshold_on=0.3, threshold_off=0.3, noise_hz=0.05)
    return opts


def synthetic_recordings(
    folder: Path,
    seeds: Sequence[int],
    seconds: float,
    progress: bool,
    workers: int = 0,
    options: dict[str, Any] | None = None,
) -> list[Recording]:
    """The synthetic recordings of ``seeds`` (generated where missing), in seed order;
    ``options`` as in :func:`synthetic_profile`."""
    groups: dict[str, list[int]] = {}
    for seed in seeds:  # one call per generator profile, so that one pool does a group
        key = repr(sorted(synthetic_profile(seed, options).items()))
        groups.setdefault(key, []).append(seed)
    by_seed: dict[int, Recording] = {}
    for group in groups.values():
        recs = make_synthetic_recordings(
            folder,
            group,
            seconds,
            "dvs128",
            progress=progress,
            workers=workers,
            **synthetic_profile(group[0], options),
        )
        by_seed.update(zip(group, recs, strict=True))
    if progress:
        print(f"synthetic recordings: {len(seeds)} in {folder}", file=sys.stderr)
    return [by_seed[s] for s in seeds]


def sensor_of(rec: Recording) -> tuple[int, int]:
    """Sensor size ``(W, H)`` of a recording's event file.

    Raises:
        FormatError: the file does not say its sensor size (names the file).
    """
    from smastream.stream.formats import open_events

    with open_events(rec.events) as reader:
        size = reader.sensor_size
    if size is None:
        raise FormatError(rec.events, None, "the file does not say its sensor size")
    return int(size[0]), int(size[1])
