"""The SMA-SNN network (spec §2, §5): configuration, presets, state, two forms, checkpoints.

One set of weights, two forms:

* ``sequence(frames[T, B, 2, H, W], state=None) -> (logits[T, B, 11], state)`` for training
  and offline evaluation (convs and BN run on the merged T·B axis; LIF loops over T;
  AZO and the per-sequence dropout mask apply in training mode).
* ``step(frames[B, 2, H, W], state) -> (logits[B, 11], state)`` for streaming (eval mode,
  causal temporal attention only).

State is explicit: a :class:`NetState` (ordered, named, full-shape float tensors: every
LIF membrane and every SMA ring buffer) made by ``initial_state(batch)``. Modules hold
weights and settings only.

Structure (``paper`` preset): five blocks conv3×3 → [SMA] → BN → LIF → maxpool 2 (SMA in
blocks 2 and 3), then avg-pool (k, stride 1) → flatten → FC → LIF → dropout → FC → LIF →
dropout → FC → logits. The ``edge`` preset keeps that structure with a width multiplier
and a smaller input; see :func:`edge_config`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn

from smastream.errors import FormatError
from smastream.gestures import NUM_CLASSES

from .azo import RCR, RTR
from .lif import LIF, SURROGATE_ALPHA, TAU, THRESHOLD, SplitLIF
from .sma import KERNELS, SMA, TEMPORAL_MODES

#: ``paper``: the paper's network (paper temporal attention, an FC over T: offline only);
#: ``paper-causal``: the same network with the causal temporal filter, which streams;
#: ``edge``: the scaled-down causal network for two CPU cores / a Jetson.
PRESETS: tuple[str, ...] = ("paper", "paper-causal", "edge")
CHECKPOINT_FORMAT = "smastream.sma-snn"
CHECKPOINT_VERSION = 1


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class SMASNNConfig:
    """Everything that defines the network's architecture; saved with every checkpoint.

    Attributes:
        preset: Name of the preset it came from (informational; loading never needs it).
        input_size: (H, W) of the input frames; divisible by 2**len(widths).
        in_channels: Input channels (2 polarities).
        widths: Output channels of the conv blocks.
        sma_blocks: 0-based indices of the blocks that carry an SMA layer.
        sma_kernels: SMA branch kernels.
        sma_reduction: Channel-attention reduction r.
        head_pool: Avg-pool kernel (stride 1) before flatten; 1 = none.
        head_hidden: Hidden FC widths of the head (each FC → LIF → dropout).
        num_classes: Logits per step.
        dropout: Dropout probability in the head (mask drawn once per sequence).
        temporal: SMA temporal attention, ``"paper"`` or ``"causal"``.
        time_steps: T of the paper temporal attention (sequence length it accepts).
        window: K of the causal temporal filter.
        tau, threshold, surrogate_alpha: LIF constants.
        head_tau: Membrane time constant of the head's hidden LIF layers (``tau``, 2, in
            the paper). A longer one lets the head carry evidence across more steps: with
            2 a membrane keeps half of itself per step (50 ms at 50 ms bins).
        head_slow_tau: ``None``, or the time constant of the second half of each hidden
            head layer's neurons (the first half keeps ``head_tau``): fast neurons that
            follow an onset and slow ones that carry a gesture, in one layer
            (:class:`~smastream.engine.lif.SplitLIF`).
        azo, azo_rtr, azo_rcr: Attention ZoneOut switch and ratios.
        width_multiplier: How ``widths``/``head_hidden`` were derived from the paper's
            (informational).
    """

    preset: str = "custom"
    input_size: tuple[int, int] = (128, 128)
    in_channels: int = 2
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    sma_blocks: tuple[int, ...] = (1, 2)
    sma_kernels: tuple[int, ...] = KERNELS
    sma_reduction: int = 4
    head_pool: int = 2
    head_hidden: tuple[int, ...] = (2048, 1024)
    num_classes: int = NUM_CLASSES
    dropout: float = 0.5
    temporal: str = "causal"
    time_steps: int = 16
    window: int = 16
    tau: float = TAU
    threshold: float = THRESHOLD
    surrogate_alpha: float = SURROGATE_ALPHA
    head_tau: float = TAU
    head_slow_tau: float | None = None
    azo: bool = True
    azo_rtr: int = RTR
    azo_rcr: int = RCR
    width_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if self.temporal not in TEMPORAL_MODES:
            raise ValueError(f"temporal must be one of {TEMPORAL_MODES}, got {self.temporal!r}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (H, W) > 0, got {self.input_size!r}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(
                f"widths must be a non-empty tuple of positive ints, got {self.widths!r}"
            )
        scale = 2 ** len(self.widths)
        if any(s % scale for s in self.input_size):
            raise ValueError(
                f"input_size {self.input_size!r} must be divisible by 2**{len(self.widths)} = "
                f"{scale} (one maxpool 2 per block)"
            )
        bad = [i for i in self.sma_blocks if not 0 <= i < len(self.widths)]
        if bad:
            raise ValueError(f"sma_blocks {bad!r} out of range 0..{len(self.widths) - 1}")
        final = min(self.input_size) // scale
        if not 1 <= self.head_pool <= final:
            raise ValueError(
                f"head_pool must be in 1..{final} (final map is "
                f"{final}×{final}), got {self.head_pool!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.tau >= 1.0 or not self.head_tau >= 1.0:
            raise ValueError(f"tau and head_tau must be >= 1, got {self.tau!r}, {self.head_tau!r}")
        if self.head_slow_tau is not None and not self.head_slow_tau >= 1.0:
            raise ValueError(f"head_slow_tau must be >= 1 or None, got {self.head_slow_tau!r}")
        if self.head_slow_tau is not None and min(self.head_hidden, default=2) < 2:
            raise ValueError(
                f"head_slow_tau needs hidden head layers of >= 2 neurons, got {self.head_hidden!r}"
            )
        if self.num_classes < 1 or self.in_channels < 1:
            raise ValueError(
                f"num_classes and in_channels must be >= 1, got "
                f"{self.num_classes!r}, {self.in_channels!r}"
            )

    @property
    def final_size(self) -> tuple[int, int]:
        """(h, w) of the last block's output."""
        scale = 2 ** len(self.widths)
        return self.input_size[0] // scale, self.input_size[1] // scale

    @property
    def flat_features(self) -> int:
        """Inputs of the first head FC."""
        h, w = self.final_size
        return self.widths[-1] * (h - self.head_pool + 1) * (w - self.head_pool + 1)


