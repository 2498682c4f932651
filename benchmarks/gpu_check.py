"""One prepared check for a CUDA machine: the torch CUDA backend, eager and CUDA graph.

    python benchmarks/gpu_check.py                  # prints a JSON summary on stdout
    python benchmarks/gpu_check.py --out gpu.json   # and writes it

For each preset (``edge`` and ``paper``, S=4, batch 1, random weights made to spike):

* per-window latency p50/p95/p99 of ``TorchRuntime`` on the GPU, eager and replayed as a
  CUDA graph (state kept on the GPU in both);
* the CUDA graph against eager over the same windows (they must agree);
* parity of the GPU against ONNX Runtime on the CPU, lock-step: both start every window
  from the torch state, the torch state is fed back window after window. Windows where
  a membrane within float rounding of the threshold fires on one side only ("flip
  windows") are counted; the others must match to 1e-4 with the same classes.
* if TensorRT is installed: fp32 and fp16 engines of ``edge`` (latency, CUDA graph,
  and the same lock-step-free parity against ONNX Runtime, first 20 windows).

TF32 is switched off (``torch.backends.*.allow_tf32 = False``): with it, cuDNN's 10-bit
mantissas move membranes across the threshold and parity means nothing. Without a CUDA
device it exits at once with status 2 and a one-line message. Each part records its own
error instead of stopping the others. About 1-3 minutes on an H100.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from smastream.commands.bench_engine import random_windows, summarize, time_calls
from smastream.engine.export import export_onnx
from smastream.engine.model import SMASNN, preset_config
from smastream.engine.ort_runtime import OrtRuntime
from smastream.engine.torch_runtime import TorchRuntime

TOL = 1e-4
RATE = 0.3


def spiking_model(preset: str, seed: int = 0) -> SMASNN:
    """Random weights, real-valued BN statistics (measured, then randomised) and an
    excited head, so that every layer spikes (same recipe as tests/engine/test_export.py)."""
    torch.manual_seed(seed)
    model = SMASNN(preset_config(preset))
    g = torch.Generator().manual_seed(seed + 1)
    h, w = model.config.input_size
    x = torch.poisson(torch.full((2, 1, 2, h, w), RATE), generator=g)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        model.sequence(x)
        model.eval()
        for bn in bns:
            assert bn.running_mean is not None and bn.running_var is not None
            c = bn.num_features
            bn.running_mean += 0.1 * bn.running_var.sqrt() * torch.randn(c, generator=g)
            bn.running_var *= torch.empty(c).uniform_(0.5, 2.0, generator=g)
            bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=g))
            bn.bias.copy_(torch.empty(c).uniform_(-0.2, 0.6, generator=g))
        for fc in model.head.hidden:
            cast(nn.Linear, fc).weight.mul_(10.0)
    return model.eval()


def lockstep(ref: TorchRuntime, rt: OrtRuntime, windows: list[np.ndarray]) -> dict[str, Any]:
    """GPU torch vs CPU ORT, both from the torch state at every window."""
    ref.reset()
    clean, flips, mismatch = 0.0, 0, 0
    for frames in windows:
        rt.set_state(ref.state())
        a, b = ref.step(frames), rt.step(frames)
        sa, sb = ref.state(), rt.state()
        if any(np.abs(sa[n] - sb[n]).max() > TOL for n in sa):
            flips += 1
            continue
        clean = max(clean, float(np.abs(a - b).max()))
        mismatch += int((a.argmax(1) != b.argmax(1)).sum())
    return {
        "windows": len(windows),
        "flip_windows": flips,
        "clean_max_abs_diff": clean,
        "clean_class_mismatches": mismatch,
        "ok": clean <= TOL and mismatch == 0 and flips <= len(windows) // 4,
    }


def guarded(summary: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    """Run one part; record its result or its error (the other parts still run)."""
    t0 = time.perf_counter()
    try:
        summary[key] = fn()
    except Exception as exc:  # a report, not a crash: the lead sees every part
        summary[key] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    print(f"  {key}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def check_preset(preset: str, steps: int, n: int, n_parity: int, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"steps_per_window": steps}
    model = spiking_model(preset)
    onnx_path = tmp / f"{preset}.onnx"
    export_onnx(model, onnx_path, steps_per_window=steps)
    shape = (steps, 2, *model.config.input_size)
    windows = random_windows(shape, RATE, 16, 1)
    eager = TorchRuntime(copy.deepcopy(model), steps_per_window=steps, device="cuda")
    graph = TorchRuntime(
        copy.deepcopy(model), steps_per_window=steps, device="cuda", cuda_graph=True
    )
    guarded(out, "eager", lambda: summarize(time_calls(eager, windows, n, 20), steps))
    guarded(out, "cuda_graph", lambda: summarize(time_calls(graph, windows, n, 20), steps))

    def graph_vs_eager() -> dict[str, Any]:
        eager.reset()
        graph.reset()
        worst = max(float(np.abs(eager.step(w) - graph.step(w)).max()) for w in windows)
        return {"max_abs_diff": worst, "ok": worst <= TOL}

    guarded(out, "graph_vs_eager", graph_vs_eager)
    ort_rt = OrtRuntime(onnx_path)
    parity_windows = random_windows(shape, RATE, n_parity, 2)
    guarded(out, "parity_vs_ort_cpu", lambda: lockstep(eager, ort_rt, parity_windows))
    eager_p50 = out.get("eager", {}).get("p50_ms")
    graph_p50 = out.get("cuda_graph", {}).get("p50_ms")
    if eager_p50 and graph_p50:
        out["graph_speedup_p50"] = eager_p50 / graph_p50
    return out


def check_tensorrt(n: int, tmp: Path) -> dict[str, Any]:
    from smastream.engine.trt_runtime import TrtRuntime, build_or_load, tensorrt_installed

    if not tensorrt_installed():
        return {"skipped": "TensorRT is not installed"}
    out: dict[str, Any] = {}
    model = spiking_model("edge")
    onnx_path = tmp / "edge-trt.onnx"
    export_onnx(model, onnx_path, steps_per_window=4)
    windows = random_windows((4, 2, 64, 64), RATE, 16, 1)
    for precision in ("fp32", "fp16"):

        def one(precision: str = precision) -> dict[str, Any]:
            t0 = time.perf_counter()
            plan = build_or_load(onnx_path, precision, cache_dir=tmp / "engines")
            res: dict[str, Any] = {"build_s": time.perf_counter() - t0}
            for graph in (False, True):
                rt = TrtRuntime(plan, cuda_graph=graph)
                res["cuda_graph" if graph else "enqueue"] = summarize(
                    time_calls(rt, windows, n, 20), 4
                )
            ref, rt = OrtRuntime(onnx_path), TrtRuntime(plan)
            diffs = [float(np.abs(ref.step(w) - rt.step(w)).max()) for w in windows[:20]]
            res["free_running_max_abs_diff_20_windows"] = max(diffs)
            return res

        guarded(out, precision, one)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=300, help="timed calls per variant")
    parser.add_argument("--parity-windows", type=int, default=100, help="edge parity windows")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device visible to torch; run this on a GPU machine", file=sys.stderr
        )
        return 2
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    import onnxruntime as ort

    summary: dict[str, Any] = {
        "card": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "onnxruntime": ort.__version__,
        "tf32": False,
        "cpu_threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        guarded(
            summary, "edge", lambda: check_preset("edge", 4, args.windows, args.parity_windows, tmp)
        )
        guarded(
            summary,
            "paper",
            lambda: check_preset("paper-causal", 4, max(50, args.windows // 3), 20, tmp),
        )
        guarded(summary, "tensorrt", lambda: check_tensorrt(args.windows, tmp))
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
