"""One training step of the demo network on the CPU: forward, backward and AdamW.

    python benchmarks/bench_train_step.py              # 12 rounds, 2 threads
    python benchmarks/bench_train_step.py --rounds 20 --threads 2

The demo configuration (``edge``, width 3/16, 64×64, 12 outputs, causal SMA with AZO) on a
stream-protocol batch: 16 lanes × 16 steps of sparse event counts. Three forms are timed,
interleaved in one process so that machine load hits all of them:

- ``indexed`` (the baseline): ``LIF.sequence`` takes ``x[t]`` for each step, as the code
  did before. Each select's backward zero-fills a full ``[T, ...]`` gradient and adds it to
  the sum, T times per layer.
- ``unbind``: ``x.unbind(0)``, whose backward is one stack; float32 (``--no-amp``). The
  gradients of both are equal bit for bit (``tests/engine/test_lif.py``).
- ``unbind+bf16`` (training's default on a CPU with native bf16, ``TrainConfig.amp``):
  the same under bf16 autocast (convolutions and matrix products in bf16; membranes,
  state and loss float32). Skipped on a CPU without native bf16.

Prints the median, min and max seconds of each and the ratios of the medians:
unbind / indexed, and unbind+bf16 / unbind.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from smastream.engine.lif import LIF
from smastream.engine.model import SMASNN, preset_config
from smastream.train.loop import cpu_has_native_bf16

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

    def one_step(bf16: bool) -> float:
        t0 = time.perf_counter()
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with amp:
            logits, _ = model.sequence(frames, None)
        logits = logits.float()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    unbind: _Sequence = LIF.sequence
    forms: dict[str, tuple[_Sequence, bool]] = {
        "indexed": (indexed_sequence, False),
        "unbind": (unbind, False),
    }
    if cpu_has_native_bf16():
        forms["unbind+bf16"] = (unbind, True)
    times: dict[str, list[float]] = {name: [] for name in forms}
    try:
        for form, bf16 in forms.values():  # warm-up
            setattr(LIF, "sequence", form)  # noqa: B010 (a class attribute, swapped)
            one_step(bf16)
        for _ in range(args.rounds):
            for name, (form, bf16) in forms.items():
                setattr(LIF, "sequence", form)  # noqa: B010
                times[name].append(one_step(bf16))
    finally:
        setattr(LIF, "sequence", unbind)  # noqa: B010
    print(
        f"training step, edge 3/16 64x64, {args.batch} lanes x {args.steps} steps, "
        f"{args.threads} threads, {args.rounds} rounds"
    )
    for name, ts in times.items():
        print(
            f"  {name:11s} median {statistics.median(ts):.3f} s  "
            f"min {min(ts):.3f}  max {max(ts):.3f}"
        )
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"  ratio unbind / indexed (medians): {med['unbind'] / med['indexed']:.2f}")
    if "unbind+bf16" in med:
        print(f"  ratio unbind+bf16 / unbind (medians): {med['unbind+bf16'] / med['unbind']:.2f}")
    else:
        print("  unbind+bf16: skipped, this CPU has no native bf16")


if __name__ == "__main__":
    main()