def config_to_dict(config: SMASNNConfig) -> dict[str, Any]:
    """Plain dict (lists for tuples) for checkpoints and JSON."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


# Fields added after models were shipped, with the value every earlier model had: a
# checkpoint or ONNX file written before a field existed loads with that value.
_LATER_FIELDS: dict[str, Any] = {"head_tau": TAU, "head_slow_tau": None}


def config_from_dict(data: Mapping[str, Any]) -> SMASNNConfig:
    """Inverse of :func:`config_to_dict`.

    Raises:
        ValueError: On unknown or missing keys (an architecture is never guessed; only a
            field added later, :data:`_LATER_FIELDS`, takes the value earlier models had).
    """
    fields = {f.name for f in dataclasses.fields(SMASNNConfig)}
    data = {**_LATER_FIELDS, **data}
    unknown = sorted(set(data) - fields)
    missing = sorted(fields - set(data))
    if unknown or missing:
        raise ValueError(
            f"config keys do not match SMASNNConfig: unknown {unknown}, missing {missing}"
        )
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return SMASNNConfig(**kwargs)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def paper_config(**overrides: Any) -> SMASNNConfig:
    """The paper's DVS128 Gesture VGG (spec §2): 128×128, 22.45 M parameters.

    Its SMA temporal attention is the paper's (``temporal="paper"``, an FC over the
    ``time_steps`` axis), which sees future steps and so has no streaming form; see
    :func:`paper_causal_config` for the variant that streams.
    """
    return dataclasses.replace(SMASNNConfig(preset="paper", temporal="paper"), **overrides)


def paper_causal_config(**overrides: Any) -> SMASNNConfig:
    """The paper's network with the causal temporal filter (``temporal="causal"``): streams."""
    base = SMASNNConfig(preset="paper-causal", temporal="causal")
    return dataclasses.replace(base, **overrides)


EDGE_WIDTH = 0.1875
EDGE_INPUT = 64


