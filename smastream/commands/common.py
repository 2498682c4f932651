"""Options shared by several commands (not a command itself)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

INT_MAX = 2**31 - 1
"""Largest integer option value (C ``int``): beyond it libraries overflow or hang."""

MIN_BIN_MS = 10.0
"""Narrowest bin the pipeline runs (the per-bin decision layer needs >= 10 ms bins)."""


def _finite(text: str) -> float | None:
    """``float(text)`` when it is a finite number, else None (``nan``, ``inf``, junk)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def float_in(
    lo: float, hi: float, *, example: str, lo_open: bool = False, unit: str = ""
) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``).

    The error quotes the value, the range and an example: ``--bin-ms inf`` gives
    ``expected a number in 10..10000 (ms) such as 50, got 'inf'``.
    """
    left = "(" if lo_open else ""
    span = f"{left}{lo:g}..{hi:g}" + (f" ({unit})" if unit else "")

    def parse(text: str) -> float:
        value = _finite(text)
        if value is None or value > hi or value < lo or (lo_open and value == lo):
            raise argparse.ArgumentTypeError(
                f"expected a number in {span} such as {example}, got {text!r}"
            )
        return value

    parse.__name__ = "number"
    return parse


def int_in(lo: int, hi: int, *, example: str) -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(
                f"expected an integer in {lo}..{hi} such as {example}, got {text!r}"
            )
        return value

    parse.__name__ = "integer"
    return parse


def finite_float(text: str) -> float:
    """argparse type: any finite number (not ``nan``, not ``inf``)."""
    value = _finite(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a finite number such as 0.3, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _finite(text)
    if value is None or not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number such as 2.0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = _finite(text)
    if value is None or not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 such as 0.2, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer in 1..2**31-1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 < value <= INT_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer (at most {INT_MAX}) such as 4, got {text!r}"
        )
    return value


def max_threads() -> int:
    """Most CPU threads a runtime may be given: 4 per core (``--threads 100000`` would
    make ONNX Runtime start threads until the machine stalls)."""
    return 4 * (os.cpu_count() or 1)


def threads_type(text: str) -> int:
    """argparse type of ``--threads``: 1..:func:`max_threads`."""
    return int_in(1, max_threads(), example="4")(text)


speed_type = float_in(1e-3, 1e3, example="2.0", unit="x recorded speed")
packet_ms_type = float_in(0.1, 60_000.0, example="5", unit="ms")
bin_ms_type = float_in(MIN_BIN_MS, 10_000.0, example="50", unit="ms")
seconds_type = float_in(0.0, 1e9, example="30", lo_open=True, unit="s")
wait_s_type = float_in(0.0, 86_400.0, example="30", lo_open=True, unit="s")
start_us_type = int_in(-(2**53), 2**53, example="1000000")
seed_type = int_in(0, 2**32 - 1, example="3")


def add_pacing_arguments(parser: argparse.ArgumentParser) -> None:
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=speed_type, default=1.0, help="replay speed, 1 = recorded (default)"
    )
    pace.add_argument("--as-fast-as-possible", action="store_true", help="replay without pacing")
    parser.add_argument("--loop", action="store_true", help="replay the file forever")
    parser.add_argument("--start-us", type=start_us_type, help="start at this timestamp (seek)")
    parser.add_argument(
        "--packet-ms", type=packet_ms_type, default=5.0, help="packet duration, ms (default 5)"
    )


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """FILE | --device | --synthetic, plus pacing (``publish``, ``profile``)."""
    parser.add_argument("file", nargs="?", help="recorded event file (AEDAT 4, 3.1 or 2.0)")
    parser.add_argument(
        "--device", help="camera: davis346, dvxplorer, dvs128, auto or a serial number"
    )
    parser.add_argument(
        "--synthetic",
        type=seed_type,
        metavar="SEED",
        help="synthetic gesture generator with this seed",
    )
    parser.add_argument(
        "--sensor", default="dvs128", help="sensor of the synthetic source (default dvs128)"
    )
    add_pacing_arguments(parser)


def open_source_from_args(args: argparse.Namespace) -> Any:
    """The source the options describe (exactly one of FILE, --device, --synthetic)."""
    from smastream.errors import SmastreamError
    from smastream.stream.sources import CameraSource, FileSource, SyntheticSource

    chosen = [n for n in ("file", "device", "synthetic") if getattr(args, n, None) is not None]
    if len(chosen) != 1:
        raise SmastreamError("give exactly one source: FILE, --device NAME or --synthetic SEED")
    speed = None if args.as_fast_as_possible else args.speed
    packet_us = max(1, int(args.packet_ms * 1000))
    if args.file is not None:
        return FileSource(
            args.file, speed=speed, loop=args.loop, start_us=args.start_us, packet_us=packet_us
        )
    if args.device is not None:
        return CameraSource(args.device)
    seconds = getattr(args, "seconds", None) or 60.0
    return SyntheticSource(
        args.sensor, seconds=seconds, seed=args.synthetic, speed=speed, packet_us=packet_us
    )


def default_model() -> Path:
    """The demo model shipped with the package."""
    import smastream.engine

    return Path(smastream.engine.__file__).parent / "models" / "demo.onnx"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, help="ONNX model, TensorRT engine or checkpoint (default: demo)"
    )
    parser.add_argument(
        "--backend", choices=("onnxruntime", "torch", "tensorrt"), help="runtime (default by file)"
    )
    parser.add_argument(
        "--threads", type=threads_type, help=f"CPU threads for the runtime (1..{max_threads()})"
    )


def open_runtime_from_args(args: argparse.Namespace) -> Any:
    from smastream.engine.runtime import open_runtime
    from smastream.errors import SmastreamError

    model = args.model or default_model()
    if not Path(model).exists():
        raise SmastreamError(f"model {model} not found")
    options: dict[str, Any] = {}
    if args.threads:
        options["threads"] = args.threads
    runtime = open_runtime(model, backend=args.backend, **options)
    try:
        check_model(model, runtime)
    except BaseException:
        close = getattr(runtime, "close", None)
        if close is not None:
            close()
        raise
    return runtime


def check_model(path: str | Path, runtime: Any) -> None:
    """Run one window of zeros and check that the logits match the metadata, then reset.

    A model whose graph and metadata disagree (``class_names`` of another length, a
    different output shape) fails here, where it is opened, as one line naming the file
    instead of as a ``ValueError`` deep in the decision layer after the source started.

    Raises:
        SmastreamError: the window fails to run, or the logits are not ``[S, classes]``.
    """
    import numpy as np

    from smastream.errors import SmastreamError

    info = runtime.info
    expected = (info.steps_per_window, len(info.class_names))
    try:
        logits = runtime.step(np.zeros(info.window_shape, dtype=np.float32))
    except Exception as exc:  # a foreign runtime on a user's file: its own error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SmastreamError(f"{path}: one window of zeros does not run: {first}") from None
    shape = tuple(np.shape(logits))
    if shape != expected:
        raise SmastreamError(
            f"{path}: the model returns logits of shape {list(shape)}, its metadata says "
            f"{list(expected)} ({expected[0]} steps x {expected[1]} class names): re-export it"
        )
    runtime.reset()


_DECISION_FLAGS: dict[str, tuple[Any, str]] = {
    "min_confidence": (finite_float, "smoothed probability a gesture needs"),
    "hold_steps": (positive_int, "steps a new label must win before it shows"),
    "smooth_ms": (finite_float, "probability smoothing time constant, ms"),
    "switch_margin": (finite_float, "lead a new gesture needs over the shown one"),
    "quiet_events_per_s": (
        finite_float,
        "smoothed events/s in the model's input below which the scene is quiet (no gesture; "
        "the state resets after 2 s of it); 0 turns the gate off",
    ),
}


def add_decision_arguments(parser: argparse.ArgumentParser) -> None:
    """The decision layer's settings (defaults: :class:`DecisionConfig`'s, shown in help)."""
    from smastream.stream.decision import DecisionConfig

    live = DecisionConfig()
    for name, (kind, text) in _DECISION_FLAGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            help=f"{text} (default {getattr(live, name):g})",
        )


def decision_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`DecisionConfig` of the defaults and the flags given.

    Raises:
        SmastreamError: a value out of range (one line).
    """
    import dataclasses

    from smastream.errors import SmastreamError
    from smastream.stream.decision import DecisionConfig

    given = {k: getattr(args, k) for k in _DECISION_FLAGS if getattr(args, k, None) is not None}
    try:
        return dataclasses.replace(DecisionConfig(), **given)
    except ValueError as exc:
        raise SmastreamError(str(exc)) from None


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``live``, ``replay`` and ``infer`` share."""
    add_model_arguments(parser)
    add_decision_arguments(parser)
    parser.add_argument(
        "--bin-ms",
        type=bin_ms_type,
        help=f"bin width in ms, at least {MIN_BIN_MS:g} (default: the model's)",
    )
    parser.add_argument(
        "--steps-per-window",
        type=int_in(1, 10_000, example="4"),
        help="bins per window (must match the model)",
    )
    parser.add_argument(
        "--display",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show the overlay window (off automatically without a display)",
    )
    parser.add_argument("--video", type=Path, help="write the overlay to this .mp4")
    parser.add_argument(
        "--display-fps",
        type=float_in(1, 240, example="30"),
        default=30.0,
        help="overlay (and video) frames per second of sensor time, 1..240 (default 30)",
    )
    parser.add_argument("--predictions", type=Path, help="write decisions as JSON lines")
    parser.add_argument(
        "--publish-predictions", metavar="ENDPOINT", help="publish decisions (JSON) on ZeroMQ"
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow non-loopback prediction endpoint"
    )
    parser.add_argument("--record", type=Path, help="record every event losslessly (AEDAT 4)")
    parser.add_argument(
        "--lossless",
        action="store_true",
        help="never drop windows: a slow engine lags instead (comparisons, offline runs)",
    )
    parser.add_argument("--seconds", type=seconds_type, help="stop after this long")
    parser.add_argument("--quiet", action="store_true", help="no summary line")


def run_pipeline_command(args: argparse.Namespace, make_source: Any, *, lossless: bool) -> int:
    """Open the model, then the source (``make_source()``: a camera or subscription starts
    delivering at once, so it opens last) and sinks; run the pipeline; print a summary.

    Closes everything it opened on every path, Ctrl-C included.
    """
    import sys

    from smastream.errors import SmastreamError
    from smastream.stream.formats import open_writer
    from smastream.stream.formats.labels import labels_path_for
    from smastream.stream.overlay import has_display
    from smastream.stream.pipeline import (
        OverlayDisplay,
        Pipeline,
        PipelineConfig,
        score_line,
        summary_line,
    )
    from smastream.stream.sources import FileSource

    recorder = None
    display = None
    source = None
    decision = decision_config_from_args(args)
    runtime = open_runtime_from_args(args)
    info = runtime.info
    try:
        if args.steps_per_window and args.steps_per_window != info.steps_per_window:
            raise SmastreamError(
                f"the model runs {info.steps_per_window} steps per window, not "
                f"{args.steps_per_window}: re-export it with --steps-per-window "
                f"{args.steps_per_window}"
            )
        bin_us = int(args.bin_ms * 1000) if args.bin_ms else info.bin_us
        window = bool(args.display)
        if window and not has_display():
            print("no display found: running headless", file=sys.stderr)
            window = False
        source = make_source()
        if args.record:
            recorder = open_writer(args.record, source.sensor_size)
        labels = None
        if isinstance(source, FileSource) and not source.loop:
            candidate = labels_path_for(source.path)
            labels = candidate if candidate.exists() else None
            if labels is not None:
                from smastream.stream.formats.labels import read_labels

                read_labels(labels)  # a bad label file fails before the run, not after it
        config = PipelineConfig(
            decision=decision,
            keep_decisions=labels is not None,
            lossless=lossless or args.lossless,
            predictions=args.predictions,
            publish_predictions=args.publish_predictions,
            allow_remote=args.allow_remote,
            seconds=args.seconds,
            display_fps=args.display_fps,
        )
        pipeline = Pipeline(
            source,
            runtime,
            config,
            bin_us=bin_us,
            recorder=recorder,
            lost_packets=getattr(source, "lost_packets", None),
        )
        if window or args.video:
            # opens nothing: the video is opened at the first frame, where an interrupted
            # open is cleaned up (OverlayDisplay._open_sink)
            display = OverlayDisplay(
                window=window,
                video=args.video,
                input_size=info.input_size,
                class_names=info.class_names,
                fps=args.display_fps,
            )
        stats = pipeline.run(display)
        if not args.quiet:
            print(summary_line(stats), file=sys.stderr)
            transport = getattr(source, "transport_stats", None)
            if transport is not None:
                tstats = transport()
                print(f"transport: {tstats}", file=sys.stderr)
                if tstats.missed_at_join and (lossless or args.lossless):
                    print(
                        f"not lossless: {tstats.missed_at_join} packets were sent before this "
                        "subscriber joined; start the publisher with --wait-subscribers 1",
                        file=sys.stderr,
                    )
            if labels is not None:
                print(score_line(pipeline.decisions, labels), file=sys.stderr)
    finally:
        if display is not None:
            display.close()
        if recorder is not None:
            recorder.close()
        if source is not None:
            source.close()
    return 0
