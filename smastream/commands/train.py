"""``smastream train``: train the SMA-SNN (stream or clip protocol) and export it.

Configuration: the defaults of :class:`smastream.train.config.TrainConfig`, then a TOML
file (``--config run.toml``, same key names), then the flags given here. Examples::

    smastream train --data synthetic --out runs/demo                 # stream protocol, edge
    smastream train --data dvsgesture --protocol clip --preset paper --epochs 200 \\
        --lr 1e-4 --batch-size 9 --out runs/paper
    smastream train --out runs/demo --resume                         # continue runs/demo
    torchrun --nproc_per_node 4 $(which smastream) train --data dvsgesture ...   # DDP

The run folder gets ``config.json``, ``metrics.jsonl``, ``last.pt``/``best.pt``,
``loss.png``/``accuracy.png`` and the exported ``model.onnx`` (+ engine with
``--backend tensorrt``). Needs the ``train`` extra (torch, onnx, matplotlib, tqdm).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from smastream.errors import ConfigError, SmastreamError

_HELP = {
    "preset": "model preset: edge (CPU/Jetson) or paper (22.5 M params)",
    "width": "width multiplier of the edge preset (default 0.1875)",
    "input_size": "square input side of the edge preset (default 64)",
    "head_tau": "membrane time constant of the head's hidden LIF layers (default: tau, 2)",
    "head_slow_tau": "time constant of the second half of each hidden head layer's neurons",
    "protocol": "stream (fixed time bins, state carried, 'no gesture' class) or clip (paper)",
    "data": "synthetic | dvsgesture[:ROOT] | folder of labelled recordings",
    "val_data": "folder of labelled recordings for validation",
    "cache_dir": "preprocessing cache and synthetic recordings (default OUT/cache)",
    "epochs": "epochs",
    "batch_size": "batch size (stream: lanes of consecutive chunks)",
    "lr": "AdamW learning rate (cosine schedule)",
    "weight_decay": "AdamW weight decay",
    "warmup_steps": "linear warm-up steps",
    "grad_clip": "max gradient norm (0: off)",
    "seed": "seed of every random choice",
    "loss": "auto | mse (clip, paper) | tet (clip) | ce (stream)",
    "azo_rtr": "AZO reduced-time ratio RTR",
    "azo_rcr": "AZO reduced-channel ratio RCR",
    "temporal": "SMA temporal attention: paper (clip only) or causal",
    "n_frames": "clip protocol: T equal-count frames per clip",
    "bin_us": "stream protocol: bin width in microseconds",
    "chunk_steps": "stream protocol: bins per truncated-BPTT chunk",
    "steps_per_window": "bins per call of the exported streaming graph",
    "synth_recordings": "synthetic: training recordings",
    "synth_val_recordings": "synthetic: validation recordings",
    "synth_seconds": "synthetic: seconds per recording",
    "synth_seed": "synthetic: first seed (7 and 8 are the demo's and refused)",
    "synth_scene_weights": "synthetic: NAME=FACTOR,... more or fewer of these no-gesture "
    "scenes (e.g. scratch=3,reach_object=3)",
    "device": "auto | cpu | cuda | cuda:N",
    "workers": "processes preparing the data (and DataLoader workers, clip protocol)",
    "threads": "torch CPU threads (1 is often fastest on a busy machine)",
    "max_batches": "stop each epoch after N batches (quick checks)",
    "backend": "export at the end: onnx | tensorrt | none",
    "init": "start from these weights (a state dict .pt, e.g. engine/models/demo.pt): fine-tune",
    "onset_weight": "stream: loss weight of the first --onset-ms of every gesture (1: off)",
    "onset_ms": "stream: how long after a gesture's onset --onset-weight applies, ms",
    "idle_weight": "stream: loss weight of the 'no gesture' steps (1: as the others)",
    "augment_copies": "distinct augmentation draws, cycled: epoch e plays draw e %% N; "
    "None: a fresh draw every epoch (the next one binned in the background while training)",
}
_BOOLS = {
    "azo": "Attention ZoneOut during training",
    "no_gesture_class": "stream protocol: train a 12th 'no gesture' output",
    "amp": "mixed precision: fp16 on CUDA, bf16 on a CPU with native bf16",
    "progress": "progress bars",
    "augment": "stream: tonic event augmentation (default: on for synthetic data)",
}


def _type_of(field: dataclasses.Field[Any]) -> Any:
    t = str(field.type)
    if t.startswith("int"):
        return int
    if t.startswith("float"):
        return float
    return str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from smastream.train.config import TrainConfig

    parser.add_argument("--config", metavar="TOML", help="TOML file with TrainConfig keys")
    parser.add_argument("--out", help="run folder (default runs/train)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="CKPT",
        help="continue from OUT/last.pt, or from the checkpoint/run folder given",
    )
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in _BOOLS:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=_BOOLS[f.name]
            )
        elif f.name in _HELP:
            parser.add_argument(
                flag, type=_type_of(f), default=None, help=f"{_HELP[f.name]} (default {f.default})"
            )


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` keys the user set: the ``--config`` TOML's, then the flags
    given (a flag wins over the file).

    Raises:
        SmastreamError: an unreadable TOML file.
    """
    from smastream.train.config import TrainConfig, load_toml

    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_toml(args.config))
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return values


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`TrainConfig` of defaults < ``--config`` TOML < flags.

    Raises:
        SmastreamError: an unreadable TOML file; ConfigError: a bad value (one line).
    """
    from smastream.train.config import config_from_mapping

    try:
        return config_from_mapping(given_settings(args))
    except (ValueError, TypeError) as exc:  # the validation of the user's values, only
        raise ConfigError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    try:
        from smastream.train.loop import train
    except ImportError as exc:  # torch missing
        raise SmastreamError(
            f"training needs the train extra ({exc}): pip install 'smastream[train]'"
        ) from None
    # No blanket ``except ValueError`` here: the user's values were checked above, and
    # train() raises SmastreamError subclasses for bad data; any other error is a bug and
    # keeps its traceback.
    # On --resume only the settings given here override the checkpoint's (a bare
    # ``--resume`` continues the run as it was planned, not with the defaults).
    result = train(cfg, resume=args.resume, given=set(given_settings(args)))
    last = result.history[-1] if result.history else None
    summary = {
        "out": cfg.out,
        "epochs": len(result.history),
        "last": None if last is None else dataclasses.asdict(last),
        "best_checkpoint": str(result.best_checkpoint),
        "exported": [str(p) for p in result.exported],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"done: {summary['epochs']} epochs, checkpoints in {cfg.out}", file=sys.stderr)
        for p in result.exported:
            print(f"exported {p}", file=sys.stderr)
    return 0
