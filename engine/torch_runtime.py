"""PyTorch backend: the reference, straight from a checkpoint (no export, BN unfolded).

On the CPU it runs ``model.step`` S times per call, state kept as tensors. On a CUDA
device the state stays on the GPU in static buffers, and with ``cuda_graph=True`` the
whole window (S steps plus the write-back of the next state into the static buffers) is
captured once as a CUDA graph and replayed per call: one host launch per window.
Needs torch and onnx (the ``train`` extra).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from .export import DEFAULT_STEPS_PER_WINDOW, bin_us_of, export_metadata, steps_of
from .model import SMASNN, load_checkpoint
from .runtime import ModelInfo, model_info_from_metadata

#: Warm-up calls on a side stream before a CUDA graph is captured (cuDNN algorithm
#: selection and the caching allocator must settle outside the capture).
GRAPH_WARMUP = 3


_F = TypeVar("_F", bound=Callable[..., Any])


@contextlib.contextmanager
def flush_denormal() -> Iterator[None]:
    """Flush denormal floats to zero on the CPU inside the block, then restore the previous mode.

    Membranes halve every quiet step and reach the denormal range after ~6 s of silence at
    50 ms bins; denormal arithmetic is ~30x slower on CPUs. The mode is process-global
    (it changes every float computation of the process), so the block puts back whatever
    mode the caller had (torch has no getter: :func:`flush_denormal_enabled` probes it).
    """
    previous = flush_denormal_enabled()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


def flush_denormal_enabled() -> bool:
    """Whether the CPU currently flushes denormal floats to zero (probed by one multiply)."""
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    return bool((tiny * torch.ones(1, dtype=torch.float32)).item() == 0.0)


def with_flush_denormal(fn: _F) -> _F:
    """Decorator form of :func:`flush_denormal`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with flush_denormal():
            return fn(*args, **kwargs)

    return cast(_F, wrapper)


