"""One training step of the demo network on the CPU: forward, backward and AdamW.

    python benchmarks/bench_train_step.py              # 12 rounds, 2 threads
    python benchmarks/bench_train_step.py --rounds 20 --threads 2

The demo configuration (``edge``, width 3/16, 64×64, 12 outputs, causal SMA with AZO) on a
stream-protocol batch: 16 lanes × 16 steps of sparse event counts. Four forms are timed,
interleaved in one process so that machine load hits all of them:

- ``autograd`` (the baseline, the code before the fused kernels): ``LIF.sequence`` calls
  the module once per step and AZO is a full select, ``where(mask, p shifted, p)``, both
  plain autograd; float32 (``--no-amp``).
- ``fused``: the code now. In training, ``LIF.sequence`` runs the T steps of a layer in
  one numba kernel forward and one backward (``engine/lif.py``), and AZO reads and writes
  only the cells it changes (``engine/azo.py``). Gradients are those of ``autograd`` bit
  for bit (``tests/engine/test_model.py``).
- ``autograd+bf16`` and ``fused+bf16``: the same under bf16 autocast (training's default
  on a CPU with native bf16, ``TrainConfig.amp``: convolutions and matrix products in
  bf16; membranes, state and loss float32). Skipped on a CPU without native bf16.

Prints the median, min and max seconds of each and the ratios of the medians, fused /
autograd at each precision and fused+bf16 / autograd (float32).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

import smastream.engine.sma as sma_module
from smastream.engine.lif import LIF
from smastream.engine.model import SMASNN, preset_config
from smastream.train.loop import cpu_has_native_bf16

_Sequence = Callable[[LIF, Tensor, Tensor], tuple[Tensor, Tensor]]
_Azo = Callable[[Tensor, Tensor], Tensor]


def step_loop_sequence(self: LIF, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The baseline LIF: the module called once per step, ~8 autograd nodes a step."""
    out = []
    for x_t in x.unbind(0):
        s, v = self(x_t, v)
        out.append(s)
    return torch.stack(out), v


def full_select_azo(p: Tensor, mask: Tensor) -> Tensor:
    """The baseline AZO: a select over the whole map for the ~2.5 % of cells it changes."""
    previous = torch.cat([p[:1], p[:-1]], dim=0)
    m = mask.view(mask.shape[0], 1, mask.shape[1], *([1] * (p.dim() - 3)))
    return torch.where(m, previous, p)


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

    fused: _Sequence = LIF.sequence
    gather_azo: _Azo = sma_module.azo_apply
    forms: dict[str, tuple[_Sequence, _Azo, bool]] = {
        "autograd": (step_loop_sequence, full_select_azo, False),
        "fused": (fused, gather_azo, False),
    }
    if cpu_has_native_bf16():
        forms["autograd+bf16"] = (step_loop_sequence, full_select_azo, True)
        forms["fused+bf16"] = (fused, gather_azo, True)
    times: dict[str, list[float]] = {name: [] for name in forms}

    def use(sequence: _Sequence, azo: _Azo) -> None:
        setattr(LIF, "sequence", sequence)  # noqa: B010 (a class attribute, swapped)
        setattr(sma_module, "azo_apply", azo)  # noqa: B010

    try:
        for sequence, azo, bf16 in forms.values():  # warm-up (and numba's first load)
            use(sequence, azo)
            one_step(bf16)
        for _ in range(args.rounds):
            for name, (sequence, azo, bf16) in forms.items():
                use(sequence, azo)
                times[name].append(one_step(bf16))
    finally:
        use(fused, gather_azo)
    print(
        f"training step, edge 3/16 64x64, {args.batch} lanes x {args.steps} steps, "
        f"{args.threads} threads, {args.rounds} rounds"
    )
    for name, ts in times.items():
        print(
            f"  {name:13s} median {statistics.median(ts):.3f} s  "
            f"min {min(ts):.3f}  max {max(ts):.3f}"
        )
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"  ratio fused / autograd (float32, medians): {med['fused'] / med['autograd']:.2f}")
    if "fused+bf16" in med:
        print(
            f"  ratio fused+bf16 / autograd+bf16 (medians): "
            f"{med['fused+bf16'] / med['autograd+bf16']:.2f}"
        )
        print(
            f"  ratio fused+bf16 / autograd float32 (medians): "
            f"{med['fused+bf16'] / med['autograd']:.2f}"
        )
    else:
        print("  bf16 forms: skipped, this CPU has no native bf16")


if __name__ == "__main__":
    main()
