"""One training step of the demo network on the CPU: forward, backward and AdamW.

    python benchmarks/bench_train_step.py              # 12 rounds, 2 threads
    python benchmarks/bench_train_step.py --rounds 20 --threads 2

The demo configuration (``edge``, width 3/16, 64×64, 12 outputs, causal SMA with AZO) on a
stream-protocol batch: 16 lanes × 16 steps of sparse event counts. Two forms of
``LIF.sequence`` are timed, interleaved in one process so that machine load hits both:

- ``indexed`` (the baseline): ``x[t]`` for each step, as the code did before. Each select's
  backward zero-fills a full ``[T, ...]`` gradient and adds it to the sum, T times per
  layer.
- ``unbind`` (the code now): ``x.unbind(0)``, whose backward is one stack.

Prints the median, min and max seconds of each, and the ratio of the medians (now /
baseline). The gradients of both forms are equal bit for bit
(``tests/engine/test_lif.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from smastream.engine.lif import LIF
from smastream.engine.model import SMASNN, preset_config

_Sequence = Callable[[LIF, Tensor, Tensor], tuple[Tensor, Tensor]]


def indexed_sequence(self: LIF, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The baseline: the steps taken with ``x[t]``."""
    out = []
    for t in range(x.shape[0]):
        s, v = self(x[t], v)
        out.append(s)
    return torch.stack(out), v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=12, help="timed steps of each form")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="lanes")
    ap.add_argument("--steps", type=int, default=16, help="time steps per chunk")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = preset_config("edge", width=0.1875, num_classes=12, temporal="causal", azo=True)
    model = SMASNN(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    shape = (args.steps, args.batch, 2, *config.input_size)
    frames = (torch.rand(shape) < 0.05).float() * torch.randint(1, 4, shape).float()
    targets = torch.randint(0, 12, (args.steps, args.batch))

    def one_step() -> float:
        t0 = time.perf_counter()
        logits, _ = model.sequence(frames, None)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    forms: dict[str, _Sequence] = {"indexed": indexed_sequence, "unbind": LIF.sequence}
    times: dict[str, list[float]] = {name: [] for name in forms}
    one_step()  # warm-up
    try:
        for _ in range(args.rounds):
            for name, form in forms.items():
                setattr(LIF, "sequence", form)  # noqa: B010 (a class attribute, swapped)
                times[name].append(one_step())
    finally:
        setattr(LIF, "sequence", forms["unbind"])  # noqa: B010
    print(
        f"training step, edge 3/16 64x64, {args.batch} lanes x {args.steps} steps, "
        f"{args.threads} threads, {args.rounds} rounds"
    )
    for name, ts in times.items():
        print(
            f"  {name:8s} median {statistics.median(ts):.3f} s  "
            f"min {min(ts):.3f}  max {max(ts):.3f}"
        )
    ratio = statistics.median(times["unbind"]) / statistics.median(times["indexed"])
    print(f"  ratio unbind / indexed (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
