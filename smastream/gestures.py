"""The 11 DVS128 Gesture classes, shared by every package (labels 0..10 here, 1..11 in files)."""

from __future__ import annotations

from collections.abc import Sequence

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

#: The "no gesture" output of a stream-protocol model (its 12th class) and the label a
#: decision shows when no gesture is decided: defined here once for stream/ and train/.
NO_GESTURE = "no gesture"
#: Index of :data:`NO_GESTURE` among a stream model's outputs and the per-bin training
#: target outside every gesture window (right after the 11 gestures).
NO_GESTURE_INDEX = NUM_CLASSES
#: Output names of a stream-protocol model: the 11 gestures, then "no gesture".
STREAM_CLASS_NAMES: tuple[str, ...] = (*CLASS_NAMES, NO_GESTURE)


def no_gesture_index(class_names: Sequence[str]) -> int | None:
    """Position of the "no gesture" output in ``class_names``, None when the model has
    none (a clip-protocol model with 11 outputs)."""
    names = list(class_names)
    return names.index(NO_GESTURE) if NO_GESTURE in names else None
