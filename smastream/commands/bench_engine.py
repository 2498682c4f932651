"""``smastream bench-engine``: per-window latency and throughput of one runtime.

    smastream bench-engine --preset edge                         # ONNX Runtime, S=4
    smastream bench-engine --preset paper-causal --backend torch --steps-per-window 1
    smastream bench-engine --model model.onnx --threads 1 --input recordings/demo.aedat4
    smastream bench-engine --model model.plan --backend tensorrt --json

Each call is one window (``S`` bins) with the state carried from the previous call, as
in the live path. Inputs are random Poisson spike counts (``--rate`` events per pixel
per bin), or the binned windows of a recording (``--input``, cycled). A ``--preset``
is benchmarked with fresh random weights (exported to a temporary ONNX file for
onnxruntime and tensorrt): latency depends on the architecture, not on the weights.
After ``--warmup`` calls, ``--windows`` calls are timed one by one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from smastream.commands.common import (
    int_in,
    max_threads,
    positive_float,
    positive_int,
    seed_type,
    threads_type,
)

BACKENDS = ("onnxruntime", "torch", "tensorrt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=BACKENDS, default="onnxruntime", help="runtime (default onnxruntime)"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", type=Path, help="ONNX model, TensorRT engine or checkpoint")
    what.add_argument(
        "--preset", choices=("edge", "paper-causal"), help="random weights of a preset"
    )
    parser.add_argument(
        "--steps-per-window",
        type=positive_int,
        help="bins per call (presets: default 4; a model file fixes its own)",
    )
    parser.add_argument(
        "--windows", type=positive_int, default=100, help="timed calls (default 100)"
    )
    parser.add_argument(
        "--warmup",
        type=int_in(0, 1_000_000, example="10"),
        default=10,
        help="untimed calls first (default 10)",
    )
    parser.add_argument(
        "--threads", type=threads_type, help=f"CPU threads of the runtime (1..{max_threads()})"
    )
    parser.add_argument(
        "--input", type=Path, help="a recording: time its windows instead of random spikes"
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=0.3,
        help="random input: mean events per pixel and bin (default 0.3)",
    )
    parser.add_argument("--device", help="torch/onnxruntime device: cpu or cuda")
    parser.add_argument("--cuda-graph", action="store_true", help="torch/tensorrt: CUDA graphs")
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="tensorrt precision for --preset (int8 needs `smastream export --int8`)",
    )
    parser.add_argument("--seed", type=seed_type, default=0, help="random weights and inputs")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


@dataclass(frozen=True)
class BenchResult:
    """Latency per call (one window) and throughput.

    Attributes:
        backend, preset, device, threads: What ran.
        steps_per_window: ``S``.
        windows: Timed calls.
        input: ``"random"`` or the recording's path.
        p50_ms, p95_ms, p99_ms, mean_ms, max_ms: Per-call latency.
        windows_per_s, steps_per_s: Throughput (timed calls / their total time).
    """

    backend: str
    preset: str
    device: str
    threads: int | None
    steps_per_window: int
    windows: int
    input: str
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    windows_per_s: float
    steps_per_s: float


def time_calls(
    runtime: Any, windows: Sequence[npt.NDArray[np.float32]], count: int, warmup: int
) -> npt.NDArray[np.float64]:
    """Run ``warmup`` then ``count`` windows (cycling ``windows``); return each timed call's
    latency in seconds. The state is reset once before the warm-up."""
    if not windows:
        raise ValueError("no windows to time")
    runtime.reset()
    for i in range(max(0, warmup)):
        runtime.step(windows[i % len(windows)])
    out = np.empty(count, np.float64)
    for i in range(count):
        frames = windows[(warmup + i) % len(windows)]
        t0 = time.perf_counter()
        runtime.step(frames)
        out[i] = time.perf_counter() - t0
    return out


def summarize(latency_s: npt.NDArray[np.float64], steps: int) -> dict[str, float]:
    """Percentiles (ms) and throughput of per-call latencies."""
    ms = latency_s * 1e3
    total = float(latency_s.sum())
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
        "windows_per_s": len(ms) / total if total > 0 else float("inf"),
        "steps_per_s": len(ms) * steps / total if total > 0 else float("inf"),
    }


def random_windows(
    shape: tuple[int, ...], rate: float, count: int, seed: int
) -> list[npt.NDArray[np.float32]]:
    """``count`` windows of Poisson(``rate``) spike counts, float32."""
    rng = np.random.default_rng(seed)
    return [rng.poisson(rate, size=shape).astype(np.float32) for _ in range(count)]


def open_preset_runtime(
    preset: str,
    backend: str,
    steps: int,
    workdir: Path,
    *,
    seed: int = 0,
    threads: int | None = None,
    device: str | None = None,
    cuda_graph: bool = False,
    precision: str = "fp32",
) -> Any:
    """A runtime over fresh random weights of ``preset`` (ONNX exported into ``workdir``)."""
    import torch

    from smastream.engine.export import export_onnx
    from smastream.engine.model import SMASNN, preset_config

    torch.manual_seed(seed)
    model = SMASNN(preset_config(preset)).eval()
    if backend == "torch":
        from smastream.engine.torch_runtime import TorchRuntime

        return TorchRuntime(
            model, steps_per_window=steps, device=device, cuda_graph=cuda_graph, threads=threads
        )
    onnx_path = workdir / f"{preset}-s{steps}.onnx"
    export_onnx(model, onnx_path, steps_per_window=steps, training_data="random weights")
    if backend == "onnxruntime":
        from smastream.engine.ort_runtime import OrtRuntime

        return OrtRuntime(onnx_path, threads=threads, device=device)
    from smastream.engine.trt_runtime import TrtRuntime

    return TrtRuntime.from_onnx(onnx_path, precision=precision, cuda_graph=cuda_graph)


def _model_options(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if backend in ("onnxruntime", "torch"):
        if args.threads:
            options["threads"] = args.threads
        if args.device:
            options["device"] = args.device
    if backend in ("torch", "tensorrt") and args.cuda_graph:
        options["cuda_graph"] = True
    if backend == "torch" and args.steps_per_window:
        options["steps_per_window"] = args.steps_per_window
    if backend == "tensorrt" and args.model.suffix.lower() == ".onnx":
        options["precision"] = args.precision
    return options


def run(args: argparse.Namespace) -> int:
    from smastream.errors import SmastreamError

    if args.backend == "tensorrt":
        from smastream.engine.trt_runtime import require_tensorrt

        require_tensorrt()
    with tempfile.TemporaryDirectory(prefix="smastream-bench-") as tmp:
        if args.preset:
            steps = args.steps_per_window or 4
            runtime = open_preset_runtime(
                args.preset,
                args.backend,
                steps,
                Path(tmp),
                seed=args.seed,
                threads=args.threads,
                device=args.device,
                cuda_graph=args.cuda_graph,
                precision=args.precision,
            )
        else:
            from smastream.engine.runtime import backend_for_path, open_runtime

            backend = backend_for_path(args.model, args.backend)
            runtime = open_runtime(args.model, backend, **_model_options(args, backend))
        info = runtime.info
        if args.steps_per_window and args.steps_per_window != info.steps_per_window:
            raise SmastreamError(
                f"{args.model} runs {info.steps_per_window} steps per window, not "
                f"{args.steps_per_window} (re-export it with --steps-per-window)"
            )
        if args.input is not None:
            from smastream.commands.export import recording_windows

            windows = list(
                recording_windows(args.input, info.input_size, info.bin_us, info.steps_per_window)
            )
            if not windows:
                raise SmastreamError(
                    f"{args.input}: no complete window of {info.steps_per_window} bins of "
                    f"{info.bin_us / 1000:g} ms"
                )
            source = str(args.input)
        else:
            windows = random_windows(info.window_shape, args.rate, 16, args.seed)
            source = f"random Poisson {args.rate:g}/pixel/bin"
        latency = time_calls(runtime, windows, args.windows, args.warmup)
    result = BenchResult(
        backend=info.backend,
        preset=info.preset,
        device=str(info.extra.get("device", getattr(runtime, "device", "cpu"))),
        threads=args.threads,
        steps_per_window=info.steps_per_window,
        windows=args.windows,
        input=source,
        **summarize(latency, info.steps_per_window),
    )
    print(json.dumps(asdict(result)) if args.json else format_table([result]))
    return 0


def format_table(results: Sequence[BenchResult]) -> str:
    """A small fixed-width table, one row per result."""
    head = (
        f"{'backend':<12} {'preset':<7} {'S':>3} {'calls':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'windows/s':>10} {'steps/s':>9}"
    )
    rows = [
        f"{r.backend:<12} {r.preset:<7} {r.steps_per_window:>3} {r.windows:>6} "
        f"{r.p50_ms:>8.2f} {r.p95_ms:>8.2f} {r.p99_ms:>8.2f} {r.windows_per_s:>10.1f} "
        f"{r.steps_per_s:>9.1f}"
        for r in results
    ]
    return "\n".join([head, *rows])
