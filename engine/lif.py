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
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
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


# -- training sequences on the CPU: one pass over memory per layer -----------------------
#
# In training, T steps of lif_step in PyTorch are ~8 elementwise kernels a step forward and
# as many backward, each a full pass over the layer's [B, C, H, W] tensor: more than half
# of a CPU training step of the demo network, all of it memory traffic. These two kernels
# walk the T steps per neuron in registers instead (forward: read X, write H and S; backward:
# read H and dL/dS, write dL/dX), in tiles of neurons split across threads. They evaluate
# the step loop's float32 expressions in its order (no fused multiply-add), so spikes,
# membranes and gradients are those of the step loop bit for bit (tests/engine/test_lif.py).

_TILE = 2048  # neurons per tile: a tile's membranes stay in L1 across the T steps
_NEG, _ZERO, _ONE = np.float32(-1.0), np.float32(0.0), np.float32(1.0)  # float32 constants


@numba.njit(cache=True, nogil=True)
def _lif_forward_kernel(
    x: Any, v: Any, h_out: Any, s_out: Any, inv_tau: Any, threshold: Any, start: int, stop: int
) -> None:
    """x, h_out, s_out [T, N] float32; v [N] float32: in, V_0; out, V_T. Neurons start:stop."""
    for lo in range(start, stop, _TILE):
        hi = min(lo + _TILE, stop)
        for t in range(x.shape[0]):
            for n in range(lo, hi):
                vn = v[n]
                h = vn + (x[t, n] + vn * _NEG) * inv_tau
                h_out[t, n] = h
                fired = h >= threshold
                s_out[t, n] = _ONE if fired else _ZERO
                v[n] = _ZERO if fired else h


@numba.njit(cache=True, nogil=True)
def _lif_backward_kernel(
    h: Any,
    grad_s: Any,
    grad_v: Any,
    grad_x: Any,
    inv_tau: Any,
    threshold: Any,
    half_alpha: Any,
    scale: Any,
    start: int,
    stop: int,
) -> None:
    """h, grad_s, grad_x [T, N]; grad_v [N]: in, dL/dV_T; out, dL/dV_0. float32."""
    for lo in range(start, stop, _TILE):
        hi = min(lo + _TILE, stop)
        for t in range(h.shape[0] - 1, -1, -1):
            for n in range(lo, hi):
                hn = h[t, n]
                d = scale * (hn - threshold)
                # _ATanSpike.backward, then the reset's gradient (none where it fired)
                g = grad_s[t, n] * half_alpha / (_ONE + d * d)
                g = g + (_ZERO if hn >= threshold else grad_v[n])
                grad_x[t, n] = g * inv_tau
                grad_v[n] = g + g * inv_tau * _NEG  # H = v + (x + v·(-1))·(1/tau)


_pools: dict[int, ThreadPoolExecutor] = {}  # by thread count


def _forget_pools() -> None:  # a forked child does not inherit the pools' threads
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools)


