"""Leaky integrate-and-fire neuron (spec §1): a pure step function and a thin module.

    H_t = V_{t-1} + (X_t - V_{t-1}) / tau          (computed in this order, as the reference
                                                    does: v + (x - v)·(1/tau))
    S_t = 1[H_t >= threshold]
    V_t = 0 where S_t else H_t                      (hard reset; the reset is not differentiated)

The spike is a plain comparison cast to float in inference. In training it is the same
comparison forward, with the arctangent surrogate gradient backward:

    dS/dH ≈ (alpha / 2) / (1 + (pi · alpha · (H - threshold) / 2)²)

Which one runs is an argument (``surrogate``), chosen by the module from its own
``self.training`` — never a global flag — so an exported eval-mode graph holds only
Mul, Add, GreaterOrEqual, Cast and Where.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

TAU = 2.0
THRESHOLD = 1.0
SURROGATE_ALPHA = 2.0


class _ATanSpike(torch.autograd.Function):
    """Heaviside forward, arctangent surrogate backward (training only)."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, threshold: float, alpha: float) -> Tensor:
        ctx.save_for_backward(h)
        ctx.threshold = threshold
        ctx.alpha = alpha
        return (h >= threshold).to(h.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (h,) = ctx.saved_tensors
        alpha = ctx.alpha
        scale = math.pi * alpha / 2.0
        return grad * (alpha / 2.0) / (1.0 + (scale * (h - ctx.threshold)) ** 2), None, None


def spike(
    h: Tensor,
    threshold: float = THRESHOLD,
    *,
    surrogate: bool = False,
    alpha: float = SURROGATE_ALPHA,
) -> Tensor:
    """The spike function ``1[h >= threshold]`` as float.

    Args:
        h: Membrane potential after integration, any shape.
        threshold: Firing threshold.
        surrogate: Use the arctangent surrogate gradient (training). When false the result
            is the plain comparison, which has no gradient with respect to ``h``.
        alpha: Surrogate sharpness.

    Returns:
        Spikes, same shape and dtype as ``h``, values 0.0 or 1.0.
    """
    if surrogate:
        out: Tensor = _ATanSpike.apply(h, float(threshold), float(alpha))
        return out
    return (h >= threshold).to(h.dtype)


def lif_step(
    x: Tensor,
    v: Tensor,
    *,
    tau: float = TAU,
    threshold: float = THRESHOLD,
    surrogate: bool = False,
    alpha: float = SURROGATE_ALPHA,
) -> tuple[Tensor, Tensor]:
    """One LIF time step (pure).

    Args:
        x: Input current X_t, shape [...].
        v: Membrane after the previous step's reset V_{t-1}, same shape as ``x``
            (full shape: zeros at t = 0, never a scalar).
        tau: Membrane time constant (> 1 for a leak; 2 in the paper).
        threshold: Firing threshold.
        surrogate: Arctangent surrogate gradient for training; plain comparison otherwise.
        alpha: Surrogate sharpness.

    Returns:
        ``(spikes, v_next)``, both shaped like ``x``.

    Raises:
        ValueError: If ``tau`` < 1 or the shapes of ``x`` and ``v`` differ.
    """
    if tau < 1.0:
        raise ValueError(f"tau must be >= 1, got {tau!r}")
    if x.shape != v.shape:
        raise ValueError(f"x and v shapes differ: {tuple(x.shape)} vs {tuple(v.shape)}")
    # The reference's order of operations: v + (x - v)/tau. The algebraically equal
    # v·(1 - 1/tau) + x/tau rounds differently (1 ulp), which flips spikes at the threshold.
    # Written as v + (x + v·(-1))·(1/tau) so that it exports as Mul and Add only (no Sub);
    # negation is exact, so this is bit-identical to v + (x - v)/tau for tau = 2.
    h = v + (x + v * -1.0) * (1.0 / tau)
    fired = h >= threshold
    if surrogate:
        s = spike(h, threshold, surrogate=True, alpha=alpha)
    else:
        s = fired.to(h.dtype)
    v_next = h.masked_fill(fired, 0.0)  # exports as Where; the reset carries no gradient
    return s, v_next


class LIF(nn.Module):
    """A layer of LIF neurons; holds only its constants, never its membrane.

    ``forward`` is one step: ``(x[...], v[...]) -> (spikes[...], v[...])``. The surrogate
    gradient is used when the module is in training mode, the plain comparison otherwise.
    """

    def __init__(
        self, tau: float = TAU, threshold: float = THRESHOLD, alpha: float = SURROGATE_ALPHA
    ) -> None:
        super().__init__()
        if tau < 1.0:
            raise ValueError(f"tau must be >= 1, got {tau!r}")
        self.tau = float(tau)
        self.threshold = float(threshold)
        self.alpha = float(alpha)

    def forward(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return lif_step(
            x, v, tau=self.tau, threshold=self.threshold, surrogate=self.training, alpha=self.alpha
        )

    def sequence(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Run T steps.

        Args:
            x: Inputs [T, ...].
            v: Membrane before the first step [...].

        Returns:
            ``(spikes[T, ...], v_after_last_step[...])``.
        """
        out = []
        # unbind, not x[t]: the backward of T selects zero-fills and adds a full [T, ...]
        # gradient T times (O(T²) memory traffic; a fifth of a training step at T = 16),
        # unbind's backward is one stack.
        for x_t in x.unbind(0):
            s, v = self(x_t, v)
            out.append(s)
        return torch.stack(out), v

    def extra_repr(self) -> str:
        return f"tau={self.tau}, threshold={self.threshold}, alpha={self.alpha}"