def edge_config(
    width: float = EDGE_WIDTH, input_size: int = EDGE_INPUT, **overrides: Any
) -> SMASNNConfig:
    """The paper's structure scaled for two CPU cores.

    Widths and head hidden sizes are the paper's times ``width`` (rounded, at least 4);
    the input is ``input_size``² (the binner sum-pools the 128×128 sensor). With a 64×64
    input the last map is 2×2 and is flattened as is (``head_pool=1``): averaging it to
    1×1 would discard where in the frame the motion is (left vs right hand).

    Default (3/16 width, 64×64): 12-24-48-96-96 channels, head 384-192-11, 0.61 M
    parameters, 109 M multiply-adds per step; see engine/README.md for why not 1/8 and
    for measured latency.
    """
    paper = SMASNNConfig()
    widths = tuple(max(4, round(c * width)) for c in paper.widths)
    hidden = tuple(max(4, round(c * width)) for c in paper.head_hidden)
    final = input_size // 2 ** len(widths)
    base = SMASNNConfig(
        preset="edge",
        input_size=(input_size, input_size),
        widths=widths,
        head_hidden=hidden,
        head_pool=1 if final < 4 else 2,
        width_multiplier=width,
    )
    return dataclasses.replace(base, **overrides)


def preset_config(name: str, **overrides: Any) -> SMASNNConfig:
    """Config of a named preset, with field overrides (e.g. ``temporal="paper"``)."""
    if name == "paper":
        return paper_config(**overrides)
    if name == "paper-causal":
        return paper_causal_config(**overrides)
    if name == "edge":
        return edge_config(**overrides)
    raise ValueError(f"unknown preset {name!r}; valid: {PRESETS}")


# -- state -------------------------------------------------------------------------------


class NetState(Mapping[str, Tensor]):
    """The network's recurrent state: ordered, named, full-shape tensors.

    Names are flat (``block2_sma_u3``, ``block2_sma_ring``, ``block2_v``, ``head_fc1_v``…)
    so that an exported graph can take ``<name>_in`` and return ``<name>_out``. Immutable:
    the forms return a new one.
    """

    __slots__ = ("_tensors",)

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        self._tensors: dict[str, Tensor] = dict(tensors)

    def __getitem__(self, name: str) -> Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def names(self) -> tuple[str, ...]:
        return tuple(self._tensors)

    def tensors(self) -> tuple[Tensor, ...]:
        return tuple(self._tensors.values())

    def detach(self) -> NetState:
        """Cut the autograd history (truncated BPTT between sequences)."""
        return NetState({k: v.detach() for k, v in self._tensors.items()})

    def to(self, *args: Any, **kwargs: Any) -> NetState:
        return NetState({k: v.to(*args, **kwargs) for k, v in self._tensors.items()})

    def __repr__(self) -> str:
        items = ", ".join(f"{k}: {list(v.shape)}" for k, v in self._tensors.items())
        return f"NetState({items})"


_V = TypeVar("_V")


def _sub(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in state.items() if k.startswith(prefix)}


def _prefixed(state: Mapping[str, _V], prefix: str) -> dict[str, _V]:
    return {prefix + k: v for k, v in state.items()}


