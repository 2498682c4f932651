"""TensorRT backend (native TensorRT 10 Python API): engine build, INT8 calibration,
engine cache, and a stateful runtime with device-resident ping-pong state.

* Build: ``Builder`` → ``create_network(0)`` (explicit batch is the only mode in
  TensorRT 10; ``STRONGLY_TYPED`` is not used because it forbids the FP16/INT8 builder
  flags) → ``OnnxParser`` → ``BuilderConfig`` (workspace limit, ``FP16`` / ``INT8`` flags,
  an ``IInt8EntropyCalibrator2`` fed with real binned windows *and the state the network
  would carry at each of them*) → ``build_serialized_network``.
* Cache: an engine is valid only for the ONNX bytes, TensorRT version, GPU and precision
  it was built with. These four make its :class:`EngineKey`, stored in a JSON sidecar
  (``model.plan.json``) together with the model metadata (a plan file has no room for
  it). Loading an engine whose TensorRT version or GPU differs fails with a clear message.
* Run: the state lives on the GPU in two buffer sets; call ``n`` binds set A as
  ``<name>_in`` and set B as ``<name>_out`` with ``set_tensor_address`` and call ``n + 1``
  the other way round, so no state crosses to the host. One window is one
  ``execute_async_v3`` enqueue; with ``cuda_graph=True`` each of the two bindings is
  captured once as a CUDA graph and replayed.

TensorRT is optional and imported lazily. A CUDA device is checked for *before*
TensorRT is touched: without a driver, deserialising an engine segfaults instead of
raising. Device memory and streams come from torch (no pycuda dependency).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from smastream.errors import DependencyError, FormatError, SmastreamError

from .runtime import FRAMES, LOGITS, ModelInfo, check_state_io, model_info_from_metadata

INSTALL_HINT = (
    "install it with `pip install smastream[tensorrt]` on x86 with CUDA; "
    "on a Jetson it comes with JetPack"
)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
ENGINE_FORMAT = "smastream.tensorrt-engine"
ENGINE_FORMAT_VERSION = 1
DEFAULT_WORKSPACE_BYTES = 1 << 30


# -- availability ------------------------------------------------------------------------


def tensorrt_installed() -> bool:
    """Whether the ``tensorrt`` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def require_cuda() -> Any:
    """torch with a usable CUDA device, or a one-line error.

    Raises:
        DependencyError: torch is missing.
        SmastreamError: No CUDA device is visible.
    """
    if importlib.util.find_spec("torch") is None:
        raise DependencyError(
            "the TensorRT backend needs torch (a CUDA build) for GPU buffers and streams: "
            "pip install smastream[train]"
        )
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
        raise SmastreamError(
            "TensorRT needs an NVIDIA GPU, and torch sees no CUDA device here "
            "(use --backend onnxruntime on this machine)"
        )
    return torch


def require_tensorrt() -> Any:
    """Import TensorRT >= 10 after checking that it is installed and a GPU exists.

    Raises:
        DependencyError: TensorRT absent or too old (the message says how to install it).
        SmastreamError: No CUDA device.
    """
    if not tensorrt_installed():
        raise DependencyError(f"TensorRT is not installed: {INSTALL_HINT}")
    require_cuda()  # before touching TensorRT: no driver = segfault on deserialisation
    import tensorrt as trt

    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise DependencyError(
            f"TensorRT {trt.__version__} found, smastream needs >= 10: {INSTALL_HINT}"
        )
    return trt


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {PRECISIONS}")
    return precision


