"""Stateful windows vs stateless re-runs, and per-window latency of the runtimes (CPU).

    python benchmarks/bench_engine.py                 # edge (ORT, torch) + paper reference
    python benchmarks/bench_engine.py --quick         # fewer calls, no paper
    python benchmarks/bench_engine.py --threads 2

1. **Stateful beats stateless.** A stateless pipeline that must see a context of T bins
   re-runs all T bins at every hop (here T=16 bins, hop = S=4 bins); the stateful one
   runs only the S new bins per hop, its state carrying the rest. Both run as ONNX
   Runtime graphs of the ``edge`` preset (S=4 and S=16); the printed ratio is the
   stateless cost per hop over the stateful cost per hop, measured in the same run
   (expected near T/S = 4).
2. **Per-window latency**, one call = one S=4 window with the state fed back: ``edge``
   on ONNX Runtime (1 and 2 threads; target p99 < 20 ms on this 2-core CPU), ``edge`` on
   PyTorch (the reference), and ``paper`` on ONNX Runtime for reference (S=1, a handful
   of calls: ~12 GMAC per step).

Inputs are Poisson(0.3) spike counts; weights random (latency does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smastream.commands.bench_engine import random_windows, summarize, time_calls
from smastream.engine.export import export_onnx
from smastream.engine.model import SMASNN, preset_config
from smastream.engine.ort_runtime import OrtRuntime
from smastream.engine.torch_runtime import TorchRuntime

TARGET_P99_MS = 20.0
CONTEXT = 16  # T: bins a stateless pipeline re-runs per hop
HOP = 4  # S: bins per hop (= per stateful window)


class Stateless:
    """A stateless runtime: every call resets and runs a full context window."""

    def __init__(self, runtime: OrtRuntime) -> None:
        self.runtime = runtime
        self.info = runtime.info

    def reset(self) -> None:
        self.runtime.reset()

    def step(self, frames: np.ndarray) -> np.ndarray:
        self.runtime.reset()
        return self.runtime.step(frames)


def _row(name: str, stats: dict[str, float], steps: int) -> str:
    return (
        f"{name:<38} {steps:>3} {stats['p50_ms']:>8.2f} {stats['p95_ms']:>8.2f} "
        f"{stats['p99_ms']:>8.2f} {stats['windows_per_s']:>10.1f} {stats['steps_per_s']:>9.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200, help="timed calls per runtime")
    parser.add_argument("--threads", type=int, default=1, help="ORT threads for the ratio")
    parser.add_argument("--quick", action="store_true", help="40 calls, no paper preset")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    n = 40 if args.quick else args.windows
    warmup = 10
    torch.set_num_threads(1)  # 2 OpenMP threads on a loaded 2-core machine thrash
    results: dict[str, Any] = {}
    print(
        f"{'runtime':<38} {'S':>3} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'windows/s':>10} {'steps/s':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        edge = SMASNN(preset_config("edge")).eval()
        paths = {}
        for s in (HOP, CONTEXT):
            paths[s] = Path(tmp) / f"edge-s{s}.onnx"
            export_onnx(edge, paths[s], steps_per_window=s)

        # 1. stateful hop vs stateless context re-run, same threads, same run
        stateful = OrtRuntime(paths[HOP], threads=args.threads)
        stateless = Stateless(OrtRuntime(paths[CONTEXT], threads=args.threads))
        hop_windows = random_windows(stateful.info.window_shape, 0.3, 16, 0)
        ctx_windows = random_windows(stateless.info.window_shape, 0.3, 16, 1)
        a = summarize(time_calls(stateful, hop_windows, n, warmup), HOP)
        b = summarize(time_calls(stateless, ctx_windows, n, warmup), CONTEXT)
        print(_row(f"edge ORT stateful hop ({args.threads}t)", a, HOP))
        print(_row(f"edge ORT stateless T={CONTEXT} rerun ({args.threads}t)", b, CONTEXT))
        ratio_p50 = b["p50_ms"] / a["p50_ms"]
        ratio_mean = b["mean_ms"] / a["mean_ms"]
        results["stateful_hop"] = a
        results["stateless_context"] = b
        results["stateless_over_stateful_p50"] = ratio_p50
        results["stateless_over_stateful_mean"] = ratio_mean

        # 2. per-window latency of the runtimes
        for threads in (1, 2):
            rt = OrtRuntime(paths[HOP], threads=threads)
            st = summarize(time_calls(rt, hop_windows, n, warmup), HOP)
            results[f"edge_ort_{threads}t"] = st
            print(_row(f"edge ORT S={HOP} ({threads} thread{'s' * (threads > 1)})", st, HOP))
        ref = TorchRuntime(edge, steps_per_window=HOP, device="cpu")
        st = summarize(time_calls(ref, hop_windows, max(10, n // 4), 3), HOP)
        results["edge_torch_1t"] = st
        print(_row("edge torch S=4 (1 thread, reference)", st, HOP))
        if not args.quick:
            paper_path = Path(tmp) / "paper-s1.onnx"
            torch.manual_seed(0)
            paper = SMASNN(preset_config("paper-causal")).eval()
            export_onnx(paper, paper_path, steps_per_window=1)
            rt = OrtRuntime(paper_path, threads=2)
            windows = random_windows(rt.info.window_shape, 0.3, 4, 2)
            st = summarize(time_calls(rt, windows, 8, 2), 1)
            results["paper_ort_2t_s1"] = st
            print(_row("paper ORT S=1 (2 threads, reference)", st, 1))

    p99 = results["edge_ort_1t"]["p99_ms"]
    print(
        f"\nstateless (T={CONTEXT} re-run per hop) / stateful (S={HOP} per hop): "
        f"{ratio_p50:.2f}x at p50, {ratio_mean:.2f}x mean (ideal {CONTEXT / HOP:.0f}x)"
    )
    best = min(results["edge_ort_1t"]["p99_ms"], results["edge_ort_2t"]["p99_ms"])
    verdict = "meets" if best < TARGET_P99_MS else "misses"
    print(
        f"edge ORT S=4 p99: {p99:.2f} ms (1 thread), "
        f"{results['edge_ort_2t']['p99_ms']:.2f} ms (2 threads): {verdict} the "
        f"{TARGET_P99_MS:.0f} ms target; ORT/torch p50 speed-up "
        f"{results['edge_torch_1t']['p50_ms'] / results['edge_ort_1t']['p50_ms']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
