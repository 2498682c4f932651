"""``smastream live --device davis346``: camera → overlay window, live predictions.

Without a camera it exits with a one-line error listing the cameras it sees and pointing
to ``smastream replay``.
"""

from __future__ import annotations

import argparse

from smastream.commands.common import add_pipeline_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="davis346, dvxplorer, dvs128, auto or a serial number"
    )
    add_pipeline_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from smastream.commands.common import run_pipeline_command
    from smastream.stream.sources import CameraSource

    return run_pipeline_command(args, lambda: CameraSource(args.device), lossless=False)