# -- cache key ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineKey:
    """What a serialized engine is valid for.

    Attributes:
        onnx_sha256: Hash of the ONNX file it was built from.
        tensorrt: TensorRT version that built it.
        gpu: GPU name it was built on (engines are GPU-specific).
        precision: ``fp32``, ``fp16`` or ``int8``.
    """

    onnx_sha256: str
    tensorrt: str
    gpu: str
    precision: str

    def file_stem(self) -> str:
        """A file-name-safe stem that differs whenever the key does."""
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu).strip("-").lower() or "gpu"
        return f"{self.onnx_sha256[:16]}.{self.precision}.trt{self.tensorrt}.{gpu}"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def engine_key(onnx_path: str | Path, precision: str, tensorrt: str, gpu: str) -> EngineKey:
    """The cache key of an engine built from ``onnx_path`` (pure apart from reading it)."""
    return EngineKey(file_sha256(onnx_path), str(tensorrt), str(gpu), _check_precision(precision))


def check_engine_key(
    stored: Mapping[str, Any], tensorrt: str, gpu: str, path: str | Path
) -> EngineKey:
    """Validate a sidecar's key against the running TensorRT and GPU.

    Returns:
        The stored key.

    Raises:
        FormatError: A malformed key.
        SmastreamError: Built by another TensorRT version or on another GPU (says which and
            how to rebuild).
    """
    try:
        key = EngineKey(
            **{k: str(stored[k]) for k in ("onnx_sha256", "tensorrt", "gpu", "precision")}
        )
    except (KeyError, TypeError) as exc:
        raise FormatError(path, None, f"engine sidecar has no valid key ({exc})") from None
    wrong = []
    if key.tensorrt != str(tensorrt):
        wrong.append(f"TensorRT {key.tensorrt} (this is {tensorrt})")
    if key.gpu != str(gpu):
        wrong.append(f"GPU {key.gpu!r} (this is {gpu!r})")
    if wrong:
        raise SmastreamError(
            f"{path}: engine was built for {' and '.join(wrong)}; engines are not portable: "
            f"rebuild it here with `smastream export CKPT --backend tensorrt`"
        )
    return key


def sidecar_path(plan: str | Path) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    p = Path(plan)
    return p.with_name(p.name + ".json")


def read_sidecar(plan: str | Path) -> dict[str, Any]:
    """The sidecar of an engine (key and model metadata).

    Raises:
        FormatError: Missing or not a smastream engine sidecar.
    """
    side = sidecar_path(plan)
    try:
        data = json.loads(side.read_text())
    except OSError:
        raise FormatError(
            plan,
            None,
            f"no sidecar {side.name}: build engines with `smastream export --backend tensorrt`",
        ) from None
    except ValueError as exc:
        raise FormatError(side, None, f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT:
        raise FormatError(side, None, f"not a {ENGINE_FORMAT} sidecar")
    if data.get("version") != ENGINE_FORMAT_VERSION:
        raise FormatError(side, None, f"sidecar version {data.get('version')!r} not supported")
    return data


def write_engine(
    plan: str | Path, engine: bytes, key: EngineKey, metadata: Mapping[str, Any]
) -> Path:
    """Write ``engine`` and its sidecar (both atomically). Returns the plan path."""
    plan = Path(plan)
    plan.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.with_name(plan.name + ".tmp")
    tmp.write_bytes(engine)
    os.replace(tmp, plan)
    side = sidecar_path(plan)
    tmp = side.with_name(side.name + ".tmp")
    record = {
        "format": ENGINE_FORMAT,
        "version": ENGINE_FORMAT_VERSION,
        "key": asdict(key),
        "metadata": dict(metadata),
    }
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, side)
    return plan


def default_cache_dir() -> Path:
    """``$SMASTREAM_CACHE/engines``, else ``$XDG_CACHE_HOME/smastream/engines``, else
    ``~/.cache/smastream/engines``."""
    root = os.environ.get("SMASTREAM_CACHE")
    if root:
        return Path(root) / "engines"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "smastream" / "engines"


# -- calibration -------------------------------------------------------------------------


