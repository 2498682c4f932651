"""The runtime protocol: what the live path needs from any backend.

A runtime holds the network's state inside itself (on the device for GPU backends) and
runs one *window* of ``S`` consecutive time bins per call::

    runtime.reset()                          # fresh state (start, idle timeout, discontinuity)
    logits = runtime.step(frames)            # frames [S, 2, H, W] float32 -> logits [S, C]

Backends (ONNX Runtime, PyTorch, TensorRT) implement it; ``info`` describes the model so
that a runtime needs nothing else (input size, bin width, steps per window, class names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ModelInfo:
    """What a deployed model needs to be fed correctly.

    Attributes:
        preset: Model preset name (``edge``, ``paper``, ...).
        input_size: ``(width, height)`` of the frames the model takes.
        bin_us: Duration of one time bin (one network step) the model was trained with.
        steps_per_window: ``S``, the number of bins per call (fixed in exported graphs).
        class_names: Names of the output classes, in logit order.
        backend: Which runtime runs it.
        extra: Anything else stored with the model (training data, version, ...).
    """

    preset: str
    input_size: tuple[int, int]
    bin_us: int
    steps_per_window: int
    class_names: tuple[str, ...]
    backend: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(2, H, W)``: one bin's frame."""
        return (2, self.input_size[1], self.input_size[0])

    @property
    def window_shape(self) -> tuple[int, int, int, int]:
        """``(S, 2, H, W)``: one call's input."""
        return (self.steps_per_window, *self.frame_shape)


class Runtime(Protocol):
    """A stateful SNN runtime: one window per call, state kept between calls."""

    info: ModelInfo

    def reset(self) -> None:
        """Zero every state tensor."""

    def step(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run one window: ``frames [S, 2, H, W]`` -> ``logits [S, C]``; advances the state."""
        ...

    def state_norms(self) -> dict[str, float]:
        """L2 norm of every state tensor (telemetry: a stuck or exploding state shows here)."""
        ...
