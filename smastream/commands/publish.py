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

from smastream.commands.common import (
    INT_MAX,
    add_source_arguments,
    int_in,
    open_source_from_args,
    seconds_type,
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
        type=int_in(0, INT_MAX, example="256"),
        default=256,
        help="send high-water mark, packets per subscriber (default 256)",
    )
    parser.add_argument("--record", help="write every event losslessly to this AEDAT 4 file")
    parser.add_argument(
        "--wait-subscribers",
        type=int_in(0, 10_000, example="1"),
        default=0,
        metavar="N",
        help="wait (up to 30 s) for N subscribers before sending: a subscriber that joins "
        "after the first packets misses them (needed for a lossless `infer --lossless`)",
    )
    parser.add_argument(
        "--seconds", type=seconds_type, help="stop after this many seconds (wall clock)"
    )
    parser.add_argument("--quiet", action="store_true", help="no status line")


def run(args: argparse.Namespace) -> int:
    from smastream.errors import SmastreamError
    from smastream.stream.formats import open_writer
    from smastream.stream.publish import publish
    from smastream.stream.transport import Publisher, check_bind_endpoint

    if args.curve_clients and not args.curve_secret:
        raise SmastreamError("--curve-clients needs --curve-secret (the server's .key_secret)")
    check_bind_endpoint(args.bind, allow_remote=args.allow_remote)
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
