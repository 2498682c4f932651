"""The 11 DVS128 Gesture classes, shared by every package (labels 0..10 here, 1..11 in files)."""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "hand clap",
    "right hand wave",
    "left hand wave",
    "right arm clockwise",
    "right arm counter-clockwise",
    "left arm clockwise",
    "left arm counter-clockwise",
    "arm roll",
    "air drums",
    "air guitar",
    "other",
)
NUM_CLASSES = len(CLASS_NAMES)
