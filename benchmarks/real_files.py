"""What a model decides on the real recordings in ../shared/data/real (none holds a gesture).

    python benchmarks/real_files.py                          # engine/models/demo.onnx
    python benchmarks/real_files.py --model runs/demo/best.onnx
    python benchmarks/real_files.py -- --min-confidence 0.4 --smooth-ms 150  # replay options

Every file under the real-data folder whose format ``smastream`` reads (AEDAT 4, 3.1, 2.0,
Prophesee RAW EVT 2/3, DAT; the format is sniffed from the header, as the readers do) is
replayed through the real pipeline, in-process, exactly as

    smastream replay FILE --no-display --as-fast-as-possible --predictions X.jsonl \\
        --model M --quiet

(lossless: every window is inferred; the model's own bin width and the default decision
settings, or the ``smastream replay`` options given after ``--``). Each JSON line is one
decided step; a step "has a gesture" when its decision is a class other than "no
gesture". Prints one markdown row per file (steps decided, steps with a gesture, their
share, and the classes decided with their step counts) and a total, ready to paste into
the README; files it cannot read are listed below the table with the reason. The
real-data folder is found beside the repository (``<repo>/../shared/data/real``).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smastream.cli import main as smastream_main
from smastream.errors import FormatError
from smastream.gestures import NO_GESTURE
from smastream.stream.formats import sniff_format

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
DEFAULT_MODEL = REPO / "engine" / "models" / "demo.onnx"
NOT_EVENTS = {".md", ".csv"}  # SOURCES.md and DVS Gesture label files: no events to read


@dataclass(frozen=True)
class FileResult:
    """The decisions of one replayed file."""

    path: Path
    format: str
    steps: int
    gesture_steps: int
    classes: dict[str, int]  # decided name -> steps, most frequent first

    @property
    def share(self) -> float:
        return self.gesture_steps / self.steps if self.steps else 0.0


def event_files(root: Path) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """``(readable, unreadable)`` files under ``root``: ``(path, format)`` and
    ``(path, one-line reason)``, sorted by path."""
    readable: list[tuple[Path, str]] = []
    unreadable: list[tuple[Path, str]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() in NOT_EVENTS:
            continue
        try:
            readable.append((path, sniff_format(path)))
        except FormatError as exc:
            unreadable.append((path, str(exc)))
    return readable, unreadable


def replay(
    path: Path, fmt: str, model: Path, workdir: Path, options: Sequence[str] = ()
) -> FileResult:
    """Run ``smastream replay`` on ``path`` in-process (with the replay ``options`` added)
    and count its decisions.

    Raises:
        RuntimeError: the replay exits non-zero.
    """
    out = workdir / (path.name + ".jsonl")
    argv = ["replay", str(path), "--no-display", "--as-fast-as-possible"]
    argv += ["--predictions", str(out), "--model", str(model), "--quiet", *options]
    rc = smastream_main(argv)
    if rc != 0:
        raise RuntimeError(f"smastream {' '.join(argv)} exited {rc}")
    names = [json.loads(line)["name"] for line in out.read_text().splitlines() if line]
    gestures = sum(1 for n in names if n is not None and n != NO_GESTURE)
    counts = dict(collections.Counter(names).most_common())
    return FileResult(path, fmt, len(names), gestures, counts)


def markdown(
    results: list[FileResult], root: Path, model: Path, options: Sequence[str] = ()
) -> str:
    """The table: one row per file and a total row."""
    settings = f"`{' '.join(options)}`" if options else "the default decision settings"
    rows = [
        f"Model `{_shown(model)}` with {settings} on the real recordings of `{_shown(root)}` "
        "(none holds a gesture):",
        "",
        "| file | format | steps decided | steps with a gesture | share | classes decided "
        "(steps) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        classes = ", ".join(f"{name} {n}" for name, n in r.classes.items())
        rows.append(
            f"| `{r.path.relative_to(root)}` | {r.format} | {r.steps} | {r.gesture_steps} | "
            f"{r.share:.0%} | {classes} |"
        )
    steps = sum(r.steps for r in results)
    gestures = sum(r.gesture_steps for r in results)
    share = gestures / steps if steps else 0.0
    rows.append(f"| **all {len(results)} files** | | {steps} | {gestures} | {share:.0%} | |")
    return "\n".join(rows)


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside or beside it."""
    for base, prefix in ((REPO, ""), (REPO.parent, "../")):
        try:
            return prefix + str(path.resolve().relative_to(base))
        except ValueError:
            continue
    return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model to replay with")
    ap.add_argument("--data", type=Path, default=REAL, help="folder of real recordings")
    ap.add_argument(
        "replay_options",
        nargs=argparse.REMAINDER,
        help="after --: `smastream replay` options for every file (decision settings)",
    )
    args = ap.parse_args(argv)
    options = args.replay_options[1:] if args.replay_options[:1] == ["--"] else args.replay_options
    if not args.data.is_dir():
        print(f"real_files: {args.data} is not a folder", file=sys.stderr)
        return 1
    if not args.model.exists():
        print(f"real_files: model {args.model} not found", file=sys.stderr)
        return 1
    readable, unreadable = event_files(args.data)
    results = []
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="real_files_") as tmp:
        for path, fmt in readable:
            results.append(replay(path, fmt, args.model, Path(tmp), options))
    took = time.perf_counter() - tic
    print(markdown(results, args.data, args.model, options))
    if unreadable:
        print("\nNot replayed (no reader for the format):\n")
        for path, reason in unreadable:
            short = reason.split(": ", 1)[-1].split(" (starts with")[0]
            print(f"- `{path.relative_to(args.data)}`: {short}")
    print(f"\n{len(results)} files replayed in {took:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