# -- layers ------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """conv 3×3 → [SMA] → BN → LIF → maxpool 2. State: ``v`` (+ ``sma_*``)."""

    def __init__(self, in_channels: int, out_channels: int, sma: SMA | None, lif: LIF) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True)
        self.sma = sma
        self.bn = nn.BatchNorm2d(out_channels)
        self.lif = lif
        self.pool = nn.MaxPool2d(2)

    def state_shapes(self, height: int, width: int) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        if self.sma is not None:
            shapes.update(_prefixed(self.sma.state_shapes(height, width), "sma_"))
        shapes["v"] = (self.out_channels, height, width)
        return shapes

    def sequence(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """x [T, B, Cin, H, W] -> spikes pooled [T, B, Cout, H/2, W/2]."""
        t_steps, batch = x.shape[:2]
        cur = self.conv(x.flatten(0, 1))
        new: dict[str, Tensor] = {}
        if self.sma is not None:
            y, sma_state = self.sma.sequence(
                cur.unflatten(0, (t_steps, batch)), _sub(state, "sma_")
            )
            new.update(_prefixed(sma_state, "sma_"))
            cur = y.flatten(0, 1)
        cur = self.bn(cur).unflatten(0, (t_steps, batch))
        spikes, new["v"] = self.lif.sequence(cur, state["v"])
        return self.pool(spikes.flatten(0, 1)).unflatten(0, (t_steps, batch)), new

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """x [B, Cin, H, W] -> spikes pooled [B, Cout, H/2, W/2]."""
        cur = self.conv(x)
        new: dict[str, Tensor] = {}
        if self.sma is not None:
            cur, sma_state = self.sma.step(cur, _sub(state, "sma_"))
            new.update(_prefixed(sma_state, "sma_"))
        spikes, new["v"] = self.lif(self.bn(cur), state["v"])
        return self.pool(spikes), new


class Head(nn.Module):
    """avg-pool → flatten → (FC → LIF → dropout)* → FC. State: ``fc{j}_v``."""

    def __init__(self, config: SMASNNConfig) -> None:
        super().__init__()
        self.pool: nn.Module = (
            nn.AvgPool2d(config.head_pool, stride=1) if config.head_pool > 1 else nn.Identity()
        )
        sizes = (config.flat_features, *config.head_hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.lifs = nn.ModuleList(
            LIF(config.head_tau, config.threshold, config.surrogate_alpha)
            if config.head_slow_tau is None
            else SplitLIF(
                n // 2,
                config.head_tau,
                config.head_slow_tau,
                config.threshold,
                config.surrogate_alpha,
            )
            for n in config.head_hidden
        )
        self.out = nn.Linear(sizes[-1], config.num_classes)
        self.dropout = config.dropout
        self.hidden_sizes = tuple(config.head_hidden)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"fc{j + 1}_v": (n,) for j, n in enumerate(self.hidden_sizes)}

    def sequence(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """x [T, B, C, h, w] -> logits [T, B, K]. Dropout mask: one per sequence."""
        t_steps, batch = x.shape[:2]
        cur = self.pool(x.flatten(0, 1)).flatten(1)
        new: dict[str, Tensor] = {}
        for j, (fc, lif) in enumerate(zip(self.hidden, self.lifs, strict=True)):
            name = f"fc{j + 1}_v"
            cur = fc(cur).unflatten(0, (t_steps, batch))
            spikes, new[name] = cast(LIF | SplitLIF, lif).sequence(cur, state[name])
            if self.training and self.dropout > 0:
                keep = 1.0 - self.dropout
                mask = torch.empty_like(spikes[0]).bernoulli_(keep) / keep  # [B, F]
                spikes = spikes * mask
            cur = spikes.flatten(0, 1)
        return self.out(cur).unflatten(0, (t_steps, batch)), new

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """x [B, C, h, w] -> logits [B, K]. Eval only, so dropout is the identity."""
        cur = self.pool(x).flatten(1)
        new: dict[str, Tensor] = {}
        for j, (fc, lif) in enumerate(zip(self.hidden, self.lifs, strict=True)):
            name = f"fc{j + 1}_v"
            cur, new[name] = lif(fc(cur), state[name])
        return self.out(cur), new


# -- network -----------------------------------------------------------------------------


class SMASNN(nn.Module):
    """The SMA-SNN. ``forward`` is :meth:`sequence`.

    Args:
        config: Architecture (see :class:`SMASNNConfig`, :func:`preset_config`).
    """

    def __init__(self, config: SMASNNConfig) -> None:
        super().__init__()
        self.config = config
        blocks = []
        cin = config.in_channels
        for j, cout in enumerate(config.widths):
            lif = LIF(config.tau, config.threshold, config.surrogate_alpha)
            sma = None
            if j in config.sma_blocks:
                sma = SMA(
                    cout,
                    kernels=config.sma_kernels,
                    reduction=config.sma_reduction,
                    temporal=config.temporal,  # type: ignore[arg-type]
                    time_steps=config.time_steps,
                    window=config.window,
                    tau=config.tau,
                    threshold=config.threshold,
                    alpha=config.surrogate_alpha,
                    azo=config.azo,
                    rtr=config.azo_rtr,
                    rcr=config.azo_rcr,
                )
            blocks.append(ConvBlock(cin, cout, sma, lif))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(config)

    def _blocks(self) -> list[ConvBlock]:
        return [cast(ConvBlock, b) for b in self.blocks]

    # -- state ---------------------------------------------------------------------------

    def state_spec(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """``(name, per-sample shape)`` of every state tensor, in the fixed order."""
        spec: list[tuple[str, tuple[int, ...]]] = []
        h, w = self.config.input_size
        for j, block in enumerate(self._blocks()):
            for name, shape in block.state_shapes(h, w).items():
                spec.append((f"block{j + 1}_{name}", shape))
            h, w = h // 2, w // 2
        for name, shape in self.head.state_shapes().items():
            spec.append((f"head_{name}", shape))
        return tuple(spec)

    def state_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.state_spec())

    def initial_state(
        self,
        batch: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> NetState:
        """All-zero state, full shape ``[batch, *shape]`` for every item."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        if device is None:
            device = next(self.parameters()).device
        return NetState(
            {
                name: torch.zeros(batch, *shape, device=device, dtype=dtype)
                for name, shape in self.state_spec()
            }
        )

    def _check_state(self, state: Mapping[str, Tensor], batch: int) -> None:
        spec = dict(self.state_spec())
        missing = [n for n in spec if n not in state]
        unexpected = [n for n in state if n not in spec]
        wrong = [
            f"{n}: {list(state[n].shape)} != {[batch, *spec[n]]}"
            for n in spec
            if n in state and tuple(state[n].shape) != (batch, *spec[n])
        ]
        if missing or unexpected or wrong:
            raise ValueError(
                f"state does not match this network: missing {missing}, "
                f"unexpected {unexpected}, wrong shapes {wrong}"
            )

    def _check_frames(self, frames: Tensor, leading: int) -> None:
        want = (self.config.in_channels, *self.config.input_size)
        if frames.dim() != leading + 3 or tuple(frames.shape[leading:]) != want:
            lead = "[T, B, " if leading == 2 else "[B, "
            raise ValueError(
                f"frames must be {lead}{', '.join(map(str, want))}], got {list(frames.shape)}"
            )
        if not frames.is_floating_point():
            raise TypeError(f"frames must be a float tensor, got {frames.dtype}")

    # -- forms ---------------------------------------------------------------------------

    def sequence(
        self, frames: Tensor, state: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, NetState]:
        """Run a sequence (training, offline evaluation, or chunked streaming).

        Args:
            frames: [T, B, C_in, H, W] event-count frames.
            state: State before the first step; zeros when None.

        Returns:
            ``(logits[T, B, num_classes], state_after_last_step)``.
        """
        self._check_frames(frames, 2)
        batch = frames.shape[1]
        if state is None:
            state = self.initial_state(batch, frames.device, frames.dtype)
        else:
            self._check_state(state, batch)
        new: dict[str, Tensor] = {}
        x = frames
        for j, block in enumerate(self._blocks()):
            prefix = f"block{j + 1}_"
            x, sub = block.sequence(x, _sub(state, prefix))
            new.update(_prefixed(sub, prefix))
        logits, sub = self.head.sequence(x, _sub(state, "head_"))
        new.update(_prefixed(sub, "head_"))
        return logits, NetState({n: new[n] for n in self.state_names()})

    def step(self, frames: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, NetState]:
        """One streaming step (eval mode, causal temporal attention).

        Args:
            frames: [B, C_in, H, W] event-count frame of one time bin.
            state: State after the previous step (``initial_state(B)`` at the start).

        Returns:
            ``(logits[B, num_classes], next_state)``.

        Raises:
            RuntimeError: In training mode (AZO and the per-sequence dropout mask need the
                whole sequence; train with :meth:`sequence`).
            ValueError: On a paper-temporal network or mismatched frames/state.
        """
        if self.training:
            raise RuntimeError(
                "step() is the inference form: call model.eval() first, or train with sequence()"
            )
        if self.config.temporal != "causal":
            raise ValueError(
                f"step() needs temporal='causal', this network is "
                f"{self.config.temporal!r}; use sequence() for the paper mode"
            )
        self._check_frames(frames, 1)
        self._check_state(state, frames.shape[0])
        new: dict[str, Tensor] = {}
        x = frames
        for j, block in enumerate(self._blocks()):
            prefix = f"block{j + 1}_"
            x, sub = block.step(x, _sub(state, prefix))
            new.update(_prefixed(sub, prefix))
        logits, sub = self.head.step(x, _sub(state, "head_"))
        new.update(_prefixed(sub, "head_"))
        return logits, NetState({n: new[n] for n in self.state_names()})

    def forward(
        self, frames: Tensor, state: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, NetState]:
        return self.sequence(frames, state)


# -- readout and losses ------------------------------------------------------------------


def mean_readout(logits: Tensor) -> Tensor:
    """Clip prediction: mean of the per-step logits over T. [T, B, K] -> [B, K]."""
    return logits.mean(dim=0)


def mse_onehot_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The paper's DVS128 loss: MSE between the mean logits and the one-hot label.

    Args:
        logits: [T, B, K].
        labels: [B] int64 class indices.
    """
    target = nn.functional.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return nn.functional.mse_loss(mean_readout(logits), target)


def tet_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """TET: mean over t of the cross-entropy of each step's logits. [T, B, K], [B]."""
    t_steps = logits.shape[0]
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels.repeat(t_steps))


# -- sizes -------------------------------------------------------------------------------


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (BN running statistics are buffers and not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_macs(config: SMASNNConfig) -> dict[str, int]:
    """Multiply-adds per time step at batch 1, by layer, from the layer shapes.

    Counts the convs and FCs (BN is folded into the convs at export; pooling, LIF and the
    elementwise fusion are not multiply-adds of weights). The paper temporal attention,
    which runs once per sequence, is amortised over its T steps.
    """
    macs: dict[str, int] = {}
    h, w = config.input_size
    cin = config.in_channels
    for j, cout in enumerate(config.widths):
        name = f"block{j + 1}"
        macs[f"{name}.conv"] = cout * cin * 9 * h * w
        if j in config.sma_blocks:
            for k in config.sma_kernels:
                macs[f"{name}.sma.conv{k}"] = cout * cout * k * k * h * w
            hidden = cout // config.sma_reduction
            att = cout * hidden + hidden * len(config.sma_kernels) * cout
            if config.temporal == "paper":
                t = config.time_steps
                att += math.ceil((t * (t // 4) + (t // 4) * len(config.sma_kernels) * t) / t)
            else:
                k_win = config.window
                att += k_win * (k_win // 4) + (k_win // 4) * len(config.sma_kernels)
            macs[f"{name}.sma.attention"] = att
        h, w = h // 2, w // 2
        cin = cout
    sizes = (config.flat_features, *config.head_hidden, config.num_classes)
    for j, (a, b) in enumerate(itertools.pairwise(sizes)):
        macs[f"head.fc{j + 1}"] = a * b
    return macs


# -- checkpoints -------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path, model: SMASNN, extra: Mapping[str, Any] | None = None
) -> None:
    """Save weights, BN statistics and the config (enough to rebuild the network).

    Args:
        path: Destination file.
        model: The network.
        extra: Small plain values to keep alongside (epoch, metrics...): str, int, float,
            bool, lists/dicts of them, or tensors.
    """
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": config_to_dict(model.config),
            "state_dict": model.state_dict(),
            "extra": dict(extra or {}),
        },
        str(path),
    )


def _load_error(exc: BaseException) -> str:
    """torch's reason in one line, without its advice to retry with ``weights_only=False``
    (never unpickle an untrusted file: that runs arbitrary code)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].strip()
        reason = reason.split(". ", 1)[0].split("\n", 1)[0].strip().rstrip(".")
        return f"refused by the safe loader: {reason or 'not plain tensors and containers'}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first if "weights_only" not in first else "refused by the safe loader"


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[SMASNN, dict[str, Any]]:
    """Rebuild a network from a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(model in eval mode, extra)``.

    Raises:
        FormatError: If the file is not such a checkpoint (one line, no traceback in the
            CLI).
    """
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" on junk
            warnings.simplefilter("ignore")
            data = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = _load_error(exc)
        raise FormatError(path, None, f"not a readable torch checkpoint ({reason})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(path, None, f"not a {CHECKPOINT_FORMAT} checkpoint")
    if data.get("version") != CHECKPOINT_VERSION:
        raise FormatError(
            path,
            None,
            f"checkpoint version {data.get('version')!r} not "
            f"supported (this code reads {CHECKPOINT_VERSION})",
        )
    try:
        config = config_from_dict(data["config"])
        model = SMASNN(config)
        model.load_state_dict(data["state_dict"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        cause = f"checkpoint does not describe a valid network: {exc}"
        raise FormatError(path, None, cause) from exc
    model.eval()
    return model, dict(data.get("extra", {}))
