"""Spiking Multiscale Attention (spec §3), sequence and step forms, with AZO (spec §4).

Input is the host block's real-valued conv output (before its BN). Four branches with
kernels k ∈ {1, 3, 5, 7}, each conv → BN → LIF, give spike maps U_i. The spatial squeeze
z = mean_hw(Σ_i U_i) drives a channel attention (shared C → C/r with ReLU, then C/r → C
per branch) and a temporal attention on s = mean_c(z). Both are normalised by a softmax
over the branches and multiplied: Y = Σ_i w^T_i · w^C_i · U_i.

Temporal modes:

* ``"paper"``: FC over the time axis (T → ⌊T/4⌋, ReLU, ⌊T/4⌋ → T per branch). The weight
  of step t sees every step, future ones included; T is fixed at construction. Sequence
  form only.
* ``"causal"``: h_t = ReLU(Σ_{k<K} A_k s_{t-k} + a), a^T_i[t] = b_i · h_t + β_i, with
  s_{<0} = 0. The state holds the last K-1 values of s in a ring buffer [B, K-1] (oldest
  first), shifted with Slice + Concat. Step and sequence forms compute the same function.

State of one SMA layer (a plain ``dict`` of full-shape tensors, keyed by local names):
``u1``, ``u3``, ``u5``, ``u7`` (branch membranes [B, C, H, W], named by kernel) and, in
causal mode, ``ring`` [B, K-1].

Conv and BN stay separate modules so that an export can fold BN into the conv.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import Tensor, nn

from .azo import RCR, RTR, azo_apply, azo_mask
from .lif import LIF, SURROGATE_ALPHA, TAU, THRESHOLD

TemporalMode = Literal["paper", "causal"]
TEMPORAL_MODES: tuple[str, ...] = ("paper", "causal")
KERNELS: tuple[int, ...] = (1, 3, 5, 7)


def branch_softmax(a: Tensor, dim: int) -> Tensor:
    """Normalise attention logits across the branches (softmax, not sigmoid)."""
    return torch.softmax(a, dim=dim)


def fuse(u: list[Tensor], w_t: Tensor, w_c: Tensor) -> list[Tensor]:
    """Weighted branch maps P_i = w^T_i · w^C_i · U_i (one time step or many).

    Args:
        u: N branch spike maps, each [..., C, H, W] (leading dims ``...`` = [B] or [T, B]).
        w_t: Temporal weights [..., N].
        w_c: Channel weights [..., N, C].

    Returns:
        N maps P_i, each shaped like ``u[i]``. Y is their sum.
    """
    weight = w_t[..., None] * w_c  # [..., N, C]
    return [weight[..., i, :, None, None] * u_i for i, u_i in enumerate(u)]


def _add_all(tensors: list[Tensor]) -> Tensor:
    """Sum with a chain of Adds (exports as Add, not Stack + ReduceSum)."""
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


class SMA(nn.Module):
    """One SMA layer; holds weights and settings, never state.

    Args:
        channels: C (input and output channels).
        kernels: Branch kernel sizes (odd).
        reduction: Channel-attention reduction r (C/r hidden units).
        temporal: ``"paper"`` or ``"causal"``.
        time_steps: T, the fixed sequence length of the paper temporal attention.
        window: K, the causal filter length (>= 4).
        tau, threshold, alpha: LIF constants of the branch neurons.
        azo: Apply Attention ZoneOut in training-mode sequences.
        rtr, rcr: AZO ratios.
    """

    def __init__(
        self,
        channels: int,
        *,
        kernels: tuple[int, ...] = KERNELS,
        reduction: int = 4,
        temporal: TemporalMode = "causal",
        time_steps: int = 16,
        window: int = 16,
        tau: float = TAU,
        threshold: float = THRESHOLD,
        alpha: float = SURROGATE_ALPHA,
        azo: bool = True,
        rtr: int = RTR,
        rcr: int = RCR,
    ) -> None:
        super().__init__()
        if temporal not in TEMPORAL_MODES:
            raise ValueError(f"temporal must be one of {TEMPORAL_MODES}, got {temporal!r}")
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernels must be odd and positive, got {kernels!r}")
        if len(set(kernels)) != len(kernels):
            raise ValueError(f"kernels must be distinct (they name the state), got {kernels!r}")
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"need 1 <= reduction <= channels={channels}, got {reduction!r}")
        if temporal == "paper" and time_steps < 4:
            raise ValueError(f"paper temporal attention needs time_steps >= 4, got {time_steps!r}")
        if temporal == "causal" and window < 4:
            raise ValueError(f"causal temporal attention needs window >= 4, got {window!r}")
        self.channels = channels
        self.kernels = tuple(kernels)
        self.temporal = temporal
        self.time_steps = time_steps
        self.window = window
        self.azo = azo
        self.rtr = rtr
        self.rcr = rcr
        n = len(kernels)
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, k, padding=k // 2, bias=True) for k in kernels
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels) for _ in kernels)
        self.lifs = nn.ModuleList(LIF(tau, threshold, alpha) for _ in kernels)
        self.channel_shared = nn.Linear(channels, channels // reduction)
        self.channel_branch = nn.Linear(channels // reduction, n * channels)
        if temporal == "paper":
            self.temporal_shared = nn.Linear(time_steps, time_steps // 4)
            self.temporal_branch = nn.Linear(time_steps // 4, n * time_steps)
        else:
            self.temporal_shared = nn.Linear(window, window // 4)  # A_k and a
            self.temporal_branch = nn.Linear(window // 4, n)  # b_i and beta_i

    # -- state ---------------------------------------------------------------------------

    def branch_names(self) -> tuple[str, ...]:
        return tuple(f"u{k}" for k in self.kernels)

    def state_shapes(self, height: int, width: int) -> dict[str, tuple[int, ...]]:
        """Per-sample state shapes (batch dim excluded), in a fixed order."""
        shapes: dict[str, tuple[int, ...]] = {
            name: (self.channels, height, width) for name in self.branch_names()
        }
        if self.temporal == "causal":
            shapes["ring"] = (self.window - 1,)
        return shapes

    # -- pieces shared by both forms -----------------------------------------------------

    def _channel_weights(self, z: Tensor) -> Tensor:
        """[..., C] squeeze -> [..., N, C] softmaxed channel weights."""
        a = self.channel_branch(torch.relu(self.channel_shared(z)))
        a = a.reshape(*z.shape[:-1], len(self.kernels), self.channels)
        return branch_softmax(a, dim=-2)

    def _causal_temporal_weights(self, windows: Tensor) -> Tensor:
        """[..., K] windows of s (oldest first) -> [..., N] softmaxed temporal weights."""
        h = torch.relu(self.temporal_shared(windows))
        return branch_softmax(self.temporal_branch(h), dim=-1)

    def _paper_temporal_weights(self, s: Tensor) -> Tensor:
        """s [T, B] -> [T, B, N] softmaxed temporal weights (sees all T steps)."""
        t_steps, batch = s.shape
        h = torch.relu(self.temporal_shared(s.transpose(0, 1)))  # [B, T/4]
        a = self.temporal_branch(h).reshape(batch, len(self.kernels), t_steps)
        return branch_softmax(a.permute(2, 0, 1), dim=-1)

    # -- forms ---------------------------------------------------------------------------

    def sequence(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Run T steps at once (training and offline evaluation).

        Args:
            x: Conv output [T, B, C, H, W].
            state: This layer's state (see module docstring).

        Returns:
            ``(y[T, B, C, H, W], next_state)``. In training mode with ``azo`` on, AZO is
            applied to the weighted maps (it needs the whole sequence).

        Raises:
            ValueError: In paper mode when T differs from ``time_steps``.
        """
        t_steps, batch, channels, height, width = x.shape
        if self.temporal == "paper" and t_steps != self.time_steps:
            raise ValueError(
                f"paper temporal attention was built for T={self.time_steps}, got T={t_steps}"
            )
        flat = x.reshape(t_steps * batch, channels, height, width)
        new_state: dict[str, Tensor] = {}
        u: list[Tensor] = []
        for name, conv, bn, lif in zip(
            self.branch_names(), self.convs, self.bns, self.lifs, strict=True
        ):
            cur = bn(conv(flat)).reshape(t_steps, batch, channels, height, width)
            spikes, new_state[name] = cast(LIF, lif).sequence(cur, state[name])
            u.append(spikes)
        z = _add_all(u).mean(dim=(-2, -1))  # [T, B, C]
        w_c = self._channel_weights(z)  # [T, B, N, C]
        s = z.mean(dim=-1)  # [T, B]
        if self.temporal == "paper":
            w_t = self._paper_temporal_weights(s)
        else:
            full = torch.cat([state["ring"], s.transpose(0, 1)], dim=1)  # [B, K-1+T]
            windows = full.unfold(1, self.window, 1).transpose(0, 1)  # [T, B, K]
            w_t = self._causal_temporal_weights(windows)
            new_state["ring"] = full[:, t_steps:]
        p = fuse(u, w_t, w_c)
        if self.training and self.azo:
            mask = azo_mask(w_t, w_c, self.rtr, self.rcr)
            p = [azo_apply(p_i, mask[:, i]) for i, p_i in enumerate(p)]
        return _add_all(p), new_state

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One causal step (streaming). Never applies AZO.

        Args:
            x: Conv output [B, C, H, W].
            state: This layer's state.

        Returns:
            ``(y[B, C, H, W], next_state)``.

        Raises:
            ValueError: In paper mode (its temporal attention needs the whole sequence).
        """
        if self.temporal != "causal":
            raise ValueError(
                f"the step form needs temporal='causal', this layer is {self.temporal!r}"
            )
        new_state: dict[str, Tensor] = {}
        u: list[Tensor] = []
        for name, conv, bn, lif in zip(
            self.branch_names(), self.convs, self.bns, self.lifs, strict=True
        ):
            spikes, new_state[name] = lif(bn(conv(x)), state[name])
            u.append(spikes)
        z = _add_all(u).mean(dim=(-2, -1))  # [B, C]
        w_c = self._channel_weights(z)  # [B, N, C]
        s = z.mean(dim=-1, keepdim=True)  # [B, 1]
        window = torch.cat([state["ring"], s], dim=1)  # [B, K]
        w_t = self._causal_temporal_weights(window)  # [B, N]
        new_state["ring"] = window[:, 1:]
        return _add_all(fuse(u, w_t, w_c)), new_state
