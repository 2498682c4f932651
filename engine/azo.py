"""Attention ZoneOut (spec §4): deterministic, attention-chosen zoneout, training only.

Per branch i of an SMA block, within one training batch of T steps:

1. 𝒯_i: the ⌊T/RTR⌋ steps with the smallest temporal weight summed over the batch.
2. 𝒞_i: among those steps, the ⌊C/RCR⌋ channels with the smallest channel weight summed
   over 𝒯_i and the batch.
3. For every t ∈ 𝒯_i except t = 0 and every c ∈ 𝒞_i, the weighted map P_i[t,:,c] is
   replaced by the pre-replacement P_i[t-1,:,c] (a copy: no chaining). Gradients flow
   through the copied values into step t-1.

Selection is by stable sort (ties go to the lower index), so the result does not depend
on any random state. Whether AZO runs at all is decided by the caller from its own
``self.training``; these functions always apply it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

RTR = 4
RCR = 10


def azo_mask(w_t: Tensor, w_c: Tensor, rtr: int = RTR, rcr: int = RCR) -> Tensor:
    """Which (step, branch, channel) cells AZO replaces.

    Args:
        w_t: Temporal weights after the branch softmax, [T, B, N].
        w_c: Channel weights after the branch softmax, [T, B, N, C].
        rtr: Temporal ratio: ⌊T/rtr⌋ steps are chosen per branch.
        rcr: Channel ratio: ⌊C/rcr⌋ channels are chosen per branch.

    Returns:
        Boolean mask [T, N, C]; True where P_i[t, :, c] takes P_i[t-1, :, c]. Row t = 0 is
        always False. Computed without gradient.

    Raises:
        ValueError: On bad ratios or inconsistent shapes.
    """
    if rtr < 1 or rcr < 1:
        raise ValueError(f"rtr and rcr must be >= 1, got rtr={rtr!r}, rcr={rcr!r}")
    if w_t.dim() != 3 or w_c.dim() != 4 or w_c.shape[:3] != w_t.shape:
        raise ValueError(
            f"expected w_t [T,B,N] and w_c [T,B,N,C] with matching T,B,N; got "
            f"{tuple(w_t.shape)} and {tuple(w_c.shape)}"
        )
    t_steps, _, n_branch, channels = w_c.shape
    n_t = t_steps // rtr
    n_c = channels // rcr
    mask = torch.zeros(t_steps, n_branch, channels, dtype=torch.bool, device=w_c.device)
    if n_t == 0 or n_c == 0:
        return mask
    with torch.no_grad():
        score_t = w_t.detach().sum(dim=1)  # [T, N]
        sel_t = torch.argsort(score_t, dim=0, stable=True)[:n_t]  # [n_T, N]
        t_mask = torch.zeros(t_steps, n_branch, dtype=torch.bool, device=w_c.device)
        t_mask.scatter_(0, sel_t, True)
        chosen = w_c.detach() * t_mask[:, None, :, None].to(w_c.dtype)
        score_c = chosen.sum(dim=(0, 1))  # [N, C]
        sel_c = torch.argsort(score_c, dim=1, stable=True)[:, :n_c]  # [N, n_C]
        c_mask = torch.zeros(n_branch, channels, dtype=torch.bool, device=w_c.device)
        c_mask.scatter_(1, sel_c, True)
        mask = t_mask[:, :, None] & c_mask[None, :, :]
        mask[0] = False
    return mask


def azo_apply(p: Tensor, mask: Tensor) -> Tensor:
    """Replace the masked cells of one branch's weighted map by the previous step's values.

    Args:
        p: Weighted map P_i, [T, B, C, ...] (any trailing spatial dims).
        mask: [T, C] boolean (one branch's slice of :func:`azo_mask`).

    Returns:
        A new tensor shaped like ``p``; ``p`` is not modified. Copied cells carry gradient
        to ``p[t-1]``.

    Raises:
        ValueError: If the mask shape does not match ``p``.
    """
    if p.dim() < 3 or mask.shape != (p.shape[0], p.shape[2]):
        raise ValueError(
            f"mask must be [T, C] = {(p.shape[0], p.shape[2]) if p.dim() >= 3 else '?'} "
            f"for p {tuple(p.shape)}, got {tuple(mask.shape)}"
        )
    steps, channels = mask[1:].nonzero(as_tuple=True)  # step 0 has no previous: kept
    out: Tensor = _ZoneOut.apply(p, steps + 1, channels)
    return out


class _ZoneOut(torch.autograd.Function):
    """AZO's copy as one node: only the K chosen (step, channel) cells are read and written.

    Written as ``where(mask, cat(p[:1], p[:-1]), p)`` it made the whole [T, B, C, H, W] map
    pass through memory ~8 times forward and backward, for the ~2.5 % of cells AZO changes
    (``⌊T/4⌋`` steps × ``⌊C/10⌋`` channels): a sixth of a CPU training step of the demo
    network. This is one copy each way plus a gather and a scatter of the K cells; values
    and gradients are the same bit for bit (``tests/engine/test_azo.py``).
    """

    @staticmethod
    def forward(ctx: Any, p: Tensor, steps: Tensor, channels: Tensor) -> Tensor:
        ctx.save_for_backward(steps, channels)
        out = p.clone()
        out[steps, :, channels] = p[steps - 1, :, channels]  # gathered before any write
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        steps, channels = ctx.saved_tensors
        moved = grad[steps, :, channels]
        g = grad.clone()
        g[steps, :, channels] = 0.0  # replaced cells: no gradient of their own
        g[steps - 1, :, channels] += moved  # (t-1, c) pairs are distinct, so += is exact
        return g, None, None
