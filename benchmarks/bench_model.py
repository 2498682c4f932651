"""SMA-SNN step latency (PyTorch, CPU) and multiply-adds per step, for both presets.

    python benchmarks/bench_model.py                 # paper + edge, 2 threads
    python benchmarks/bench_model.py --sweep         # also the edge candidates (width, input)

Prints, per configuration: parameters, multiply-adds per step at batch 1 (counted from the
layer shapes, see ``count_macs``), step latency p50/p99 at batch 1 in eval mode, the
effective GMAC/s, and the ratio of its p50 to the paper preset's p50 measured in the same
run (the baseline). The live budget for one step on two CPU cores is 5 ms.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from smastream.engine.model import (
    SMASNN,
    SMASNNConfig,
    count_macs,
    count_parameters,
    edge_config,
    paper_config,
)

BUDGET_MS = 5.0


@dataclass
class Result:
    name: str
    params: int
    macs: int
    sma_conv_macs: int
    p50_ms: float
    p99_ms: float


def measure(name: str, config: SMASNNConfig, steps: int, warmup: int) -> Result:
    """Latency of ``step`` at batch 1 with the state fed back, on Poisson event counts."""
    torch.manual_seed(0)
    model = SMASNN(config).eval()
    state = model.initial_state(1)
    frames = torch.poisson(torch.full((steps + warmup, 1, 2, *config.input_size), 0.5))
    times = []
    with torch.inference_mode():
        for i in range(steps + warmup):
            t0 = time.perf_counter()
            _, state = model.step(frames[i], state)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    macs = count_macs(config)
    p50, p99 = np.percentile(np.array(times) * 1e3, [50, 99])
    return Result(
        name,
        count_parameters(model),
        sum(macs.values()),
        sum(v for k, v in macs.items() if ".sma.conv" in k),
        float(p50),
        float(p99),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="timed steps for small nets")
    parser.add_argument("--paper-steps", type=int, default=8, help="timed steps, paper preset")
    parser.add_argument("--sweep", action="store_true", help="also time edge candidates")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    configs: list[tuple[str, SMASNNConfig, int, int]] = [
        ("paper 128x128", paper_config(temporal="causal"), args.paper_steps, 2),
        ("edge (default)", edge_config(), args.steps, 20),
    ]
    if args.sweep:
        for width, size in [(1 / 16, 64), (1 / 4, 64), (1 / 8, 128), (1 / 4, 128)]:
            configs.append(
                (
                    f"edge w={width:g} {size}x{size}",
                    edge_config(width=width, input_size=size),
                    args.steps // 3,
                    10,
                )
            )

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, eval, "
        f"step form, causal temporal attention"
    )
    results = [measure(name, cfg, steps, warmup) for name, cfg, steps, warmup in configs]
    baseline = results[0].p50_ms
    header = (
        f"{'config':24s} {'params':>10s} {'MAC/step':>10s} {'SMA conv':>10s} "
        f"{'p50 ms':>9s} {'p99 ms':>9s} {'GMAC/s':>7s} {'vs paper':>9s} {'budget':>7s}"
    )
    print(header)
    for r in results:
        print(
            f"{r.name:24s} {r.params / 1e6:9.3f}M {r.macs / 1e9:9.4f}G "
            f"{r.sma_conv_macs / 1e9:9.4f}G {r.p50_ms:9.2f} {r.p99_ms:9.2f} "
            f"{r.macs / 1e9 / (r.p50_ms / 1e3):7.1f} {r.p50_ms / baseline:9.4f} "
            f"{'ok' if r.p50_ms < BUDGET_MS else 'over':>7s}"
        )


if __name__ == "__main__":
    main()
