"""``smastream publish``: a camera, file or synthetic source → ZeroMQ (+ lossless recording).

Examples::

    smastream publish --device davis346 --bind tcp://0.0.0.0:5555 --allow-remote \\
        --curve-secret keys/server.key_secret --record session.aedat4
    smastream publish recordings/demo.aedat4 --loop
    smastream publish --synthetic 3 --sensor dvs128 --seconds 30
"""

from __future__ import annotations

import argparse
import sys


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number such as 2.0, got {text!r}")
    return value


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Options choosing and pacing a source (shared by commands that read a source)."""
    parser.add_argument("file", nargs="?", help="recorded event file (AEDAT 4, 3.1 or 2.0)")
    parser.add_argument(
        "--device", help="camera: davis346, dvxplorer, dvs128, auto or a serial number"
    )
    parser.add_argument(
        "--synthetic", type=int, metavar="SEED", help="synthetic gesture generator with this seed"
    )
    parser.add_argument(
        "--sensor",
        default="dvs128",
        help="sensor of the synthetic source: name or WxH (default dvs128)",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=positive_float,
        default=1.0,
        help="replay speed, 1 = recorded speed (default)",
    )
    pace.add_argument("--as-fast-as-possible", action="store_true", help="replay without pacing")
    parser.add_argument("--loop", action="store_true", help="replay the file forever")
    parser.add_argument("--start-us", type=int, help="start at this timestamp (seek)")
    parser.add_argument(
        "--packet-ms", type=positive_float, default=5.0, help="packet duration in ms (default 5)"
    )


def open_source_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Build the source the options describe (exactly one of FILE, --device, --synthetic)."""
    from smastream.errors import SmastreamError
    from smastream.stream.sources import CameraSource, FileSource, SyntheticSource

    chosen = [n for n in ("file", "device", "synthetic") if getattr(args, n) is not None]
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument(
        "--bind",
        default="tcp://127.0.0.1:5555",
        help="ZeroMQ endpoint to publish on (default tcp://127.0.0.1:5555)",
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow binding a non-loopback address"
    )
    parser.add_argument("--curve-secret", help="server .key_secret file: enables CURVE")
    parser.add_argument("--curve-clients", help="folder of allowed clients' public keys")
    parser.add_argument(
        "--hwm",
        type=int,
        default=256,
        help="send high-water mark, packets per subscriber (default 256)",
    )
    parser.add_argument("--record", help="write every event losslessly to this AEDAT 4 file")
    parser.add_argument(
        "--wait-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="wait (up to 30 s) for N subscribers before sending",
    )
    parser.add_argument(
        "--seconds", type=positive_float, help="stop after this many seconds (wall clock)"
    )
    parser.add_argument("--quiet", action="store_true", help="no status line")


def run(args: argparse.Namespace) -> int:
    from smastream.errors import SmastreamError
    from smastream.stream.formats import open_writer
    from smastream.stream.publish import publish
    from smastream.stream.transport import Publisher

    source = open_source_from_args(args)
    recorder = None
    publisher = None
    try:
        publisher = Publisher(
            args.bind,
            source.sensor_size,
            hwm=args.hwm,
            allow_remote=args.allow_remote,
            curve_server_secret=args.curve_secret,
            curve_clients_dir=args.curve_clients,
        )
        print(
            f"publishing {source.name} ({source.sensor_size[0]}x{source.sensor_size[1]}) "
            f"on {publisher.endpoint}",
            file=sys.stderr,
            flush=True,
        )
        if args.wait_subscribers and not publisher.wait_for_subscribers(
            args.wait_subscribers, timeout_s=30.0
        ):
            raise SmastreamError(f"no {args.wait_subscribers} subscriber(s) within 30 s")
        if args.record:
            recorder = open_writer(args.record, source.sensor_size)

        def status(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        stats = publish(
            source,
            publisher,
            recorder=recorder,
            seconds=args.seconds,
            status=None if args.quiet else status,
        )
        print(
            f"published {stats.packets} packets, {stats.events} events in "
            f"{stats.seconds:.2f} s"
            + (f"; recorded {stats.recorded} to {args.record}" if recorder else ""),
            file=sys.stderr,
        )
    finally:
        if recorder is not None:
            recorder.close()
        if publisher is not None:
            publisher.close()
        source.close()
    return 0