class TorchRuntime:
    """A stateful PyTorch runtime over an :class:`~smastream.engine.model.SMASNN`.

    Args:
        model: The network (put in eval mode and moved to ``device``; not copied).
        steps_per_window: ``S``, bins per call.
        bin_us: Bin width the model expects (for :attr:`info`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (default: CUDA when available).
        cuda_graph: Capture each window as a CUDA graph (CUDA devices only).
        threads: ``torch.set_num_threads`` (process-wide; CPU only).
        training_data, extra: Stored in :attr:`info` like an export's metadata.

    Shapes: ``step(frames[S, 2, H, W]) -> logits[S, C]`` float32.
    """

    def __init__(
        self,
        model: SMASNN,
        *,
        steps_per_window: int = DEFAULT_STEPS_PER_WINDOW,
        bin_us: int | None = None,
        device: str | torch.device | None = None,
        cuda_graph: bool = False,
        threads: int | None = None,
        training_data: str = "unspecified",
        extra: dict[str, Any] | None = None,
    ) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available to torch")
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph needs a CUDA device, got device {str(self.device)!r}")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads!r}")
            torch.set_num_threads(int(threads))
        extra = dict(extra or {})
        bin_value, bin_source = bin_us_of(extra, bin_us)
        meta = export_metadata(
            model.config,
            bin_us=bin_value,
            steps_per_window=steps_per_window,
            state_spec=model.state_spec(),
            training_data=training_data,
            extra=extra,
        )
        meta.update(device=str(self.device), cuda_graph=bool(cuda_graph), bin_us_source=bin_source)
        self.info: ModelInfo = model_info_from_metadata(meta, "torch")
        self.model = model.to(self.device).eval()
        self.names = model.state_names()
        s = self.info.steps_per_window
        h, w = model.config.input_size
        self._frames = torch.zeros(s, model.config.in_channels, h, w, device=self.device)
        self._state: dict[str, Tensor] = dict(self.model.initial_state(1, self.device))
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_logits: Tensor | None = None
        if self.device.type == "cuda":
            self._host_frames = torch.zeros(self._frames.shape, pin_memory=True)
            self._host_logits = torch.zeros(s, model.config.num_classes, pin_memory=True)
        if cuda_graph:
            self._capture()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        steps_per_window: int | None = None,
        bin_us: int | None = None,
        device: str | None = None,
        cuda_graph: bool = False,
        threads: int | None = None,
    ) -> TorchRuntime:
        """Open a checkpoint written by ``engine.model.save_checkpoint``.

        ``steps_per_window`` and ``bin_us`` come from the arguments, else the
        checkpoint's ``extra``, else the defaults (``info.extra["bin_us_source"]`` says
        where the bin width came from). Class names as in the export.
        """
        model, extra = load_checkpoint(path, map_location="cpu")
        training = extra.get("training_data", "unspecified")
        return cls(
            model,
            steps_per_window=steps_of(extra, steps_per_window),
            bin_us=bin_us,
            device=device,
            cuda_graph=cuda_graph,
            threads=threads,
            training_data=str(training),
            extra=extra,
        )

    # -- the window ----------------------------------------------------------------------

    def _run(self, write_back: bool) -> Tensor:
        """S steps from the static frames/state; returns logits [S, C] (no host sync)."""
        current: dict[str, Tensor] = self._state
        logits = []
        with torch.no_grad():
            for t in range(self.info.steps_per_window):
                y, nxt = self.model.step(self._frames[t : t + 1], current)
                current = dict(nxt)
                logits.append(y)
            if write_back:  # static buffers: the CUDA graph reads and writes the same memory
                for n in self.names:
                    self._state[n].copy_(current[n])
            else:
                self._state = current
            return torch.cat(logits, dim=0)

    def _capture(self) -> None:
        """Warm up on a side stream, capture one window, then zero the state."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                self._run(write_back=True)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_logits = self._run(write_back=True)
        self._graph = graph
        self.reset()

    # -- Runtime protocol ----------------------------------------------------------------

    def reset(self) -> None:
        """Zero every state tensor in place (the CUDA graph keeps its addresses)."""
        with torch.no_grad():
            for t in self._state.values():
                t.zero_()

    @with_flush_denormal
    def step(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run one window ``frames [S, 2, H, W]`` -> ``logits [S, C]``; advances the state.

        Raises:
            ValueError: If ``frames`` does not have ``info.window_shape``.
        """
        self.info.check_window(frames)
        src = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        if self.device.type != "cuda":
            self._frames.copy_(src)
            return self._run(write_back=False).numpy().copy()
        self._host_frames.copy_(src)
        self._frames.copy_(self._host_frames, non_blocking=True)
        if self._graph is not None:
            self._graph.replay()
            assert self._graph_logits is not None
            out = self._graph_logits
        else:
            out = self._run(write_back=True)
        self._host_logits.copy_(out, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return self._host_logits.numpy().copy()

    def state_norms(self) -> dict[str, float]:
        """L2 norm of every state tensor."""
        return {n: float(t.double().norm().item()) for n, t in self._state.items()}

    def state(self) -> dict[str, npt.NDArray[np.float32]]:
        """A copy of the current state (name -> ``[1, ...]``) on the host."""
        return {n: t.detach().cpu().numpy().copy() for n, t in self._state.items()}

    def set_state(self, state: Mapping[str, npt.NDArray[np.float32]]) -> None:
        """Overwrite the state the next call reads (tests, lock-step comparisons).

        Raises:
            ValueError: Missing/unknown names or wrong shapes.
        """
        spec = {n: (1, *shape) for n, shape in self.model.state_spec()}
        wrong = [n for n in spec if n in state and tuple(np.shape(state[n])) != spec[n]]
        missing = sorted(set(spec) - set(state))
        unknown = sorted(set(state) - set(spec))
        if wrong or missing or unknown:
            raise ValueError(
                f"state does not fit: missing {missing}, unknown {unknown}, wrong shapes {wrong}"
            )
        with torch.no_grad():
            for n in self.names:
                self._state[n].copy_(torch.from_numpy(np.asarray(state[n], dtype=np.float32)))

    def __repr__(self) -> str:
        return (
            f"TorchRuntime(preset={self.info.preset!r}, device={str(self.device)!r}, "
            f"cuda_graph={self._graph is not None}, S={self.info.steps_per_window})"
        )
