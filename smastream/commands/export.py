"""``smastream export CKPT``: the stateful ONNX graph of a checkpoint, or a TensorRT engine.

    smastream export runs/x/best.pt --out model.onnx --steps-per-window 4
    smastream export runs/x/best.pt --backend tensorrt --fp16              # best.plan
    smastream export runs/x/best.pt --backend tensorrt --int8 --calibration recordings/

The ONNX file takes ``frames [S, 1, 2, H, W]`` plus every state tensor ``<name>_in`` and
returns ``logits [S, 1, C]`` plus ``<name>_out``; its metadata (preset, input size, bin
width, S, class names, training data, version, full config) is all a runtime needs.
With ``--backend tensorrt`` the ONNX file is written beside the engine, and the engine
(``.plan`` + ``.plan.json`` sidecar) is built on this machine's GPU, or taken from the
engine cache when the same graph was already built here with the same TensorRT and
precision. INT8 calibration bins the recordings exactly as the live path does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from smastream.commands.common import positive_float, positive_int

DEFAULT_CALIBRATION_WINDOWS = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by training (.pt)")
    parser.add_argument(
        "--out", type=Path, help="output file (default: CKPT with .onnx, or .plan for tensorrt)"
    )
    parser.add_argument(
        "--steps-per-window",
        type=positive_int,
        help="time bins per call, fixed in the graph (default 1: a decision after every bin; "
        "a larger S is for offline batch use)",
    )
    parser.add_argument(
        "--bin-ms", type=positive_float, help="bin width in ms (default: the checkpoint's)"
    )
    parser.add_argument(
        "--training-data", help="what the model was trained on (default: the checkpoint's)"
    )
    parser.add_argument(
        "--backend",
        choices=("onnxruntime", "tensorrt"),
        default="onnxruntime",
        help="onnxruntime: write the ONNX graph (default); tensorrt: also build an engine",
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="TensorRT: allow FP16 kernels")
    precision.add_argument(
        "--int8", action="store_true", help="TensorRT: INT8 (needs --calibration)"
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        help="INT8 calibration: a recording or a folder of recordings (AEDAT 4/3.1/2.0)",
    )
    parser.add_argument(
        "--calibration-windows",
        type=positive_int,
        default=DEFAULT_CALIBRATION_WINDOWS,
        help=f"at most this many windows for calibration (default {DEFAULT_CALIBRATION_WINDOWS})",
    )
    parser.add_argument("--cache-dir", type=Path, help="TensorRT engine cache folder")


def run(args: argparse.Namespace) -> int:
    from smastream.errors import SmastreamError

    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    if args.backend != "tensorrt" and precision != "fp32":
        raise SmastreamError(f"--{precision} builds a TensorRT engine: add --backend tensorrt")
    if args.int8 and args.calibration is None:
        raise SmastreamError("--int8 needs --calibration RECORDINGS (a file or a folder)")
    if args.calibration is not None and not args.int8:
        raise SmastreamError("--calibration is only used with --int8")
    if args.backend == "tensorrt":
        from smastream.engine.trt_runtime import require_tensorrt

        require_tensorrt()  # before the export: fail in a second, not after it
    if not args.checkpoint.is_file():
        raise SmastreamError(f"checkpoint {args.checkpoint} not found")

    from smastream.engine.export import bin_us_of, export_onnx, steps_of
    from smastream.engine.model import load_checkpoint

    model, extra = load_checkpoint(args.checkpoint)
    steps = steps_of(extra, args.steps_per_window)
    bin_us, source = bin_us_of(extra, round(args.bin_ms * 1000) if args.bin_ms else None)
    if source == "default":
        print(
            f"note: {args.checkpoint} records no bin width; using {bin_us / 1000:g} ms "
            "(pass --bin-ms to set it)",
            file=sys.stderr,
        )
    out = args.out
    if args.backend == "tensorrt":
        plan = out or args.checkpoint.with_suffix(".plan")
        onnx_path = plan.with_suffix(".onnx")
    else:
        plan = None
        onnx_path = out or args.checkpoint.with_suffix(".onnx")
    if args.checkpoint.resolve() in {p.resolve() for p in (onnx_path, plan) if p is not None}:
        raise SmastreamError(f"--out {out} would overwrite the checkpoint")
    training = args.training_data or str(extra.get("training_data", "unspecified"))
    meta = export_onnx(
        model,
        onnx_path,
        steps_per_window=steps,
        bin_us=bin_us,
        training_data=training,
        extra=extra,
    )
    ops = ", ".join(f"{k} {v}" for k, v in meta["ops"].items())
    print(
        f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB): preset {meta['preset']}, "
        f"{meta['input_width']}x{meta['input_height']}, S={meta['steps_per_window']}, "
        f"bin {bin_us / 1000:g} ms, {len(meta['state'])} state tensors; ops: {ops}"
    )
    if plan is None:
        return 0

    from smastream.engine.trt_runtime import build_or_load

    recordings = None
    if args.int8:
        size = (int(meta["input_width"]), int(meta["input_height"]))
        recordings = calibration_recordings(
            args.calibration, size, bin_us, steps, args.calibration_windows
        )
    built = build_or_load(
        onnx_path, precision, cache_dir=args.cache_dir, out=plan, calibration=recordings
    )
    print(f"wrote {built} ({precision}) and {built.name}.json")
    return 0


# -- recorded windows (calibration here, benchmarks in bench-engine) ---------------------


def event_files(path: Path) -> tuple[list[Path], list[Path]]:
    """``(recordings, skipped)``: the event files at ``path`` (a file, or a folder searched
    recursively), and the files skipped because they are not a readable event format."""
    from smastream.errors import FormatError, SmastreamError
    from smastream.stream.formats import sniff_format

    if path.is_file():
        return [path], []
    if not path.is_dir():
        raise SmastreamError(f"{path} not found")
    found: list[Path] = []
    skipped: list[Path] = []
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        try:
            sniff_format(p)
        except FormatError:
            skipped.append(p)
        else:
            found.append(p)
    return found, skipped


def recording_windows(
    path: Path, input_size: tuple[int, int], bin_us: int, steps: int
) -> Iterator[npt.NDArray[np.float32]]:
    """The ``[S, 2, H, W]`` windows of one recording, binned and mapped onto the model
    input exactly as the live pipeline does (same binner, same crop/resize).

    Args:
        path: An event file.
        input_size: ``(W, H)`` of the model input.
        bin_us: Bin width, µs.
        steps: ``S``, bins per window.
    """
    from smastream.errors import FormatError
    from smastream.stream.binning import Binner
    from smastream.stream.formats import open_events
    from smastream.stream.pipeline import model_geometry

    with open_events(path) as reader:
        if reader.sensor_size is None:
            raise FormatError(path, 0, "the file does not say its sensor size")
        crop, size = model_geometry(reader.sensor_size, input_size)
        binner = Binner(None, bin_us, steps, reader.sensor_size, crop=crop, output_size=size)
        for packet in reader:
            for window in binner.push(packet):
                yield window.frames


def calibration_recordings(
    path: Path, input_size: tuple[int, int], bin_us: int, steps: int, limit: int
) -> list[list[npt.NDArray[np.float32]]]:
    """Windows of every recording at ``path``, at most ``limit`` in all (spread over the
    files in order); says on stderr what it used and what it skipped.

    Raises:
        SmastreamError: No event file, or no complete window, at ``path``.
    """
    from smastream.errors import SmastreamError

    files, skipped = event_files(path)
    recordings: list[list[npt.NDArray[np.float32]]] = []
    total = 0
    for f in files:
        if total >= limit:
            break
        windows: list[npt.NDArray[np.float32]] = []
        for w in recording_windows(f, input_size, bin_us, steps):
            windows.append(w)
            total += 1
            if total >= limit:
                break
        if windows:
            recordings.append(windows)
    if total == 0:
        raise SmastreamError(f"no complete {steps}-bin window in the recordings at {path}")
    note = f", skipped {len(skipped)} non-event files" if skipped else ""
    print(f"calibration: {total} windows from {len(recordings)} recordings{note}", file=sys.stderr)
    return recordings
