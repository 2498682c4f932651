"""The training loop: both protocols, AdamW + warm-up + cosine, AMP, DDP, atomic checkpoints.

Protocols (see :class:`~smastream.train.config.TrainConfig`):

``stream`` (the product's)
    Recordings in fixed time bins, ``B`` lanes of consecutive chunks
    (:class:`~smastream.train.datasets.StreamBatcher`). The network state is carried from
    one chunk to the next of the same recording and detached between chunks (truncated
    BPTT); a lane's state is zeroed when the batcher flags ``reset``. Every step has a
    target. **"No gesture" is a 12th output class** (``no_gesture_class=True``, the
    default): the gaps between gestures are trained as class 11 (``"no gesture"``, listed
    last in ``class_names``), so the live "nothing is happening" decision is learnt rather
    than left to a confidence threshold. The live pipeline maps the class named
    ``"no gesture"`` to no decision. With ``no_gesture_class=False`` gap steps are masked
    from the loss and the model has 11 outputs. Loss: per-step cross-entropy.

``clip`` (the paper's)
    One sample per labelled window: ``T`` equal-event-count frames, fresh state, loss MSE
    between the time-averaged logits and the one-hot label (or TET). SMA temporal
    attention defaults to the paper's (non-causal) mode.

Structure: :func:`train` prepares the run (resume or ``--init``, data, network,
optimizer) and loops over epochs; what differs between the protocols lives in one small
strategy each (``_StreamProtocol``, ``_ClipProtocol``: their datasets, one training epoch,
validation), what is written per epoch in ``_RunFolder``. Both protocols use the tested
losses (:func:`stream_loss` with :func:`mask_no_gesture`; :func:`clip_loss` over
:func:`~smastream.engine.model.mse_onehot_loss` / ``tet_loss``). Data plumbing shared
with evaluation (synthetic recordings by seed, sensor size, binner geometry) is in
:mod:`smastream.train.data`; the export is :func:`smastream.engine.export.export_checkpoint`.

Run folder (``config.out``)::

    config.json        the resolved TrainConfig
    metrics.jsonl      one JSON object per epoch (loss, accuracy, lr, validation, time)
    last.pt, best.pt   checkpoints (weights, config, optimizer, RNG, history); written to
                       a temporary name and renamed, so a crash never leaves half a file
    loss.png, accuracy.png, confusion.png
    model.onnx (+ model.json), model.plan with --backend tensorrt

Resuming (``resume=...``) restores weights, optimizer, step counter, history and the
torch RNG, and continues with the next epoch: on CPU the losses are exactly those of an
uninterrupted run (the shuffles are seeded by ``seed`` and the epoch, not by a global
generator).

Multi-GPU: start with ``torchrun --nproc_per_node N -m smastream train ...``; when
``WORLD_SIZE > 1`` the loop calls ``init_process_group`` (NCCL on CUDA, Gloo on CPU),
wraps the network in DDP, splits recordings (stream) or samples (clip) by rank, and only
rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from smastream.engine.model import (
    SMASNN,
    NetState,
    load_checkpoint,
    mean_readout,
    mse_onehot_loss,
    preset_config,
    save_checkpoint,
    tet_loss,
)
from smastream.engine.torch_runtime import with_flush_denormal
from smastream.errors import FormatError, SmastreamError
from smastream.gestures import CLASS_NAMES, NUM_CLASSES

from .config import (
    TrainConfig,
    config_from_mapping,
    config_to_dict,
    parse_data_spec,
    parse_scene_weights,
)
from .data import SYNTH_SENSOR, VAL_SEED_OFFSET, geometry_for, sensor_of, synthetic_recordings
from .datasets import (
    NO_GESTURE,
    PAD_TARGET,
    ClipConfig,
    ClipDataset,
    PendingEntries,
    Recording,
    StreamBatcher,
    StreamConfig,
    StreamDataset,
    StreamPrefetcher,
    check_label_span,
    find_labelled_recordings,
)

__all__ = [
    "NO_GESTURE_NAME",
    "EpochResult",
    "OnsetClock",
    "TrainResult",
    "augment_seeds",
    "build_model",
    "class_names_for",
    "clip_loss",
    "load_data",
    "load_initial_weights",
    "lr_at",
    "mask_no_gesture",
    "resolve_device",
    "seed_everything",
    "stream_loss",
    "train",
]

log = logging.getLogger(__name__)

NO_GESTURE_NAME = "no gesture"
"""Name of the 12th class of stream-protocol models (the live path maps it to no decision)."""

# --------------------------------------------------------------------------- pure helpers


def class_names_for(n_outputs: int) -> tuple[str, ...]:
    """Output names in logit order: the 11 gestures, plus ``"no gesture"`` last for 12."""
    if n_outputs == NUM_CLASSES:
        return CLASS_NAMES
    if n_outputs == NUM_CLASSES + 1:
        return (*CLASS_NAMES, NO_GESTURE_NAME)
    raise ValueError(f"n_outputs must be {NUM_CLASSES} or {NUM_CLASSES + 1}, got {n_outputs!r}")


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warm-up, then cosine to 0.

    ``total_steps`` is the planned number of steps; past it the rate stays at 0.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def mask_no_gesture(targets: Tensor, no_gesture_class: bool) -> Tensor:
    """Stream targets as the loss counts them: "no gesture" steps become
    :data:`PAD_TARGET` (not counted) unless ``no_gesture_class``."""
    if no_gesture_class:
        return targets
    return torch.where(targets == NO_GESTURE, torch.full_like(targets, PAD_TARGET), targets)


def stream_loss(
    logits: Tensor, targets: Tensor, no_gesture_class: bool, weights: Tensor | None = None
) -> tuple[Tensor, int]:
    """Per-step cross-entropy over the valid steps of a stream batch.

    Args:
        logits: ``[S, B, K]``.
        targets: ``[S, B]`` int64: a class, :data:`NO_GESTURE` or :data:`PAD_TARGET`.
        no_gesture_class: Train "no gesture" steps as class 11; else mask them out.
        weights: ``[S, B]`` per-step weights (e.g. :class:`OnsetClock`'s); ``None``: all 1.
            The loss is the weighted mean over the counted steps.

    Returns:
        ``(mean loss over the counted steps, number of counted steps)``; the loss is a
        zero that keeps the graph when no step counts.
    """
    t = mask_no_gesture(targets, no_gesture_class)
    n = int((t != PAD_TARGET).sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    ce = nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), t.flatten(), ignore_index=PAD_TARGET, reduction="none"
    )
    w = (t.flatten() != PAD_TARGET).float()
    if weights is not None:
        w = w * weights.flatten().float()
    return (ce * w).sum() / w.sum(), n


class OnsetClock:
    """Per-step loss weights that stress the first steps of every gesture.

    A gesture step gets ``weight`` while it is one of the first ``steps`` steps of its
    gesture (counted from the first step with that class, across the chunks of a lane),
    a "no gesture" step ``idle_weight``, every other step 1. The clock carries each
    lane's last target and run length from batch to batch; a lane flagged in ``reset``
    starts a new recording. The weights depend on the target, so they move the per-step
    optimum as a prior would: ``weight`` towards the gesture classes where an input
    could be the start of a gesture or no gesture (onsets come sooner, and so do false
    gestures), ``idle_weight`` back towards "no gesture".
    """

    def __init__(
        self, batch_size: int, steps: int, weight: float, idle_weight: float = 1.0
    ) -> None:
        self.steps, self.weight, self.idle_weight = int(steps), float(weight), float(idle_weight)
        self.last = torch.full((batch_size,), PAD_TARGET, dtype=torch.int64)
        self.run = torch.zeros(batch_size, dtype=torch.int64)

    def weights(self, targets: Tensor, reset: Tensor) -> Tensor:
        """``[S, B]`` weights of a batch's ``targets`` (``[S, B]``, on CPU), ``reset`` ``[B]``."""
        last = torch.where(reset, torch.full_like(self.last, PAD_TARGET), self.last)
        run = torch.where(reset, torch.zeros_like(self.run), self.run)
        out = torch.ones(targets.shape, dtype=torch.float32)
        for s in range(targets.shape[0]):
            t = targets[s]
            run = torch.where(t == last, run + 1, torch.zeros_like(run))
            last = t
            early = (t >= 0) & (t != NO_GESTURE) & (run < self.steps)
            rest = torch.where(t == NO_GESTURE, self.idle_weight, 1.0)
            out[s] = torch.where(early, self.weight, rest)
        self.last, self.run = last, run
        return out


def onset_steps(cfg: TrainConfig) -> int:
    """The steps :class:`OnsetClock` weights: ``cfg.onset_ms`` in bins, at least 1."""
    return max(1, round(cfg.onset_ms * 1000 / cfg.bin_us))


def _counted_steps(
    logits: Tensor, targets: Tensor, no_gesture_class: bool
) -> tuple[Tensor, Tensor]:
    """The steps :func:`stream_loss` counts, as 1-D ``(targets, argmax predictions)``."""
    t = mask_no_gesture(targets, no_gesture_class)
    valid = t != PAD_TARGET
    return t[valid], logits.detach().argmax(-1)[valid]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds third-party code using it
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available (the local rank's under torchrun), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SmastreamError(f"device {name!r} requested but CUDA is not available")
    return dev


def build_model(cfg: TrainConfig) -> SMASNN:
    """The network a config describes (preset + protocol-dependent overrides)."""
    overrides: dict[str, Any] = {
        "num_classes": cfg.n_outputs,
        "temporal": cfg.resolved_temporal,
        "azo": cfg.azo,
        "azo_rtr": cfg.azo_rtr,
        "azo_rcr": cfg.azo_rcr,
    }
    if cfg.resolved_temporal == "paper":
        overrides["time_steps"] = cfg.n_frames if cfg.protocol == "clip" else cfg.chunk_steps
    if cfg.head_tau is not None:
        overrides["head_tau"] = float(cfg.head_tau)
    if cfg.head_slow_tau is not None:
        overrides["head_slow_tau"] = float(cfg.head_slow_tau)
    if cfg.preset == "edge" and cfg.width is not None:
        overrides["width"] = cfg.width
    if cfg.preset == "edge" and cfg.input_size is not None:
        overrides["input_size"] = cfg.input_size
    return SMASNN(preset_config(cfg.preset, **overrides))


def load_data(
    cfg: TrainConfig, rank: int = 0
) -> tuple[list[Recording], list[Recording], tuple[int, int]]:
    """Training and validation recordings, and their sensor size.

    Raises:
        SmastreamError / FormatError: no recordings, a missing or corrupt file, a label
            window outside its recording (one line naming the file).
    """
    kind, root = parse_data_spec(cfg.data)
    cache = cfg.resolved_cache_dir
    if kind == "synthetic":
        folder = cache / "synthetic"
        seeds = [cfg.synth_seed + i for i in range(cfg.synth_recordings)]
        vseeds = [cfg.synth_seed + VAL_SEED_OFFSET + i for i in range(cfg.synth_val_recordings)]
        weights = parse_scene_weights(cfg.synth_scene_weights)
        options = {"scene_weights": weights} if weights else None
        if rank == 0:
            synthetic_recordings(
                folder, seeds + vseeds, cfg.synth_seconds, cfg.progress, cfg.workers, options
            )
        _barrier()
        train_recs = synthetic_recordings(folder, seeds, cfg.synth_seconds, False, 0, options)
        val_recs = synthetic_recordings(folder, vseeds, cfg.synth_seconds, False, 0, options)
    elif kind == "dvsgesture":
        from .dvsgesture import dvsgesture_recordings, prepare_dvsgesture

        base = Path(root) if root else cache / "dvsgesture"
        data_dir = prepare_dvsgesture(base, progress=cfg.progress) if rank == 0 else None
        _barrier()
        if data_dir is None:
            data_dir = prepare_dvsgesture(base, download_missing=False, progress=False)
        train_recs = dvsgesture_recordings(data_dir, "train", check_span=True)
        val_recs = dvsgesture_recordings(data_dir, "test", check_span=True)
    else:
        train_recs = find_labelled_recordings(root or cfg.data, check_span=True)
        val_recs = []
    if cfg.val_data is not None:
        val_recs = find_labelled_recordings(cfg.val_data, check_span=True)
    if not train_recs:
        raise SmastreamError(f"{cfg.data}: no labelled recordings found")
    for rec in val_recs if kind == "synthetic" else []:
        check_label_span(rec)
    sensor = SYNTH_SENSOR if kind == "synthetic" else sensor_of(train_recs[0])
    return train_recs, val_recs, sensor


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), local)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _all_reduce(values: Sequence[float], device: torch.device, op: str = "sum") -> list[float]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]


