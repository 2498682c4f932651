"""``smastream evaluate MODEL --data DATA``: clip and streaming metrics of a model.

``MODEL`` is a training checkpoint (``.pt``, run with the PyTorch step form) or an exported
``.onnx`` (run with ONNX Runtime). Streaming evaluation replays each recording window by
window through the same decision layer as ``smastream live`` (see
:mod:`smastream.train.evaluate`). ``--json`` prints every metric as one JSON object
(``clip_accuracy``, ``stream_accuracy``, ``onset_to_decision_ms_p50``/``_p90``,
``false_idle_decisions``, ``per_class``, ``stream_confusion``, ...). Example::

    smastream evaluate engine/models/demo.onnx --data recordings/demo.aedat4
"""

from __future__ import annotations

import argparse
import json
import sys

from smastream.commands.common import add_decision_arguments, decision_config_from_args
from smastream.errors import ConfigError, SmastreamError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="CKPT|MODEL.onnx", help="checkpoint or ONNX model")
    parser.add_argument(
        "--data",
        required=True,
        help="labelled recording, folder of them, synthetic (held-out seeds 21000-21014, 10 min), "
        "synthetic-long (held-out seeds 22000-22004, 10 min, with DVS Gesture's gesture and gap "
        "durations: 6-11 s, 0.3-5.5 s) or dvsgesture[:ROOT] (test split)",
    )
    parser.add_argument("--json", action="store_true", help="print all metrics as one JSON object")
    parser.add_argument("--no-clip", action="store_true", help="skip clip accuracy")
    parser.add_argument("--no-stream", action="store_true", help="skip streaming metrics")
    parser.add_argument("--cache-dir", help="preprocessing cache (default: a temporary folder)")
    parser.add_argument("--max-recordings", type=int, help="evaluate only the first N recordings")
    parser.add_argument(
        "--stable-steps",
        type=int,
        default=1,
        help="correct decisions in a row that count as the onset (default 1)",
    )
    add_decision_arguments(parser)
    parser.add_argument(
        "--confusion-png", metavar="PNG", help="write the streaming confusion matrix here"
    )


def run(args: argparse.Namespace) -> int:
    try:
        from smastream.train.evaluate import EvalOptions, evaluate, format_table
    except ImportError as exc:
        raise SmastreamError(f"evaluation needs the train extra ({exc})") from None
    decision = decision_config_from_args(args)
    if args.stable_steps < 1:
        raise ConfigError(f"--stable-steps must be >= 1, got {args.stable_steps}")
    if args.max_recordings is not None and args.max_recordings < 1:
        raise ConfigError(f"--max-recordings must be >= 1, got {args.max_recordings}")
    # No blanket ``except ValueError``: evaluate() raises SmastreamError subclasses for a
    # bad model or data folder; any other error is a bug and keeps its traceback.
    opts = EvalOptions(
        decision=decision,
        stable_steps=args.stable_steps,
        clip=not args.no_clip,
        stream=not args.no_stream,
        cache_dir=args.cache_dir,
        max_recordings=args.max_recordings,
        progress=not args.json,
    )
    summary = evaluate(args.model, args.data, opts)
    if args.confusion_png and summary.get("stream_confusion") is not None:
        from smastream.train.plots import plot_confusion

        names = [*summary["class_names"][:11], "no gesture"]
        plot_confusion(
            summary["stream_confusion"],
            names,
            [*names[:11], "none"],
            args.confusion_png,
            "streaming decisions (steps)",
        )
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_table(summary))
        if summary.get("stream_skipped"):
            print(f"streaming skipped: {summary['stream_skipped']}", file=sys.stderr)
    return 0
