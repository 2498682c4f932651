"""``smastream replay FILE``: the live pipeline on a recorded file.

    smastream replay recordings/demo.aedat4                      # overlay window, real time
    smastream replay rec.aedat4 --as-fast-as-possible --no-display \\
        --video out.mp4 --predictions out.jsonl                  # headless, every window

As fast as possible, every window is inferred and drawn (lossless, reproducible); at a
paced speed the pipeline behaves as live and drops stale windows when it falls behind.
"""

from __future__ import annotations

import argparse

from smastream.commands.common import add_pacing_arguments, add_pipeline_arguments


def _sensor(text: str) -> tuple[int, int]:
    from smastream.stream.events import sensor_size

    try:
        return sensor_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", help="recorded event file (AEDAT 4, 3.1 or 2.0; Prophesee RAW EVT 2/3, DAT)"
    )
    parser.add_argument(
        "--sensor",
        type=_sensor,
        default=None,
        help="sensor size WxH (or a name) when the file does not give one, e.g. 640x480",
    )
    add_pacing_arguments(parser)
    add_pipeline_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from smastream.commands.common import run_pipeline_command
    from smastream.stream.sources import FileSource

    speed = None if args.as_fast_as_possible else args.speed

    def source() -> FileSource:
        return FileSource(
            args.file,
            speed=speed,
            loop=args.loop,
            start_us=args.start_us,
            packet_us=max(1, int(args.packet_ms * 1000)),
            sensor_size=args.sensor,
        )

    return run_pipeline_command(args, source, lossless=speed is None)