class _SequenceAdapter(nn.Module):
    """``forward(frames, *state) -> (logits, *state)`` with plain tensors, for DDP."""

    def __init__(self, model: SMASNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        names = self.model.state_names()
        st = NetState(dict(zip(names, state, strict=True))) if state else None
        logits, new = self.model.sequence(frames, st)
        return (logits, *new.tensors())


# --------------------------------------------------------------------------- results


@dataclass
class EpochResult:
    """One epoch's metrics (one line of ``metrics.jsonl``)."""

    epoch: int
    step: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    time_s: float
    batches: int


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: Every epoch's :class:`EpochResult` (including resumed ones).
        last_checkpoint, best_checkpoint: Paths (best = highest validation accuracy, or
            the last when there is no validation data).
        exported: Paths of the exported model files (empty when export is off).
        model: The trained network (eval mode).
        losses: Per-batch training losses of this process's run (for tests).
    """

    history: list[EpochResult]
    last_checkpoint: Path
    best_checkpoint: Path
    exported: list[Path]
    model: SMASNN
    losses: list[float]


# --------------------------------------------------------------------------- checkpoints


def _atomic_checkpoint(path: Path, model: SMASNN, extra: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_checkpoint(tmp, model, extra)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _history_from(extra: dict[str, Any]) -> list[EpochResult]:
    return [EpochResult(**h) for h in extra.get("history", [])]


# --------------------------------------------------------------------------- epochs


def _progress(it: Iterable[Any], total: int, desc: str, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield from it
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from it
        return
    bar = tqdm(it, total=total, desc=desc, unit="batch", file=sys.stderr, leave=False)
    try:
        yield from bar
    finally:
        bar.close()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): there oneDNN's
    bf16 convolutions are faster than fp32; elsewhere they are emulated, and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def amp_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``TrainConfig.amp`` on ``device``: float16 on CUDA (with loss
    scaling), bfloat16 on a CPU with native bf16, else ``None`` (float32 throughout).

    Autocast lowers only the convolutions and matrix products; the membranes, the state
    carried between chunks and the loss stay float32, and exported models are float32."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _reset_lanes(state: NetState, reset: Tensor) -> NetState:
    """Zero the state of the lanes flagged in ``reset`` ([B] bool), detach the rest."""
    out = {}
    for name, v in state.items():
        keep = (~reset).to(v.dtype).view(-1, *([1] * (v.dim() - 1)))
        out[name] = v.detach() * keep
    return NetState(out)


class _Stepper:
    """Optimizer step with the schedule, grad clipping and optional AMP scaling."""

    def __init__(
        self, cfg: TrainConfig, params: list[nn.Parameter], device: torch.device, total: int
    ) -> None:
        self.cfg = cfg
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.amp_dtype = amp_dtype(cfg.amp, device)
        self.use_amp = self.amp_dtype is torch.float16  # loss scaling: fp16 only
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step = 0
        self.total = total
        self.device = device

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def lr(self) -> float:
        return lr_at(self.step, self.total, self.cfg.lr, self.cfg.warmup_steps)

    def __call__(self, loss: Tensor) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step += 1


def _stream_epoch(
    net: nn.Module,
    model: SMASNN,
    batcher: StreamBatcher,
    stepper: _Stepper,
    cfg: TrainConfig,
    n_batches: int,
    desc: str,
    losses: list[float],
) -> tuple[float, float]:
    device = stepper.device
    state = model.initial_state(batcher.batch_size, device)
    clock = OnsetClock(batcher.batch_size, onset_steps(cfg), cfg.onset_weight, cfg.idle_weight)
    tot_loss = tot_n = tot_ok = 0.0
    net.train()
    it = iter(batcher)
    for _ in _progress(range(n_batches), n_batches, desc, cfg.progress):
        batch = next(it)
        frames = batch.frames.to(device, non_blocking=True)
        weights = clock.weights(batch.targets, batch.reset).to(device)
        targets = batch.targets.to(device)
        state = _reset_lanes(state, batch.reset.to(device))
        with stepper.autocast():
            out = net(frames, *state.tensors())
        logits = out[0]
        state = NetState(dict(zip(model.state_names(), (t.float() for t in out[1:]), strict=True)))
        loss, n = stream_loss(logits, targets, cfg.no_gesture_class, weights)
        stepper(loss)
        losses.append(float(loss.detach()))
        if n:
            counted, pred = _counted_steps(logits, targets, cfg.no_gesture_class)
            tot_ok += float((pred == counted).sum())
            tot_loss += float(loss.detach()) * n
            tot_n += n
    tot_loss, tot_ok, tot_n = _all_reduce([tot_loss, tot_ok, tot_n], device)
    return tot_loss / max(tot_n, 1), tot_ok / max(tot_n, 1)


@torch.no_grad()
def _stream_validate(
    model: SMASNN, ds: StreamDataset, cfg: TrainConfig, device: torch.device
) -> tuple[float, float, npt.NDArray[np.int64]]:
    """Per-step loss, accuracy and confusion (target x argmax, ``[K, K]``) on whole
    validation recordings, state carried (``sequence`` in eval mode, one chunk at a time;
    equal to the step form)."""
    model.eval()
    k = cfg.n_outputs
    conf = np.zeros((k, k), dtype=np.int64)
    tot_loss = tot_n = 0.0
    for r, n_chunks in enumerate(ds.chunks_per_recording):
        state = None
        for c in range(n_chunks):
            frames, targets, _ = ds.chunk_arrays(r, c)
            x = torch.from_numpy(frames).unsqueeze(1).to(device)
            logits, state = model.sequence(x, state)
            t = torch.from_numpy(targets).unsqueeze(1).to(device)
            loss, n = stream_loss(logits, t, cfg.no_gesture_class)
            if n:
                counted, pred = _counted_steps(logits, t, cfg.no_gesture_class)
                np.add.at(conf, (counted.cpu().numpy(), pred.cpu().numpy()), 1)
                tot_loss += float(loss) * n
                tot_n += n
    return tot_loss / max(tot_n, 1), float(np.trace(conf)) / max(tot_n, 1), conf


def clip_loss(logits: Tensor, labels: Tensor, kind: str) -> Tensor:
    """The clip protocol's loss (in float32): :func:`~smastream.engine.model.tet_loss`
    for ``"tet"``, else the paper's :func:`~smastream.engine.model.mse_onehot_loss`."""
    logits = logits.float()
    if kind == "tet":
        return tet_loss(logits, labels)
    return mse_onehot_loss(logits, labels)


def _clip_loader(
    ds: ClipDataset, cfg: TrainConfig, epoch: int, dist_: _Dist, shuffle: bool
) -> torch.utils.data.DataLoader[tuple[Tensor, int]]:
    gen = torch.Generator()
    gen.manual_seed(cfg.seed * 1000 + epoch)
    sampler: Any = None
    if dist_.world > 1:
        from torch.utils.data.distributed import DistributedSampler

        ds_sampler: DistributedSampler[tuple[Tensor, int]] = DistributedSampler(
            ds, num_replicas=dist_.world, rank=dist_.rank, shuffle=shuffle, seed=cfg.seed
        )
        ds_sampler.set_epoch(epoch)
        sampler = ds_sampler
    return torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=gen,
        num_workers=cfg.workers,
        drop_last=False,
    )


