"""``smastream infer --connect tcp://camera-host:5555``: inference on a ``publish`` stream."""

from __future__ import annotations

import argparse

from smastream.commands.common import add_pipeline_arguments, wait_s_type


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connect", required=True, help="the publisher's ZeroMQ endpoint")
    parser.add_argument("--curve-server-key", help="the server's public .key (CURVE)")
    parser.add_argument("--curve-client-secret", help="this client's .key_secret (CURVE)")
    parser.add_argument(
        "--wait", type=wait_s_type, default=30.0, help="seconds to wait for the first packet"
    )
    add_pipeline_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from smastream.commands.common import run_pipeline_command
    from smastream.errors import SmastreamError
    from smastream.stream.sources import SubscriberSource

    if args.curve_client_secret and not args.curve_server_key:
        raise SmastreamError(
            "--curve-client-secret needs --curve-server-key (the publisher's public .key)"
        )

    def source() -> SubscriberSource:
        return SubscriberSource(
            args.connect,
            curve_server_public=args.curve_server_key,
            curve_client_secret=args.curve_client_secret,
            first_packet_s=args.wait,
        )

    return run_pipeline_command(args, source, lossless=args.lossless)
