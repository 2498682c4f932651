"""The ``smastream`` command line: one entry point, subcommands registered in one place.

Every subcommand is a module in ``smastream.commands`` with two functions:

- ``add_arguments(parser: argparse.ArgumentParser) -> None``
- ``run(args: argparse.Namespace) -> int`` (the exit code)

Command modules import heavy dependencies inside ``run`` so that ``smastream --help`` stays
fast. Expected failures raise :class:`smastream.errors.SmastreamError` and are printed here as
one line, and so are operating-system errors on paths (missing folder, no permission, disk
full); Ctrl-C ends a command with exit code 0 after its ``finally`` blocks closed files.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from smastream import __version__
from smastream.errors import SmastreamError

# name -> one-line help. The module is smastream.commands.<name with - replaced by _>.
COMMANDS: dict[str, str] = {
    "info": "describe an event file: format, sensor, counts, rates, streams, labels",
    "synth": "write a synthetic labelled gesture recording",
    "publish": "stream a camera, file or synthetic source over ZeroMQ (+ lossless --record)",
    "replay": "run the live pipeline on a recorded file (overlay, predictions, video)",
    "live": "camera -> overlay window with live gesture predictions",
    "infer": "run inference on another machine's `smastream publish` stream",
    "profile": "per-stage latency, throughput, CPU/memory (and Jetson power) of the pipeline",
    "train": "train the SMA-SNN (stream or clip protocol) and export it to ONNX",
    "evaluate": "clip and streaming accuracy, onset-to-decision time, false idle decisions",
    "export": "export a checkpoint as a stateful ONNX graph or a TensorRT engine",
    "bench-engine": "per-window latency and throughput of a runtime (backend, preset or model)",
    "keys": "make a CURVE key pair (NAME.key, NAME.key_secret) for encrypted transport",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="smastream",
        description="Real-time event-camera gesture recognition with a stateful SMA-SNN.",
    )
    parser.add_argument("--version", action="version", version=f"smastream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"smastream.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (tests call this in-process)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM ends a command like Ctrl-C: finally blocks close files and sockets.
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args._run(args) or 0)
    except SmastreamError as exc:
        print(f"smastream {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"smastream {args.command}: interrupted", file=sys.stderr)
        return 0
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except OSError as exc:  # a path that cannot be read or written: the user's to fix
        print(f"smastream {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