def _clip_epoch(
    net: nn.Module,
    loader: torch.utils.data.DataLoader[tuple[Tensor, int]],
    stepper: _Stepper,
    cfg: TrainConfig,
    n_batches: int,
    desc: str,
    losses: list[float],
) -> tuple[float, float]:
    device = stepper.device
    net.train()
    tot_loss = tot_ok = tot_n = 0.0
    it = iter(loader)
    for _ in _progress(range(n_batches), n_batches, desc, cfg.progress):
        frames, labels = next(it)
        x = frames.to(device).transpose(0, 1).contiguous()  # [T, B, 2, H, W]
        y = labels.to(device)
        with stepper.autocast():
            logits = net(x)[0]
        loss = clip_loss(logits, y, cfg.resolved_loss)
        stepper(loss)
        losses.append(float(loss.detach()))
        pred = mean_readout(logits.detach().float())[:, :NUM_CLASSES].argmax(-1)
        tot_ok += float((pred == y).sum())
        tot_loss += float(loss.detach()) * len(y)
        tot_n += len(y)
    tot_loss, tot_ok, tot_n = _all_reduce([tot_loss, tot_ok, tot_n], device)
    return tot_loss / max(tot_n, 1), tot_ok / max(tot_n, 1)


@torch.no_grad()
def _clip_validate(
    model: SMASNN, ds: ClipDataset, cfg: TrainConfig, device: torch.device
) -> tuple[float, float, npt.NDArray[np.int64]]:
    """Clip loss, accuracy and confusion (label x prediction, ``[11, 11]``)."""
    model.eval()
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    tot_loss = 0.0
    for i in range(0, len(ds), cfg.batch_size):
        items = [ds[j] for j in range(i, min(i + cfg.batch_size, len(ds)))]
        x = torch.stack([f for f, _ in items], 1).to(device)
        y = torch.tensor([lab for _, lab in items], device=device)
        logits, _ = model.sequence(x)
        tot_loss += float(clip_loss(logits, y, cfg.resolved_loss)) * len(y)
        pred = mean_readout(logits)[:, :NUM_CLASSES].argmax(-1)
        np.add.at(conf, (y.cpu().numpy(), pred.cpu().numpy()), 1)
    return tot_loss / max(len(ds), 1), float(np.trace(conf)) / max(len(ds), 1), conf


