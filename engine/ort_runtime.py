"""ONNX Runtime backend: the default everywhere (CPU; CUDA / TensorRT execution providers
when the installed onnxruntime has them).

State never leaves the runtime's buffers: two preallocated sets, A and B, and two I/O
bindings made once, ``A -> B`` and ``B -> A``. Call ``n`` reads its state from one set
and writes the next state into the other; call ``n + 1`` uses the other binding, so the
outputs of call ``n`` are the inputs of call ``n + 1`` with no copy and no allocation
(ping-pong). With the CPU provider the buffers are numpy arrays wrapped (not copied) by
``OrtValue``; with CUDA they live on the GPU. Needs only onnxruntime and numpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from smastream.errors import FormatError

from .runtime import FRAMES, LOGITS, ModelInfo, check_state_io, model_info_from_metadata

METADATA_KEY = "smastream"
DEVICES: tuple[str, ...] = ("cpu", "cuda", "tensorrt")
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_NEEDS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def choose_device(device: str | None) -> str:
    """``device`` checked against the installed providers; ``None`` -> ``cuda`` if the
    installed onnxruntime has the CUDA provider, else ``cpu``.

    Raises:
        ValueError: Unknown device, or one this onnxruntime build cannot use (lists what it has).
    """
    available = ort.get_available_providers()
    if device is None:
        return "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device not in DEVICES:
        raise ValueError(f"unknown onnxruntime device {device!r}; valid: {DEVICES}")
    need = _NEEDS.get(device)
    if need is not None and need not in available:
        raise ValueError(
            f"onnxruntime device {device!r} needs {need}, which this onnxruntime "
            f"({ort.__version__}) lacks; it has {available} (install onnxruntime-gpu)"
        )
    return device


class OrtRuntime:
    """A stateful ONNX Runtime session over a graph written by ``engine.export``.

    Args:
        path: The ``.onnx`` file (its metadata gives :attr:`info`).
        threads: ``intra_op_num_threads`` (``None``: onnxruntime's default, all cores).
        device: ``"cpu"``, ``"cuda"``, ``"tensorrt"`` (execution provider) or ``None``
            (CUDA when available, else CPU).
        spin: Let idle intra-op threads spin-wait (lower latency on an idle machine,
            lost CPU for every other thread; off by default).

    Shapes: ``step(frames[S, 2, H, W] float32) -> logits[S, C] float32``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        device: str | None = None,
        spin: bool = False,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        self.path = Path(path)
        self.device = choose_device(device)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        # Spin-waiting worker threads burn the cores the binner and overlay need (on a
        # loaded 2-core machine 2 spinning threads took 24 ms/window, 14 ms without).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        # Membranes halve every quiet step and reach denormal floats after ~6 s of silence
        # at 50 ms bins; denormal arithmetic is ~30x slower on CPUs. Flush them to zero.
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=_PROVIDERS[self.device]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise FormatError(self.path, None, f"onnxruntime cannot load it ({exc})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise FormatError(self.path, None, "no smastream metadata: not exported by smastream")
        try:
            self.info: ModelInfo = model_info_from_metadata(json.loads(raw), "onnxruntime")
        except ValueError as exc:
            raise FormatError(self.path, None, str(exc)) from None
        self.threads = threads
        self._setup_buffers()

    # -- buffers -------------------------------------------------------------------------

    def _setup_buffers(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.state_names: tuple[str, ...] = check_state_io(inputs, outputs, self.path)
        s = self.info.steps_per_window
        frame_shape = (s, 1, *self.info.frame_shape)
        if tuple(inputs[FRAMES].shape) != frame_shape:
            raise FormatError(
                self.path,
                None,
                f"frames input is {inputs[FRAMES].shape}, metadata says {frame_shape}",
            )
        self._shapes = {n: tuple(int(d) for d in inputs[f"{n}_in"].shape) for n in self.state_names}
        logits_shape = tuple(int(d) for d in outputs[LOGITS].shape)
        self.num_classes = logits_shape[-1]
        ort_device = "cuda" if self.device in ("cuda", "tensorrt") else "cpu"
        # Host-side I/O buffers (frames in, logits out) are wrapped, never copied.
        self._frames = np.zeros(frame_shape, np.float32)
        self._logits = np.zeros(logits_shape, np.float32)
        self._frames_value = ort.OrtValue.ortvalue_from_numpy(self._frames)
        self._logits_value = ort.OrtValue.ortvalue_from_numpy(self._logits)
        # The same buffers in the protocol's shapes, made once (no view per call).
        self._frames_in = self._frames.reshape(self.info.window_shape)
        self._logits_out = self._logits.reshape(s, self.num_classes)
        # Two state sets on the provider's device.
        self._host_sets: list[dict[str, npt.NDArray[np.float32]]] = []
        self._sets: list[dict[str, ort.OrtValue]] = []
        for _ in range(2):
            if ort_device == "cpu":
                arrays = {n: np.zeros(shape, np.float32) for n, shape in self._shapes.items()}
                self._host_sets.append(arrays)
                self._sets.append(
                    {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in arrays.items()}
                )
            else:
                self._sets.append(
                    {
                        n: ort.OrtValue.ortvalue_from_shape_and_type(
                            shape, np.float32, ort_device, 0
                        )
                        for n, shape in self._shapes.items()
                    }
                )
        self._bindings = [self._make_binding(src, 1 - src) for src in (0, 1)]
        self._current = 0
        self.reset()

    def _make_binding(self, src: int, dst: int) -> ort.IOBinding:
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(FRAMES, self._frames_value)
        binding.bind_ortvalue_output(LOGITS, self._logits_value)
        for n in self.state_names:
            binding.bind_ortvalue_input(f"{n}_in", self._sets[src][n])
            binding.bind_ortvalue_output(f"{n}_out", self._sets[dst][n])
        return binding

    # -- Runtime protocol ----------------------------------------------------------------

    def reset(self) -> None:
        """Zero the state (both buffer sets) and start again from set A."""
        if self._host_sets:
            for arrays in self._host_sets:
                for a in arrays.values():
                    a.fill(0.0)
        else:
            for values in self._sets:
                for n, v in values.items():
                    v.update_inplace(np.zeros(self._shapes[n], np.float32))
        self._current = 0

    def step(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run one window and advance the state.

        Args:
            frames: ``[S, 2, H, W]`` event counts (any real dtype; copied into the bound
                float32 input buffer).

        Returns:
            ``logits [S, C]`` float32 (a new array; the bound buffer is reused).

        Raises:
            ValueError: If ``frames`` does not have :attr:`ModelInfo.window_shape`.
        """
        if frames.shape != self._frames_in.shape:
            self.info.check_window(frames)  # raises, naming the shapes
        np.copyto(self._frames_in, frames, casting="same_kind")
        self.session.run_with_iobinding(self._bindings[self._current])
        self._current = 1 - self._current
        return self._logits_out.copy()

    def state_norms(self) -> dict[str, float]:
        """L2 norm of every state tensor (the set the next call will read)."""
        out = {}
        for n, v in self._sets[self._current].items():
            a = self._host_sets[self._current][n] if self._host_sets else v.numpy()
            out[n] = float(np.linalg.norm(a.ravel().astype(np.float64)))
        return out

    def state(self) -> dict[str, npt.NDArray[np.float32]]:
        """A copy of the current state (name -> ``[1, ...]``), for tests and debugging."""
        if self._host_sets:
            return {n: a.copy() for n, a in self._host_sets[self._current].items()}
        return {n: v.numpy() for n, v in self._sets[self._current].items()}

    def set_state(self, state: Mapping[str, npt.NDArray[np.float32]]) -> None:
        """Overwrite the state the next call reads (tests, lock-step comparisons).

        Raises:
            ValueError: Missing/unknown names or wrong shapes.
        """
        _check_state(state, self._shapes)
        for n, value in self._sets[self._current].items():
            arr = np.ascontiguousarray(state[n], dtype=np.float32)
            if self._host_sets:
                np.copyto(self._host_sets[self._current][n], arr)
            else:
                value.update_inplace(arr)

    def __repr__(self) -> str:
        return (
            f"OrtRuntime({str(self.path)!r}, device={self.device!r}, threads={self.threads}, "
            f"preset={self.info.preset!r}, S={self.info.steps_per_window})"
        )


def _check_state(
    state: Mapping[str, npt.NDArray[np.float32]], shapes: Mapping[str, tuple[int, ...]]
) -> None:
    wrong = [
        f"{n}: {list(np.shape(state[n]))} != {list(shape)}"
        for n, shape in shapes.items()
        if n in state and tuple(np.shape(state[n])) != tuple(shape)
    ]
    missing = sorted(set(shapes) - set(state))
    unknown = sorted(set(state) - set(shapes))
    if wrong or missing or unknown:
        raise ValueError(
            f"state does not fit: missing {missing}, unknown {unknown}, wrong shapes {wrong}"
        )


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``smastream`` metadata of an exported ``.onnx`` file, read with onnxruntime
    (a core dependency, unlike the ``onnx`` package).

    Raises:
        FormatError: Not loadable, or no smastream metadata.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise FormatError(path, None, f"onnxruntime cannot load it ({exc})") from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise FormatError(path, None, "no smastream metadata: not exported by smastream")
    data: dict[str, Any] = json.loads(raw)
    return data