def _run_tiled(kernel: Any, n: int, *args: Any) -> None:
    """``kernel(*args, start, stop)`` over neurons 0..n, split across torch's thread count."""
    threads = max(1, min(torch.get_num_threads(), -(-n // _TILE)))
    if threads == 1:
        kernel(*args, 0, n)
        return
    pool = _pools.get(threads)
    if pool is None:
        pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="lif")
    step = -(-n // (threads * _TILE)) * _TILE
    ranges = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    for future in [pool.submit(kernel, *args, *r) for r in ranges]:
        future.result()


class _LIFSequence(torch.autograd.Function):
    """T training steps of :func:`lif_step` (surrogate on) as one node, on the CPU."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, v: Tensor, tau: float, threshold: float, alpha: float
    ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None
        steps = x.shape[0]
        x2 = x.detach().to(torch.float32).contiguous().view(steps, -1).numpy()
        v_out = v.detach().to(torch.float32).contiguous().clone()
        h = np.empty_like(x2)
        s = np.empty_like(x2)
        f32 = np.float32
        _run_tiled(
            _lif_forward_kernel, x2.shape[1], x2, v_out.view(-1).numpy(), h, s,
            f32(1.0 / tau), f32(threshold),
        )  # fmt: skip
        ctx.save_for_backward(torch.from_numpy(h))
        ctx.constants = (tau, threshold, alpha, x.dtype, v.dtype, x.shape)
        return torch.from_numpy(s).view(x.shape), v_out

    @staticmethod
    def backward(
        ctx: Any, grad_spikes: Tensor | None, grad_v: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        (h,) = ctx.saved_tensors
        tau, threshold, alpha, x_dtype, v_dtype, shape = ctx.constants
        steps, n = h.shape
        gs = (
            np.zeros((steps, n), np.float32)
            if grad_spikes is None
            else grad_spikes.to(torch.float32).contiguous().view(steps, n).numpy()
        )
        gv = (
            torch.zeros(n)
            if grad_v is None
            else grad_v.to(torch.float32).contiguous().view(-1).clone()
        )
        grad_x = np.empty((steps, n), np.float32)
        f32 = np.float32
        _run_tiled(
            _lif_backward_kernel, n, h.numpy(), gs, gv.numpy(), grad_x,
            f32(1.0 / tau), f32(threshold), f32(alpha / 2.0), f32(math.pi * alpha / 2.0),
        )  # fmt: skip
        gx = torch.from_numpy(grad_x).view(shape).to(x_dtype) if ctx.needs_input_grad[0] else None
        gv0 = gv.view(shape[1:]).to(v_dtype) if ctx.needs_input_grad[1] else None
        return gx, gv0, None, None, None


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
        if x.shape[1:] != v.shape:
            raise ValueError(f"x and v shapes differ: {tuple(x.shape[1:])} vs {tuple(v.shape)}")
        fused = x.device.type == "cpu" and torch.result_type(x, v) == torch.float32
        if fused and self.training and torch.is_grad_enabled():
            spikes, v_last = _LIFSequence.apply(x, v, self.tau, self.threshold, self.alpha)
            return spikes, v_last
        out = []
        # unbind, not x[t]: the backward of T selects zero-fills and adds a full [T, ...]
        # gradient T times; unbind's backward is one stack (CUDA training takes this path).
        for x_t in x.unbind(0):
            s, v = self(x_t, v)
            out.append(s)
        return torch.stack(out), v

    def extra_repr(self) -> str:
        return f"tau={self.tau}, threshold={self.threshold}, alpha={self.alpha}"


class SplitLIF(nn.Module):
    """A layer of LIF neurons with two time constants: along the last axis the first
    ``split`` neurons use ``tau``, the rest ``slow_tau`` (fast and slow memories side by
    side in one layer). Each part is a :class:`LIF`, so training keeps the fused kernels
    and the exported step holds only Slice and Concat beyond a LIF's ops.
    """

    def __init__(
        self,
        split: int,
        tau: float = TAU,
        slow_tau: float = TAU,
        threshold: float = THRESHOLD,
        alpha: float = SURROGATE_ALPHA,
    ) -> None:
        super().__init__()
        if split < 1:
            raise ValueError(f"split must be >= 1, got {split!r}")
        self.split = int(split)
        self.fast = LIF(tau, threshold, alpha)
        self.slow = LIF(slow_tau, threshold, alpha)

    def _parts(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if t.shape[-1] <= self.split:
            raise ValueError(f"last axis {t.shape[-1]} must be longer than split {self.split}")
        return t[..., : self.split], t[..., self.split :]

    def forward(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        (xa, xb), (va, vb) = self._parts(x), self._parts(v)
        sa, va = self.fast(xa, va)
        sb, vb = self.slow(xb, vb)
        return torch.cat([sa, sb], -1), torch.cat([va, vb], -1)

    def sequence(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """As :meth:`LIF.sequence`: ``x [T, ...]``, ``v [...]`` -> ``(spikes[T, ...], v)``."""
        (xa, xb), (va, vb) = self._parts(x), self._parts(v)
        sa, va = self.fast.sequence(xa.contiguous(), va.contiguous())
        sb, vb = self.slow.sequence(xb.contiguous(), vb.contiguous())
        return torch.cat([sa, sb], -1), torch.cat([va, vb], -1)

    def extra_repr(self) -> str:
        return f"split={self.split}"
