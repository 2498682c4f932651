"""The ``smastream`` command line: one entry point, subcommands registered in one place.

Every subcommand is a module in ``smastream.commands`` with two functions:

- ``add_arguments(parser: argparse.ArgumentParser) -> None``
- ``run(args: argparse.Namespace) -> int`` (the exit code)

Command modules import heavy dependencies inside ``run`` so that ``smastream --help`` stays
fast. Expected failures raise :class:`smastream.errors.SmastreamError` and are printed here as
one line, and so are operating-system errors on paths (missing folder, no permission, disk
full); Ctrl-C or SIGTERM ends a command with exit code 0 after its ``finally`` blocks closed
files (the handlers are installed before anything heavy is imported; a second signal
during the cleanup is ignored rather than raised).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

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


class _Signals:
    """SIGINT and SIGTERM end a command like Ctrl-C, once.

    The first signal raises ``KeyboardInterrupt`` in the main thread, so ``finally``
    blocks close files and sockets; a second or third one while they run is only noted
    (raising again would interrupt the cleanup with a traceback), unless the cleanup has
    already taken :attr:`FORCE_AFTER_S`: then the process ends at once. Installed first thing
    in :func:`main`, before the heavy imports, so that a signal during start-up is an
    orderly exit too; once the command has returned, signals are ignored until the
    process exits.
    """

    FORCE_AFTER_S = 5.0
    """A signal this long after the first one, with the cleanup still running (a stuck
    device or socket), ends the process at once with one line (exit 130)."""

    def __init__(self) -> None:
        self.received = 0
        self.done = False
        self.first_at = 0.0
        self.previous: dict[int, object] = {}
        self.previous_hook: Any = sys.unraisablehook

    def handler(self, signum: int, frame: object) -> None:
        self.received += 1
        if self.done:
            return
        if self.received == 1:
            self.first_at = time.monotonic()
            raise KeyboardInterrupt
        if time.monotonic() - self.first_at >= self.FORCE_AFTER_S:
            os.write(2, b"smastream: cleanup did not finish; stopped without it\n")
            os._exit(130)

    def unraisable(self, args: Any) -> None:
        """A first signal's ``KeyboardInterrupt`` raised inside a callback (an import
        lock's weakref callback, a ``__del__``) is only printed by Python ("Exception
        ignored in ...", a traceback) and lost: raise the signal again, so that it lands
        in ordinary code and ends the command as usual."""
        if args.exc_type is not None and issubclass(args.exc_type, KeyboardInterrupt):
            if self.received and not self.done:
                self.received -= 1
                # not raise_signal: its handler would run here, inside the hook, and be
                # lost the same way; a moment later it runs in the main thread's code
                threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        self.previous_hook(args)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.handler)
        self.previous_hook = sys.unraisablehook
        sys.unraisablehook = self.unraisable

    def ignore(self) -> None:
        """Ignore both signals from now on: the process is about to exit, and the
        interpreter's shutdown would otherwise put back the defaults (death by signal
        while modules are torn down). Python leaves ``SIG_IGN`` alone there."""
        for sig in self.previous:
            signal.signal(sig, signal.SIG_IGN)

    def restore(self) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        if self.previous:
            sys.unraisablehook = self.previous_hook


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (tests call this in-process).

    In a process of its own (``argv`` None) SIGINT and SIGTERM are ignored once the
    command has returned, so that a late signal cannot turn a clean exit into a
    traceback or a death by signal, and an interrupted run ends in
    :func:`_exit_interrupted`; called with ``argv`` (tests) the previous handlers are
    restored and the code is returned.
    """
    signals = _Signals()
    if threading.current_thread() is threading.main_thread():
        signals.install()
    try:
        code = _main(argv, signals)
    except KeyboardInterrupt:  # the first signal, in the instant before a command ran
        print("smastream: interrupted", file=sys.stderr)
        code = 0
    except Exception:
        # A KeyboardInterrupt inside a C extension's import comes out as another error
        # (numpy: "ImportError: PyCapsule_Import could not import module ..."): after a
        # signal, that is the interruption, not a bug to report.
        if not signals.received:
            raise
        print("smastream: interrupted", file=sys.stderr)
        code = 0
    finally:
        signals.done = True
        if argv is not None:
            signals.restore()
        else:
            signals.ignore()
    if argv is None and signals.received:
        _exit_interrupted(code)
    return code


def _exit_interrupted(code: int) -> NoReturn:
    """End an interrupted process now, with ``code``, without the interpreter's teardown.

    CPython remembers a ``KeyboardInterrupt`` that escaped code it ran through
    ``PyRun_String`` (pybind11's ``py::exec`` while an extension is imported, for one)
    even when this module caught it further up, and after the teardown it kills the
    process with SIGINT instead of returning the exit code: a Ctrl-C during start-up
    became a death by signal (status -2) about one time in thirty. The command's own
    ``finally`` blocks have closed its files and sockets and the pipeline's threads are
    out of the runtime by now; exit handlers run and both output streams are flushed
    before the process ends.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing to flush
            stream.flush()
    os._exit(code)


def _main(argv: Sequence[str] | None, signals: _Signals) -> int:
    parser = build_parser()  # imports every command module: a signal may come meanwhile
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except SmastreamError as exc:
        if signals.received:  # an error that the interruption caused (see main)
            print(f"smastream {args.command}: interrupted", file=sys.stderr)
            return 0
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
