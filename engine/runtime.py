"""The runtime protocol: what the live path needs from any backend.

A runtime holds the network's state inside itself (on the device for GPU backends) and
runs one *window* of ``S`` consecutive time bins per call::

    runtime.reset()                          # fresh state (start, idle timeout, discontinuity)
    logits = runtime.step(frames)            # frames [S, 2, H, W] float32 -> logits [S, C]

Backends (ONNX Runtime, PyTorch, TensorRT) implement it; ``info`` describes the model so
that a runtime needs nothing else (input size, bin width, steps per window, class names).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from smastream.errors import FormatError

#: Graph input of one window of frames, ``[S, 1, 2, H, W]`` float32.
FRAMES = "frames"
#: Graph output of the window's logits, ``[S, 1, C]`` float32.
LOGITS = "logits"
STATE_IN = "_in"
STATE_OUT = "_out"


def state_input_name(name: str) -> str:
    """Graph input of state item ``name``."""
    return f"{name}{STATE_IN}"


def state_output_name(name: str) -> str:
    """Graph output of state item ``name`` (fed back to :func:`state_input_name`)."""
    return f"{name}{STATE_OUT}"


def check_state_io(
    inputs: Collection[str], outputs: Collection[str], path: str | Path
) -> tuple[str, ...]:
    """The state names of a graph or engine following the I/O convention
    ``frames + <name>_in -> logits + <name>_out`` (in input order).

    Raises:
        FormatError: (naming ``path``) when the inputs and outputs do not follow it.
    """
    names = tuple(n[: -len(STATE_IN)] for n in inputs if n != FRAMES and n.endswith(STATE_IN))
    if set(inputs) != {FRAMES, *map(state_input_name, names)} or set(outputs) != {
        LOGITS,
        *map(state_output_name, names),
    }:
        raise FormatError(
            path,
            0,
            f"graph inputs {sorted(inputs)} / outputs {sorted(outputs)} do not follow the "
            f"{FRAMES} + <name>{STATE_IN} -> {LOGITS} + <name>{STATE_OUT} convention",
        )
    return names


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

    def check_window(self, frames: np.ndarray) -> None:
        """Raise ``ValueError`` unless ``frames`` has :attr:`window_shape`."""
        if tuple(frames.shape) != self.window_shape:
            raise ValueError(
                f"frames must be {list(self.window_shape)} (S, 2, H, W), got {list(frames.shape)}"
            )


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


# -- shared helpers and the factory ------------------------------------------------------

#: File suffixes per backend (the file type picks the default backend).
ONNX_SUFFIXES: tuple[str, ...] = (".onnx",)
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt")
ENGINE_SUFFIXES: tuple[str, ...] = (".plan", ".engine")
BACKENDS: tuple[str, ...] = ("onnxruntime", "torch", "tensorrt")


def model_info_from_metadata(meta: dict[str, Any], backend: str) -> ModelInfo:
    """Build :class:`ModelInfo` from the ``smastream`` metadata of an export.

    Args:
        meta: The JSON metadata (see ``smastream.engine.export.export_metadata``).
        backend: The runtime's name.

    Raises:
        ValueError: If a required key is missing or has the wrong type.
    """
    required = ("preset", "input_width", "input_height", "bin_us", "steps_per_window")
    missing = [k for k in (*required, "class_names") if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks {missing}; re-export the model")
    try:
        size = (int(meta["input_width"]), int(meta["input_height"]))
        bin_us = int(meta["bin_us"])
        steps = int(meta["steps_per_window"])
        names = tuple(str(n) for n in meta["class_names"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model metadata has a malformed value: {exc}") from None
    extra = {k: v for k, v in meta.items() if k not in (*required, "class_names")}
    return ModelInfo(
        preset=str(meta["preset"]),
        input_size=size,
        bin_us=bin_us,
        steps_per_window=steps,
        class_names=names,
        backend=backend,
        extra=extra,
    )


def backend_for_path(path: str | Path, backend: str | None = None) -> str:
    """The backend that runs ``path``: ``backend`` if given (and able to), else by suffix.

    ``.onnx`` -> ``onnxruntime`` (``tensorrt`` may build an engine from it; ``torch``
    cannot run it); ``.pt``/``.pth``/``.ckpt`` -> ``torch`` only; ``.plan``/``.engine`` ->
    ``tensorrt`` only.

    Raises:
        ValueError: Unknown backend name.
        SmastreamError: Unknown suffix, or a backend that cannot run that file type (the
            message says what to do instead).
    """
    from smastream.errors import SmastreamError

    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {BACKENDS}")
    suffix = Path(path).suffix.lower()
    able: tuple[str, ...]
    if suffix in ONNX_SUFFIXES:
        kind, able = "ONNX model", ("onnxruntime", "tensorrt")
    elif suffix in CHECKPOINT_SUFFIXES:
        kind, able = "checkpoint", ("torch",)
    elif suffix in ENGINE_SUFFIXES:
        kind, able = "TensorRT engine", ("tensorrt",)
    else:
        valid = ONNX_SUFFIXES + CHECKPOINT_SUFFIXES + ENGINE_SUFFIXES
        raise SmastreamError(f"{path}: unknown model file type {suffix!r}; valid: {valid}")
    if backend is None:
        return able[0]
    if backend not in able:
        hint = (
            f"export it first: smastream export {path} --out model.onnx"
            if kind == "checkpoint"
            else f"the {backend} backend runs {', '.join(_kinds_of(backend))}"
        )
        raise SmastreamError(f"{path}: a {kind} cannot run on {backend} ({hint})")
    return backend


def _kinds_of(backend: str) -> tuple[str, ...]:
    return {
        "onnxruntime": ("ONNX models (.onnx)",),
        "torch": ("checkpoints (.pt)",),
        "tensorrt": ("engines (.plan) and ONNX models (.onnx)",),
    }[backend]


def open_runtime(model_path: str | Path, backend: str | None = None, **options: Any) -> Runtime:
    """Open a model file with the right backend.

    Args:
        model_path: ``.onnx`` (ONNX Runtime by default, or TensorRT: the engine is built
            once and cached), ``.pt`` checkpoint (PyTorch), ``.plan``/``.engine``
            (TensorRT).
        backend: ``"onnxruntime"``, ``"torch"``, ``"tensorrt"`` or ``None`` (by file type).
        **options: Passed to the backend: ``threads``, ``device``, ``spin``
            (onnxruntime); ``threads``, ``device``, ``cuda_graph``, ``steps_per_window``,
            ``bin_us`` (torch); ``precision``, ``cache_dir`` (``.onnx`` only),
            ``cuda_graph`` (tensorrt, which ignores ``threads`` and ``device``).

    Raises:
        SmastreamError: Missing file, wrong file type for the backend, a missing optional
            dependency (:class:`~smastream.errors.DependencyError`, with the install hint).
    """
    from smastream.errors import SmastreamError

    path = Path(model_path)
    if not path.is_file():
        raise SmastreamError(f"model {path} not found")
    chosen = backend_for_path(path, backend)
    if chosen == "onnxruntime":
        from .ort_runtime import OrtRuntime

        return OrtRuntime(path, **options)
    if chosen == "torch":
        from .torch_runtime import TorchRuntime

        return TorchRuntime.from_checkpoint(path, **options)
    from .trt_runtime import TrtRuntime

    # CPU threads and the device choice do not apply to an engine (it runs on the GPU it
    # was built for); the shared --threads/--device options are not an error here.
    options = {k: v for k, v in options.items() if k not in ("threads", "device")}
    if path.suffix.lower() in ONNX_SUFFIXES:
        return TrtRuntime.from_onnx(path, **options)
    return TrtRuntime(path, **options)
