"""Training configuration: one frozen dataclass, filled from defaults, a TOML file and flags.

Precedence: command-line flags > TOML file > the defaults below. A TOML file holds the
same keys as :class:`TrainConfig` (snake_case, flat)::

    preset = "edge"
    protocol = "stream"
    data = "synthetic"
    epochs = 12
    batch_size = 8
    lr = 2e-3
    azo = true

Unknown keys are an error (a typo never silently falls back to a default).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only (tomli is a dependency there)
    import tomli as tomllib

from smastream.errors import SmastreamError

__all__ = [
    "BACKENDS",
    "LOSSES",
    "PROTOCOLS",
    "TrainConfig",
    "config_from_mapping",
    "config_to_dict",
    "load_toml",
    "parse_data_spec",
]

PROTOCOLS: tuple[str, ...] = ("clip", "stream")
LOSSES: tuple[str, ...] = ("auto", "mse", "tet", "ce")
BACKENDS: tuple[str, ...] = ("onnx", "tensorrt", "none")
PRESET_NAMES: tuple[str, ...] = ("paper", "edge")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved in every checkpoint and in ``config.json``).

    Attributes:
        out: Run folder (checkpoints, metrics, plots, exported model).
        preset: Model preset, ``"edge"`` or ``"paper"``.
        width: Width multiplier override of the edge preset (``None``: the preset's).
        input_size: Square input side override of the edge preset (``None``: 64).
        head_tau: Membrane time constant of the head's hidden LIF layers (``None``: the
            network's ``tau``, 2).
        head_slow_tau: Time constant of the second half of each hidden head layer's
            neurons (``None``: all use ``head_tau``).
        protocol: ``"stream"`` (fixed time bins, state carried across chunks, per-step
            targets with a 12th "no gesture" class) or ``"clip"`` (the paper's: ``T``
            equal-count frames per labelled window, fresh state, one label).
        data: ``"synthetic"``, ``"dvsgesture"``, ``"dvsgesture:ROOT"`` or a folder of
            labelled recordings.
        val_data: Folder of labelled recordings for validation; ``None``: synthetic runs
            generate ``synth_val_recordings``, dvsgesture uses its test split, a folder
            run holds out nothing.
        cache_dir: Preprocessing cache and synthetic recordings (``None``: ``out/cache``).
        epochs, batch_size, lr, weight_decay: AdamW + cosine schedule (per step).
        warmup_steps: Linear warm-up steps before the cosine decay.
        grad_clip: Max gradient norm (0: off).
        seed: Seed of every random choice (weights, shuffles, dropout).
        loss: ``"mse"`` (the paper's: MSE of mean logits vs one-hot) or ``"tet"``, clip
            only; ``"ce"`` (per-step cross-entropy), stream only; or ``"auto"`` (mse for
            clip, ce for stream).
        azo, azo_rtr, azo_rcr: Attention ZoneOut and its ratios (paper: on, 4, 10).
        temporal: SMA temporal attention; ``None``: ``"paper"`` for clip, ``"causal"``
            for stream.
        n_frames: ``T`` of the clip protocol.
        bin_us: Time bin of the stream protocol (and of the exported model), µs.
        chunk_steps: Bins per truncated-BPTT chunk (stream).
        steps_per_window: ``S`` of the exported streaming graph.
        no_gesture_class: Stream protocol: a 12th output "no gesture" trained on the
            gaps between gestures (else gap steps are masked from the loss).
        synth_recordings, synth_val_recordings, synth_seconds, synth_seed: Synthetic
            data: how many recordings, how long, seeds ``synth_seed + i`` (validation:
            ``synth_seed + 10000 + i``). The demo seeds 7 and 8 are refused.
        synth_scene_weights: Synthetic training and validation data:
            ``"NAME=FACTOR,..."`` multiplies the draw weight of these no-gesture scenes
            (``SynthConfig.scene_weights``), e.g. ``"scratch=3,reach_object=3"`` for more
            of the scenes a model mistakes for gestures; ``None``: the standard mix
            (evaluation data always has the standard mix).
        amp: Mixed precision (``loop.amp_dtype``): fp16 autocast + grad scaling on CUDA;
            bf16 autocast on a CPU that has native bf16 (AVX512-BF16 or AMX: a training
            step of the demo network ~35 % faster, ``benchmarks/bench_train_step.py``);
            float32 on other CPUs.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        workers: Processes that prepare the data (synthetic recordings, preprocessing into
            the cache) and DataLoader workers (clip protocol); 0: all in this process
            (except the stream protocol's later augmentation draws, see
            ``augment_copies``).
            Preparation is serial otherwise: about 5 s per 40 s synthetic recording.
        threads: CPU threads for torch (``None``: torch's default). On a shared or small
            machine 1 is often faster than oversubscribed cores.
        max_batches: Stop each epoch after this many batches (CI-sized runs); ``None``: all.
        backend: Export at the end: ``"onnx"``, ``"tensorrt"`` (ONNX + engine) or ``"none"``.
        progress: Show a progress bar per epoch.
        init: Start from these weights (a state dict saved with ``torch.save``, read with
            ``weights_only=True``) instead of a fresh initialisation: fine-tuning. The
            network must have the same shape (preset, width, outputs). Ignored on resume.
        augment: Stream protocol: tonic event augmentation before the live Binner
            (:mod:`smastream.train.augment`); ``None``: on for synthetic data, off else.
        augment_copies: Distinct augmentation draws of every training recording, cycled:
            epoch ``e`` plays draw ``e % augment_copies`` (draw ``k`` is seeded by
            ``seed * 1000 + k``, whatever the number of draws). ``None``: a fresh draw
            every epoch (draw ``e`` in epoch ``e``). Draw 0 is binned before training,
            the next epoch's draw in ``max(1, workers)`` background processes while an
            epoch trains; a binned draw is a cache entry reused by later runs. An epoch
            plays the batches of draw 0 (at most ``max_batches``), fewer when its draw is
            shorter (time scaling). With ``None`` the draws after the first are removed
            from the cache after their epoch (each is played once; a draw of 64
            recordings of 40 s at 64x64 is 1.6 GB).
        onset_weight, onset_ms: Stream protocol: the loss weight of the steps in the first
            ``onset_ms`` of every gesture (:class:`~smastream.train.loop.OnsetClock`),
            every other step weighs 1; 1.0: plain per-step cross-entropy.
        idle_weight: Stream protocol, with ``no_gesture_class``: the loss weight of the
            "no gesture" steps (scenes and still gaps), to hold false gestures down when
            ``onset_weight`` makes the network eager; 1.0: as every other step.
    """

    out: str = "runs/train"
    preset: str = "edge"
    width: float | None = None
    input_size: int | None = None
    head_tau: float | None = None
    head_slow_tau: float | None = None
    protocol: str = "stream"
    data: str = "synthetic"
    val_data: str | None = None
    cache_dir: str | None = None
    epochs: int = 12
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 50
    grad_clip: float = 5.0
    seed: int = 3401
    loss: str = "auto"
    azo: bool = True
    azo_rtr: int = 4
    azo_rcr: int = 10
    temporal: str | None = None
    n_frames: int = 16
    bin_us: int = 50_000
    chunk_steps: int = 16
    steps_per_window: int = 4
    no_gesture_class: bool = True
    synth_recordings: int = 24
    synth_val_recordings: int = 2
    synth_seconds: float = 40.0
    synth_seed: int = 1000
    synth_scene_weights: str | None = None
    amp: bool = True
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    max_batches: int | None = None
    backend: str = "onnx"
    progress: bool = True
    init: str | None = None
    augment: bool | None = None
    augment_copies: int | None = None
    onset_weight: float = 1.0
    onset_ms: int = 300
    idle_weight: float = 1.0

    def __post_init__(self) -> None:
        _choice("preset", self.preset, PRESET_NAMES)
        _choice("protocol", self.protocol, PROTOCOLS)
        _choice("loss", self.loss, LOSSES)
        _choice("backend", self.backend, BACKENDS)
        if self.temporal is not None:
            _choice("temporal", self.temporal, ("paper", "causal"))
        if self.protocol == "stream" and self.temporal == "paper":
            raise ValueError(
                "temporal='paper' looks at future steps and cannot stream: "
                "use temporal='causal' with protocol='stream'"
            )
        if self.protocol == "stream" and self.resolved_loss != "ce":
            raise ValueError(
                f"loss={self.resolved_loss!r} is the clip protocol's; stream trains per-step "
                "cross-entropy ('ce')"
            )
        if self.protocol == "clip" and self.resolved_loss == "ce":
            raise ValueError("loss='ce' is per-step (stream); clip uses 'mse' or 'tet'")
        for name in (
            "epochs",
            "batch_size",
            "n_frames",
            "bin_us",
            "chunk_steps",
            "steps_per_window",
            "synth_recordings",
            "azo_rtr",
            "azo_rcr",
        ):
            _int_at_least(name, getattr(self, name), 1)
        for name in ("onset_weight", "idle_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 1):
                raise ValueError(f"{name} must be a number >= 1, got {value!r}")
        for name in ("warmup_steps", "synth_val_recordings", "workers", "seed", "onset_ms"):
            _int_at_least(name, getattr(self, name), 0)
        for name in ("threads", "augment_copies"):
            if getattr(self, name) is not None:
                _int_at_least(name, getattr(self, name), 1)
        if self.max_batches is not None:
            _int_at_least("max_batches", self.max_batches, 1)
        for name in ("lr", "synth_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.input_size is not None:
            _int_at_least("input_size", self.input_size, 32)
        for name in ("head_tau", "head_slow_tau"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value >= 1):
                raise ValueError(f"{name} must be a number >= 1, got {value!r}")
        if self.width is not None and not (
            isinstance(self.width, (int, float)) and 0 < self.width <= 1
        ):
            raise ValueError(f"width must be in (0, 1], got {self.width!r}")
        if self.device != "auto" and not (
            self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")
        ):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        parse_data_spec(self.data)
        parse_scene_weights(self.synth_scene_weights)

    @property
    def resolved_loss(self) -> str:
        """The loss actually used (``auto`` resolved by protocol)."""
        if self.loss != "auto":
            return self.loss
        return "mse" if self.protocol == "clip" else "ce"

    @property
    def resolved_temporal(self) -> str:
        """The SMA temporal mode actually used."""
        if self.temporal is not None:
            return self.temporal
        return "paper" if self.protocol == "clip" else "causal"

    @property
    def resolved_augment(self) -> bool:
        """Whether training recordings are augmented (stream protocol only)."""
        if self.protocol != "stream":
            return False
        if self.augment is not None:
            return self.augment
        return parse_data_spec(self.data)[0] == "synthetic"

    @property
    def resolved_augment_copies(self) -> int:
        """Distinct training draws of the stream protocol: 1 without augmentation, else
        ``augment_copies`` or, when ``None``, one per epoch."""
        if not self.resolved_augment:
            return 1
        return self.augment_copies if self.augment_copies is not None else self.epochs

    @property
    def n_outputs(self) -> int:
        """Logits per step: 12 with the "no gesture" class (stream), else 11."""
        return 12 if self.protocol == "stream" and self.no_gesture_class else 11

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else Path(self.out) / "cache"


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """Split a ``--data`` value into ``(kind, root)``.

    ``"synthetic"`` -> ``("synthetic", None)``; ``"dvsgesture"`` / ``"dvsgesture:ROOT"``
    -> ``("dvsgesture", ROOT or None)``; anything else is a folder: ``("folder", spec)``.

    Raises:
        ValueError: an empty spec.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data must be 'synthetic', 'dvsgesture[:ROOT]' or a folder, got {spec!r}")
    if spec == "synthetic":
        return "synthetic", None
    if spec == "dvsgesture" or spec.startswith("dvsgesture:"):
        root = spec.partition(":")[2]
        return "dvsgesture", root or None
    return "folder", spec


def parse_scene_weights(text: str | None) -> tuple[tuple[str, float], ...]:
    """``"scratch=3,reach_object=2"`` as ``(("scratch", 3.0), ("reach_object", 2.0))``;
    ``None`` or ``""``: ``()``.

    Raises:
        ValueError: not ``NAME=FACTOR`` pairs, an unknown scene or a factor < 0 (quoting it).
    """
    from smastream.stream.synthetic import SCENES

    if not text:
        return ()
    out: list[tuple[str, float]] = []
    for item in str(text).split(","):
        name, sep, value = item.strip().partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not sep or name not in SCENES or not (math.isfinite(factor) and factor >= 0):
            raise ValueError(
                f"synth_scene_weights: {item.strip()!r} is not NAME=FACTOR with a scene of "
                f"{', '.join(SCENES)} and a factor >= 0"
            )
        out.append((name, factor))
    if len({n for n, _ in out}) != len(out):
        raise ValueError(f"synth_scene_weights: a scene repeats in {text!r}")
    return tuple(out)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain dict for JSON/checkpoints."""
    return dataclasses.asdict(config)


def config_from_mapping(data: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """A config from ``base`` (defaults when None) with the keys of ``data`` replaced.

    Raises:
        ValueError: an unknown key (quoting it and the valid keys) or a bad value.
    """
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown training config keys {unknown}; valid keys: {sorted(fields)}")
    return dataclasses.replace(base if base is not None else TrainConfig(), **dict(data))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict (flat; an optional ``[train]`` table is accepted).

    Raises:
        SmastreamError: the file is missing or not valid TOML (one line naming it).
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SmastreamError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SmastreamError(f"{path}: not valid TOML ({exc})") from None
    if "train" in data and isinstance(data["train"], dict):
        rest = {k: v for k, v in data.items() if k != "train"}
        data = {**rest, **data["train"]}
    return data