# --------------------------------------------------------------------------- train


def augment_seeds(cfg: TrainConfig) -> list[int | None]:
    """``augment_seed`` of every distinct training draw of the stream protocol (epoch ``e``
    plays draw ``e % len``; draw ``k`` is ``seed * 1000 + k`` whatever the number of
    draws, :attr:`TrainConfig.resolved_augment_copies`): ``[None]`` without augmentation."""
    if not cfg.resolved_augment:
        return [None]
    return [cfg.seed * 1000 + k for k in range(cfg.resolved_augment_copies)]


def load_initial_weights(model: SMASNN, path: str | Path) -> None:
    """Load a state dict (``torch.save(model.state_dict())``) into ``model`` to fine-tune.

    Raises:
        SmastreamError: the file is missing or not a state dict.
        FormatError: not a torch state dict.
        SmastreamError: a missing/unexpected tensor or a shape that differs from the
            network the config builds (one line naming the file and the first difference).
    """
    path = Path(path)
    if not path.is_file():
        raise SmastreamError(f"{path}: no weights file to start from (--init)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of a damaged or foreign file
        raise FormatError(path, None, f"not a torch state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise FormatError(
            path, None, "not a state dict of tensors (torch.save(model.state_dict()))"
        )
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise SmastreamError(
            f"{path}: weights do not fit the network ({what}; {len(missing)} missing, "
            f"{len(extra)} unexpected): check --preset, --width, --protocol",
        )
    for name, tensor in own.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise SmastreamError(
                f"{path}: weights do not fit the network: {name} is {tuple(state[name].shape)}, "
                f"the config's network has {tuple(tensor.shape)} (check --preset, --width, "
                "--no-gesture-class, --input-size)",
            )
    model.load_state_dict(state)


def _resume_source(resume: str | Path | bool | None, out: Path) -> Path | None:
    if resume in (None, False):
        return None
    path = out / "last.pt" if resume is True else Path(str(resume))
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise SmastreamError(f"{path}: no checkpoint to resume from")
    return path


_KEPT_ON_RESUME = (
    "epochs",
    "out",
    "progress",
    "device",
    "max_batches",
    "backend",
    "cache_dir",
    "threads",
    "workers",
)
"""Settings a resumed run may take from the command line; the rest come from the checkpoint."""


def _resumed(
    cfg: TrainConfig, path: Path, given: Collection[str] | None = None
) -> tuple[TrainConfig, SMASNN, dict[str, Any]]:
    """The checkpoint's network and extra dict, and its training config with those of
    :data:`_KEPT_ON_RESUME` taken from ``cfg`` that are in ``given`` (``None``: all of them;
    ``out`` always: the run folder is where the run continues)."""
    loaded, extra = load_checkpoint(path)
    saved = extra.get("train_config")
    if not isinstance(saved, dict):
        raise FormatError(path, None, "checkpoint has no training config to resume")
    names = [k for k in _KEPT_ON_RESUME if given is None or k in given or k == "out"]
    keep = {k: getattr(cfg, k) for k in names}
    return config_from_mapping({**saved, **keep}), loaded, extra


def _network(cfg: TrainConfig, loaded: SMASNN | None, source: Path, device: torch.device) -> SMASNN:
    """The network to train: built from ``cfg``, then the resumed weights, or ``--init``."""
    model = build_model(cfg)
    if loaded is not None:
        if loaded.config != model.config:
            raise FormatError(source, None, "checkpoint network does not match the training config")
        model.load_state_dict(loaded.state_dict())
    elif cfg.init is not None:
        load_initial_weights(model, cfg.init)
    return model.to(device)


def _restore(
    stepper: _Stepper, extra: dict[str, Any], rank: int
) -> tuple[int, list[EpochResult], float]:
    """Optimizer, scaler, step counter and torch RNG from a checkpoint; returns
    ``(first epoch to run, history, best score)``."""
    stepper.opt.load_state_dict(extra["optimizer"])
    if extra.get("scaler"):
        stepper.scaler.load_state_dict(extra["scaler"])
    stepper.step = int(extra["step"])
    if "rng_torch" in extra and rank == 0:
        torch.set_rng_state(extra["rng_torch"])
    return int(extra["epoch"]) + 1, _history_from(extra), float(extra.get("best", -math.inf))


def _wrap(model: SMASNN, dist_: _Dist, device: torch.device) -> nn.Module:
    """``model`` as plain-tensor ``forward`` (:class:`_SequenceAdapter`), in DDP when
    there is more than one process."""
    net: nn.Module = _SequenceAdapter(model)
    if dist_.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    return net


# --------------------------------------------------------------------------- protocols

Validation = tuple[float, float, npt.NDArray[np.int64]]
"""``(loss, accuracy, confusion)`` of a validation pass."""


class _StreamProtocol:
    """The stream protocol's data and its epochs.

    Epoch ``e`` plays draw ``e % K`` of the training recordings (:func:`augment_seeds`;
    without augmentation one draw: the recordings as they are), one :class:`StreamDataset`
    per draw, shuffled per epoch by a :class:`StreamBatcher`. Draws are binned when
    needed: draw 0 before training (its batches set the epoch length); while epoch ``e``
    trains, the draw of epoch ``e + 1`` is binned in background processes
    (:class:`StreamPrefetcher`), so the next epoch starts on binned data. A draw in the
    cache is reused. With a fresh draw every epoch (``augment_copies=None``) each draw
    after the first is played once and removed from the cache after its epoch.
    """

    unit = "steps"

    def __init__(
        self,
        cfg: TrainConfig,
        train_recs: list[Recording],
        val_recs: list[Recording],
        sensor: tuple[int, int],
        geo: dict[str, Any],
        dist_: _Dist,
    ) -> None:
        self.cfg, self.dist = cfg, dist_
        self.recordings = train_recs
        self.cache, self.progress = cfg.resolved_cache_dir, cfg.progress and dist_.main
        self.scfg = StreamConfig(
            bin_us=cfg.bin_us, chunk_steps=cfg.chunk_steps, sensor_size=sensor, **geo
        )
        self.seeds = augment_seeds(cfg)
        self.draws: dict[int, StreamDataset] = {}
        self._pending: dict[int, PendingEntries] = {}
        self._prefetcher = (
            StreamPrefetcher(self.cache, cfg.workers, progress=self.progress)
            if len(self.seeds) > 1
            else None
        )
        self.first = self.draw(0)
        self.val = (
            StreamDataset(
                val_recs, self.cache, self.scfg, progress=self.progress, workers=cfg.workers
            )
            if val_recs
            else None
        )

    def _config(self, d: int) -> StreamConfig:
        return dataclasses.replace(self.scfg, augment_seed=self.seeds[d])

    def draw(self, d: int) -> StreamDataset:
        """Draw ``d``'s dataset: binned now unless it is, or is being binned, already."""
        ds = self.draws.get(d)
        if ds is None:
            pending = self._pending.pop(d, None)
            if pending is not None:
                if not pending.done():
                    log.info("waiting for the background binning of draw %d", d)
                pending.wait()
            ds = StreamDataset(
                self.recordings,
                self.cache,
                self._config(d),
                progress=self.progress,
                workers=self.cfg.workers,
            )
            self.draws[d] = ds
        return ds

    def prefetch(self, d: int, epoch: int) -> None:
        """Start binning draw ``d`` (for ``epoch``) in the background."""
        if self._prefetcher is None or d in self.draws or d in self._pending:
            return
        desc = f"binning epoch {epoch + 1}'s draw (background)"
        self._pending[d] = self._prefetcher.submit(self.recordings, self._config(d), desc)

    def batcher(self, ds: StreamDataset) -> StreamBatcher:
        return StreamBatcher(
            ds,
            self.cfg.batch_size,
            shuffle=True,
            seed=self.cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world,
        )

    def batches_per_epoch(self) -> int:
        return len(self.batcher(self.first))

    def train_epoch(
        self,
        net: nn.Module,
        model: SMASNN,
        stepper: _Stepper,
        epoch: int,
        n_batches: int,
        desc: str,
        losses: list[float],
    ) -> tuple[float, float]:
        """One epoch on draw ``epoch % K``: ``n_batches``, or fewer when the draw is shorter
        (time scaling) than draw 0."""
        d = epoch % len(self.seeds)
        ds = self.draw(d)
        if epoch + 1 < self.cfg.epochs:
            self.prefetch((epoch + 1) % len(self.seeds), epoch + 1)
        batcher = self.batcher(ds)
        batcher.set_epoch(epoch)
        n = int(_all_reduce([min(n_batches, len(batcher))], stepper.device, "min")[0])
        result = _stream_epoch(net, model, batcher, stepper, self.cfg, n, desc, losses)
        if self.cfg.augment_copies is None and d != 0:  # a fresh draw per epoch: played once
            self.draws.pop(d).remove_from_cache()
        return result

    def validate(self, model: SMASNN, device: torch.device) -> Validation | None:
        return None if self.val is None else _stream_validate(model, self.val, self.cfg, device)

    def close(self) -> None:
        """Stop the background binning (entries not started are cancelled)."""
        if self._prefetcher is not None:
            self._prefetcher.close()


class _ClipProtocol:
    """The clip protocol's data (a :class:`ClipDataset` of labelled windows) and its
    epochs (a seeded shuffle per epoch, :func:`_clip_loader`)."""

    unit = "clips"

    def __init__(
        self,
        cfg: TrainConfig,
        train_recs: list[Recording],
        val_recs: list[Recording],
        sensor: tuple[int, int],
        geo: dict[str, Any],
        dist_: _Dist,
    ) -> None:
        self.cfg, self.dist = cfg, dist_
        cache, progress = cfg.resolved_cache_dir, cfg.progress and dist_.main
        ccfg = ClipConfig(n_frames=cfg.n_frames, sensor_size=sensor, **geo)
        self.train = ClipDataset(train_recs, cache, ccfg, progress=progress, workers=cfg.workers)
        self.val = (
            ClipDataset(val_recs, cache, ccfg, progress=progress, workers=cfg.workers)
            if val_recs
            else None
        )

    def batches_per_epoch(self) -> int:
        return -(-len(self.train) // (self.cfg.batch_size * self.dist.world))

    def train_epoch(
        self,
        net: nn.Module,
        model: SMASNN,
        stepper: _Stepper,
        epoch: int,
        n_batches: int,
        desc: str,
        losses: list[float],
    ) -> tuple[float, float]:
        del model  # the clip protocol starts every sample from a fresh state
        loader = _clip_loader(self.train, self.cfg, epoch, self.dist, shuffle=True)
        return _clip_epoch(net, loader, stepper, self.cfg, n_batches, desc, losses)

    def validate(self, model: SMASNN, device: torch.device) -> Validation | None:
        return None if self.val is None else _clip_validate(model, self.val, self.cfg, device)

    def close(self) -> None:
        """Nothing runs in the background."""


_Strategy = _StreamProtocol | _ClipProtocol
_PROTOCOLS: dict[str, type[_Strategy]] = {"stream": _StreamProtocol, "clip": _ClipProtocol}


def _batches_per_epoch(protocol: _Strategy, cfg: TrainConfig, device: torch.device) -> int:
    """Batches every process runs per epoch: the fewest of any rank, at most
    ``max_batches``."""
    n = int(_all_reduce([protocol.batches_per_epoch()], device, "min")[0])
    if cfg.max_batches is not None:
        n = min(n, cfg.max_batches)
    if n < 1:
        raise SmastreamError(f"{cfg.data}: no training batches (too little data?)")
    return n


# --------------------------------------------------------------------------- run folder


class _RunFolder:
    """Rank 0's outputs: ``config.json``, then per epoch the checkpoints, a line of
    ``metrics.jsonl``, the progress line and the plots."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: SMASNN,
        sensor: tuple[int, int],
        geo: dict[str, Any],
        unit: str,
    ) -> None:
        self.cfg, self.model, self.sensor, self.geo, self.unit = cfg, model, sensor, geo, unit
        self.out = Path(cfg.out)
        self.names = class_names_for(cfg.n_outputs)
        self.last, self.best = self.out / "last.pt", self.out / "best.pt"
        self.out.mkdir(parents=True, exist_ok=True)
        _atomic_text(self.out / "config.json", json.dumps(config_to_dict(cfg), indent=2) + "\n")

    def _extra(
        self, epoch: int, stepper: _Stepper, history: list[EpochResult], best: float
    ) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "train_config": config_to_dict(cfg),
            "epoch": epoch,
            "step": stepper.step,
            "optimizer": stepper.opt.state_dict(),
            "scaler": stepper.scaler.state_dict() if stepper.use_amp else {},
            "rng_torch": torch.get_rng_state(),
            "history": [dataclasses.asdict(h) for h in history],
            "best": best,
            "class_names": list(self.names),
            "protocol": cfg.protocol,
            "bin_us": cfg.bin_us,
            "steps_per_window": cfg.steps_per_window,
            "sensor_size": list(self.sensor),
            "geometry": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.geo.items()},
        }

    def record(
        self,
        result: EpochResult,
        history: list[EpochResult],
        stepper: _Stepper,
        best: float,
    ) -> float:
        """Write an epoch's checkpoints (``best.pt`` when its score beats ``best``),
        metrics line and progress line; returns the new best score (validation accuracy,
        else training accuracy)."""
        score = result.val_accuracy if result.val_accuracy is not None else result.train_accuracy
        is_best = score > best
        best = max(best, score)
        extra = self._extra(result.epoch, stepper, history, best)
        _atomic_checkpoint(self.last, self.model, extra)
        if is_best:
            _atomic_checkpoint(self.best, self.model, extra)
        line = json.dumps(dataclasses.asdict(result))
        with (self.out / "metrics.jsonl").open("a") as fh:
            fh.write(line + "\n")
        log.info("%s", line)
        if self.cfg.progress:
            print(_epoch_line(result, self.cfg.epochs), file=sys.stderr, flush=True)
        return best

    def plot(self, history: list[EpochResult], confusion: npt.NDArray[np.int64] | None) -> None:
        """Loss and accuracy curves, and the latest validation confusion matrix."""
        try:
            from .plots import plot_confusion, plot_history

            plot_history([dataclasses.asdict(h) for h in history], self.out)
            if confusion is not None:
                labels = list(self.names[: confusion.shape[0]])
                title = f"validation, epoch {history[-1].epoch + 1} ({self.unit})"
                plot_confusion(confusion, labels, labels, self.out / "confusion.png", title)
        except ImportError:  # matplotlib is in the train extra
            log.warning("matplotlib missing: no plots")

    def checkpoint_to_export(self) -> Path:
        return self.best if self.best.is_file() else self.last


def _epoch_line(result: EpochResult, epochs: int) -> str:
    val = (
        ""
        if result.val_accuracy is None
        else f" | val loss {result.val_loss:.4f} acc {result.val_accuracy:.3f}"
    )
    return (
        f"epoch {result.epoch + 1}/{epochs}: loss {result.train_loss:.4f} "
        f"acc {result.train_accuracy:.3f}{val} | lr {result.lr:.2e} | {result.time_s:.0f} s"
    )


# --------------------------------------------------------------------------- train


@with_flush_denormal  # quiet membranes reach denormals: 30 s instead of 0.8 s per batch
def train(
    cfg: TrainConfig,
    *,
    resume: str | Path | bool | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    given: Collection[str] | None = None,
) -> TrainResult:
    """Train a network as ``cfg`` says; write checkpoints, metrics, plots and the export.

    Args:
        cfg: The configuration.
        resume: ``True`` (``cfg.out/last.pt``), a checkpoint path or run folder, or None.
            The resumed run takes the checkpoint's training config except ``epochs``,
            ``out``, ``progress``, ``device``, ``max_batches``, ``backend``,
            ``cache_dir``, ``threads`` and ``workers`` — of those, with ``given``, only
            the ones named there (the rest keep the checkpoint's values).
        on_epoch: Called after every epoch with its result (rank 0).
        given: The names of the settings the user set (``smastream train`` passes its
            TOML keys and flags); ``None``: every field of ``cfg`` counts as set.

    Returns:
        :class:`TrainResult`.

    Raises:
        SmastreamError, FormatError: bad data or checkpoint (one line, names the file).
    """
    out = Path(cfg.out)
    resume_path = _resume_source(resume, out)
    loaded: SMASNN | None = None
    ckpt_extra: dict[str, Any] = {}
    if resume_path is not None:
        cfg, loaded, ckpt_extra = _resumed(cfg, resume_path, given)

    dist_ = _init_distributed(cfg.device)
    device = resolve_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + dist_.rank)
    if loaded is None and cfg.init is not None:  # a bad --init fails before data preparation
        with torch.random.fork_rng():
            load_initial_weights(build_model(cfg), cfg.init)
    train_recs, val_recs, sensor = load_data(cfg, dist_.rank)
    model = _network(cfg, loaded, resume_path or out, device)
    geo = geometry_for(sensor, model.config.input_size)
    protocol: _Strategy = _PROTOCOLS[cfg.protocol](cfg, train_recs, val_recs, sensor, geo, dist_)
    per_epoch = _batches_per_epoch(protocol, cfg, device)

    params = [p for p in model.parameters() if p.requires_grad]
    stepper = _Stepper(cfg, params, device, cfg.epochs * per_epoch)
    if dist_.main and cfg.progress:
        amp = stepper.amp_dtype
        precision = "float32" if amp is None else f"{str(amp).removeprefix('torch.')} autocast"
        print(f"training on {device}, {precision}", file=sys.stderr, flush=True)
    start_epoch, best = 0, -math.inf
    history: list[EpochResult] = []
    if loaded is not None:
        start_epoch, history, best = _restore(stepper, ckpt_extra, dist_.rank)
    net = _wrap(model, dist_, device)
    run = _RunFolder(cfg, model, sensor, geo, protocol.unit) if dist_.main else None

    losses: list[float] = []
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            desc = f"epoch {epoch + 1}/{cfg.epochs}"
            played = len(losses)
            tr_loss, tr_acc = protocol.train_epoch(
                net, model, stepper, epoch, per_epoch, desc, losses
            )
            val = protocol.validate(model, device) if run is not None else None
            va_loss, va_acc, confusion = val if val is not None else (None, None, None)
            result = EpochResult(
                epoch=epoch,
                step=stepper.step,
                lr=stepper.lr,
                train_loss=tr_loss,
                train_accuracy=tr_acc,
                val_loss=va_loss,
                val_accuracy=va_acc,
                time_s=time.perf_counter() - t0,
                batches=len(losses) - played,
            )
            history.append(result)
            if run is not None:
                best = run.record(result, history, stepper, best)
                if on_epoch is not None:
                    on_epoch(result)
                run.plot(history, confusion)
    finally:
        protocol.close()
    _barrier()
    model.eval()
    exported: list[Path] = []
    if run is not None and cfg.backend != "none" and history:
        if model.config.temporal == "causal":
            exported = export_run(run.checkpoint_to_export(), out, cfg.backend)
        else:  # the checkpoints are the result; a failing export would end the run with 1
            print(
                "export skipped: a temporal='paper' network has no streaming form "
                "(evaluate the checkpoint with smastream evaluate)",
                file=sys.stderr,
            )
    if dist_.world > 1:
        torch.distributed.destroy_process_group()
    return TrainResult(history, out / "last.pt", out / "best.pt", exported, model, losses)


def export_run(checkpoint: Path, out: Path, backend: str) -> list[Path]:
    """Export a run's checkpoint to ``out/model.onnx`` (+ metadata; + engine for TensorRT).

    Uses :mod:`smastream.engine.export`; when that module is not installed the export is
    skipped with a warning (the checkpoint is complete without it).
    """
    try:
        from smastream.engine.export import export_checkpoint

        return export_checkpoint(checkpoint, out / "model.onnx", backend=backend)
    except ImportError as exc:
        log.warning("export skipped: %s", exc)
        print(f"export skipped: {exc}", file=sys.stderr)
        return []
