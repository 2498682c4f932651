"""``smastream profile``: per-stage latency of the live pipeline, resources, Jetson power.

    smastream profile                                  # demo model on the demo recording
    smastream profile --backend tensorrt --model model.plan --device davis346 --seconds 60

Runs the same pipeline as ``live``/``replay`` (headless: the overlay is rendered but not
shown) at the source's real pace and
writes ``profile.json`` and ``profile.png`` (latency histograms) to ``--out``, plus a
one-screen summary. On a Jetson it records ``nvpmodel -q`` and samples ``tegrastats``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smastream.commands.common import (
    MIN_BIN_MS,
    add_model_arguments,
    bin_ms_type,
    seconds_type,
    speed_type,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--source", type=Path, help="recorded file (default: the demo recording)")
    src.add_argument("--device", help="camera: davis346, dvxplorer, dvs128, auto or serial")
    parser.add_argument(
        "--speed", type=speed_type, default=1.0, help="file replay speed (default 1)"
    )
    parser.add_argument("--seconds", type=seconds_type, help="stop after this long")
    parser.add_argument(
        "--bin-ms",
        type=bin_ms_type,
        help=f"bin width in ms, at least {MIN_BIN_MS:g} (default: the model's)",
    )
    parser.add_argument("--out", type=Path, default=Path("profile"), help="output folder")


def run(args: argparse.Namespace) -> int:
    import sys

    from smastream.commands.common import open_runtime_from_args
    from smastream.stream.pipeline import OverlayDisplay, Pipeline, PipelineConfig
    from smastream.stream.profile import (
        ResourceSampler,
        build_report,
        plot_histograms,
        summary_text,
    )
    from smastream.stream.sources import CameraSource, FileSource

    source: CameraSource | FileSource
    if args.device:
        source = CameraSource(args.device)
    else:
        import smastream.recordings

        path = args.source or Path(smastream.recordings.__file__).parent / "demo.aedat4"
        source = FileSource(path, speed=args.speed)
    try:
        runtime = open_runtime_from_args(args)
        info = runtime.info
        bin_us = int(args.bin_ms * 1000) if args.bin_ms else info.bin_us
        pipeline = Pipeline(source, runtime, PipelineConfig(seconds=args.seconds), bin_us=bin_us)
        # the overlay is rendered (not shown) so that the render stage is measured too
        display = OverlayDisplay(window=False, video=None, class_names=info.class_names)
        sampler = ResourceSampler()
        sampler.start()
        stats = pipeline.run(display)
        resources = sampler.stop()
    finally:
        source.close()
    model = {
        "preset": info.preset,
        "backend": info.backend,
        "input_size": list(info.input_size),
        "bin_ms": bin_us / 1000,
        "steps_per_window": info.steps_per_window,
        "source": source.name,
    }
    report = build_report(stats, resources, model)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot_histograms(stats, args.out / "profile.png", f"{info.preset} on {info.backend}")
    print(summary_text(report))
    print(f"wrote {args.out / 'profile.json'} and {args.out / 'profile.png'}", file=sys.stderr)
    return 0