def calibration_batches(
    onnx_path: str | Path, recordings: Iterable[Iterable[npt.NDArray[np.float32]]]
) -> Iterator[dict[str, npt.NDArray[np.float32]]]:
    """Every graph input for each calibration window: the frames and the state the network
    carries into it (run with ONNX Runtime over each recording's windows in order, state
    fed back, reset between recordings).

    Calibrating with zero state only would give the state inputs (membranes, ring
    buffers) a range they never have in use. Lazy: one batch in memory at a time.

    Args:
        onnx_path: The exported graph.
        recordings: For each recording, its ``[S, 2, H, W]`` windows in time order.

    Yields:
        ``{"frames": [S, 1, 2, H, W], "<name>_in": [1, ...], ...}`` float32.
    """
    from .ort_runtime import OrtRuntime

    rt = OrtRuntime(onnx_path, device="cpu")
    shape = (rt.info.steps_per_window, 1, *rt.info.frame_shape)
    for windows in recordings:
        rt.reset()
        for frames in windows:
            batch = {f"{n}_in": a for n, a in rt.state().items()}
            batch[FRAMES] = np.ascontiguousarray(frames, dtype=np.float32).reshape(shape)
            yield batch
            rt.step(frames)


def make_calibrator(
    batches: Iterable[Mapping[str, npt.NDArray[np.float32]]], cache: str | Path | None = None
) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``batches`` (see :func:`calibration_batches`).

    Args:
        batches: One mapping input name -> array per calibration batch (batch size 1).
        cache: Calibration cache file, read if present and written after calibration.
    """
    trt = require_tensorrt()
    torch = require_cuda()
    cache_path = None if cache is None else Path(cache)

    base: Any = trt.IInt8EntropyCalibrator2

    class EntropyCalibrator(base):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # required by the TensorRT bindings
            self._batches = iter(batches)
            self._device: dict[str, Any] = {}
            self.count = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            for name in names:
                host = torch.from_numpy(np.ascontiguousarray(batch[name], dtype=np.float32))
                buf = self._device.get(name)
                if buf is None or tuple(buf.shape) != tuple(host.shape):
                    buf = self._device[name] = torch.empty(host.shape, device="cuda")
                buf.copy_(host)
            torch.cuda.synchronize()
            self.count += 1
            return [int(self._device[name].data_ptr()) for name in names]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache_path is not None:
                cache_path.write_bytes(bytes(data))

    return EntropyCalibrator()


# -- build -------------------------------------------------------------------------------


def build_engine(
    onnx_path: str | Path,
    precision: str = "fp32",
    *,
    calibrator: Any = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> bytes:
    """Build a serialized engine from an exported graph.

    Args:
        onnx_path: Graph written by ``engine.export.export_onnx`` (static shapes).
        precision: ``fp32`` (TF32 off); ``fp16`` (FP16 kernels allowed, I/O stays float32);
            ``int8`` (INT8 with FP16 fallback; needs ``calibrator``).
        calibrator: From :func:`make_calibrator` (int8 only).
        workspace_bytes: Builder workspace limit.

    Raises:
        ValueError: Bad precision, or int8 without a calibrator.
        FormatError: The ONNX parser rejects the graph (its first errors are quoted).
        SmastreamError: The build fails.
    """
    _check_precision(precision)
    if precision == "int8" and calibrator is None:
        raise ValueError("int8 needs a calibrator (smastream export --int8 --calibration DIR)")
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is implied
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise FormatError(onnx_path, None, f"TensorRT's ONNX parser rejected the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp32":
        # TF32 is on by default on Ampere and later: 10-bit mantissas would move
        # membranes across the threshold; fp32 means fp32 here.
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SmastreamError(f"TensorRT could not build an engine from {onnx_path} ({precision})")
    return bytes(serialized)


def current_environment() -> tuple[str, str]:
    """``(TensorRT version, GPU name)`` of this machine (checks CUDA first)."""
    trt = require_tensorrt()
    torch = require_cuda()
    return str(trt.__version__), str(torch.cuda.get_device_name(torch.cuda.current_device()))


def build_or_load(
    onnx_path: str | Path,
    precision: str = "fp32",
    *,
    cache_dir: str | Path | None = None,
    out: str | Path | None = None,
    calibration: Iterable[Iterable[npt.NDArray[np.float32]]] | None = None,
) -> Path:
    """The engine for ``onnx_path`` at ``precision``: from the cache, or built and cached.

    Args:
        onnx_path: The exported graph.
        precision: See :func:`build_engine`.
        cache_dir: Cache folder (default :func:`default_cache_dir`); the file name encodes
            the :class:`EngineKey`.
        out: Also write the engine (and sidecar) here.
        calibration: Per recording, its ``[S, 2, H, W]`` windows in time order (int8 only;
            see :func:`calibration_batches`). Given, an int8 engine is always rebuilt
            (the cache key does not cover the calibration data); without it a cached int8
            engine is used.

    Returns:
        Path of the engine (``out`` if given, else the cache entry).
    """
    from .ort_runtime import read_onnx_metadata

    version, gpu = current_environment()
    key = engine_key(onnx_path, precision, version, gpu)
    metadata = read_onnx_metadata(onnx_path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache / f"{key.file_stem()}.plan"
    engine: bytes | None = None
    # New calibration data means a new int8 engine: the key does not cover the data.
    reuse = precision != "int8" or calibration is None
    if reuse and cached.is_file() and sidecar_path(cached).is_file():
        try:
            stored = read_sidecar(cached)
            if EngineKey(**stored["key"]) == key:
                engine = cached.read_bytes()
        except (FormatError, TypeError, KeyError):
            engine = None  # a damaged entry is rebuilt
    if engine is None:
        calibrator = None
        if precision == "int8":
            if calibration is None:
                raise ValueError("int8 needs calibration windows")
            calibrator = make_calibrator(calibration_batches(onnx_path, calibration))
        engine = build_engine(onnx_path, precision, calibrator=calibrator)
        write_engine(cached, engine, key, metadata)
    if out is not None:
        return write_engine(out, engine, key, metadata)
    return cached


# -- runtime -----------------------------------------------------------------------------


class TrtRuntime:
    """A stateful TensorRT engine; state stays on the GPU between calls.

    Args:
        plan: Serialized engine with its ``.json`` sidecar (from :func:`build_or_load`).
        cuda_graph: Capture the two ping-pong enqueues as CUDA graphs and replay them.

    Shapes: ``step(frames[S, 2, H, W] float32) -> logits[S, C] float32``.
    """

    def __init__(self, plan: str | Path, *, cuda_graph: bool = False) -> None:
        self.path = Path(plan)
        trt = require_tensorrt()
        torch = require_cuda()
        self._torch = torch
        side = read_sidecar(self.path)
        version, gpu = current_environment()
        key = check_engine_key(side.get("key", {}), version, gpu, self.path)
        meta = dict(side.get("metadata", {}))
        meta.update(precision=key.precision, cuda_graph=bool(cuda_graph), gpu=gpu, tensorrt=version)
        try:
            self.info: ModelInfo = model_info_from_metadata(meta, "tensorrt")
        except ValueError as exc:
            raise FormatError(sidecar_path(self.path), None, str(exc)) from None
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise FormatError(self.path, None, "TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        self._setup(trt)
        self._graphs: list[Any] = []
        if cuda_graph:
            self._capture()

    @classmethod
    def from_onnx(
        cls,
        onnx_path: str | Path,
        *,
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        cuda_graph: bool = False,
    ) -> TrtRuntime:
        """Build (or take from the cache) the engine of an exported graph and open it."""
        return cls(build_or_load(onnx_path, precision, cache_dir=cache_dir), cuda_graph=cuda_graph)

    def _setup(self, trt: Any) -> None:
        torch = self._torch
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        outputs = set(names) - inputs
        self.state_names = check_state_io([n for n in names if n in inputs], outputs, self.path)
        shapes: dict[str, tuple[int, ...]] = {}
        for n in names:
            if engine.get_tensor_dtype(n) != trt.float32:
                raise FormatError(self.path, None, f"engine tensor {n} is not float32")
            shapes[n] = tuple(int(d) for d in engine.get_tensor_shape(n))
        s = self.info.steps_per_window
        if shapes[FRAMES] != (s, 1, *self.info.frame_shape):
            raise FormatError(self.path, None, f"frames are {shapes[FRAMES]}, metadata says S={s}")
        dev = torch.device("cuda", torch.cuda.current_device())
        self.stream = torch.cuda.Stream(dev)
        self._frames = torch.zeros(shapes[FRAMES], device=dev)
        self._logits = torch.zeros(shapes[LOGITS], device=dev)
        self.num_classes = shapes[LOGITS][-1]
        self._host_frames = torch.zeros(shapes[FRAMES], pin_memory=True)
        self._host_logits = torch.zeros(shapes[LOGITS], pin_memory=True)
        self._sets = [
            {n: torch.zeros(shapes[f"{n}_in"], device=dev) for n in self.state_names}
            for _ in range(2)
        ]
        self.stream.wait_stream(torch.cuda.current_stream(dev))  # zeros were queued there
        self.context.set_tensor_address(FRAMES, int(self._frames.data_ptr()))
        self.context.set_tensor_address(LOGITS, int(self._logits.data_ptr()))
        self._current = 0
        self._bind(0)

    def _bind(self, src: int) -> None:
        """State set ``src`` in, the other set out (addresses only; nothing is copied)."""
        for n in self.state_names:
            self.context.set_tensor_address(f"{n}_in", int(self._sets[src][n].data_ptr()))
            self.context.set_tensor_address(f"{n}_out", int(self._sets[1 - src][n].data_ptr()))

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise SmastreamError("TensorRT execute_async_v3 failed")

    def _capture(self) -> None:
        """One CUDA graph per binding (A -> B and B -> A), after a warm-up enqueue each."""
        torch = self._torch
        graphs = []
        for src in (0, 1):
            self._bind(src)
            with torch.cuda.stream(self.stream):
                self._enqueue()  # TensorRT defers some setup to the first enqueue
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self._enqueue()
            graphs.append(graph)
        self._graphs = graphs
        self.reset()

    # -- Runtime protocol ----------------------------------------------------------------

    def reset(self) -> None:
        """Zero both state sets on the GPU; the next call reads set A."""
        torch = self._torch
        with torch.cuda.stream(self.stream):
            for tensors in self._sets:
                for t in tensors.values():
                    t.zero_()
        self.stream.synchronize()
        self._current = 0

    def step(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run one window ``frames [S, 2, H, W]`` -> ``logits [S, C]``; advances the state.

        Raises:
            ValueError: If ``frames`` does not have ``info.window_shape``.
        """
        self.info.check_window(frames)
        torch = self._torch
        np.copyto(
            self._host_frames.numpy().reshape(self.info.window_shape), frames, casting="same_kind"
        )
        src = self._current
        with torch.cuda.stream(self.stream):
            self._frames.copy_(self._host_frames, non_blocking=True)
            if self._graphs:
                self._graphs[src].replay()
            else:
                self._bind(src)
                self._enqueue()
            self._host_logits.copy_(self._logits, non_blocking=True)
        self.stream.synchronize()
        self._current = 1 - src
        return (
            self._host_logits.numpy().reshape(self.info.steps_per_window, self.num_classes).copy()
        )

    def state_norms(self) -> dict[str, float]:
        """L2 norm of every state tensor (the set the next call reads)."""
        return {n: float(t.double().norm().item()) for n, t in self._sets[self._current].items()}

    def state(self) -> dict[str, npt.NDArray[np.float32]]:
        """A host copy of the current state (name -> ``[1, ...]``)."""
        return {n: t.cpu().numpy() for n, t in self._sets[self._current].items()}
