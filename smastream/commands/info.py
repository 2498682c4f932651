"""``smastream info FILE [--json]``: describe an event file.

Prints aligned ``key  value`` lines, or one JSON object with ``--json``. A damaged file
is described up to the damage, then its :class:`~smastream.errors.FormatError` is raised,
which the CLI prints as one line (exit 1).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smastream.stream.info import FileSummary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="event file (AEDAT 4.0, 3.1 or 2.0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _rate(eps: float | None) -> str:
    if eps is None:
        return "-"
    for div, unit in ((1e6, "Mev/s"), (1e3, "kev/s")):
        if eps >= div:
            return f"{eps / div:.3f} {unit}"
    return f"{eps:.1f} ev/s"


def format_summary(s: FileSummary) -> str:
    """The human-readable report: one ``key  value`` line per item, keys aligned."""
    rows: list[tuple[str, str]] = [
        ("file", s.path),
        ("format", s.format),
        ("sensor", f"{s.sensor_size[0]} x {s.sensor_size[1]}" if s.sensor_size else "unknown"),
        ("camera", s.camera or "unknown"),
        ("events", f"{s.n_events:,} (ON {s.n_on:,} / OFF {s.n_off:,})"),
    ]
    if s.t_first_us is not None:
        rows.append(("time", f"{s.t_first_us} .. {s.t_last_us} us ({s.duration_s:.3f} s)"))
    else:
        rows.append(("time", "-"))
    rows.append(("mean rate", _rate(s.mean_rate_eps)))
    rows.append(("peak rate", f"{_rate(s.peak_rate_eps)} (in {s.peak_bin_us // 1000} ms bins)"))
    rows.append(
        ("other streams", ", ".join(f"{k} {v:,}" for k, v in s.other_streams.items()) or "none")
    )
    rows.append(("skipped", ", ".join(f"{k} {v:,}" for k, v in s.skipped.items()) or "none"))
    if s.labels is not None:
        lab = s.labels
        classes = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in lab.classes.items())
        rows.append(("labels", f"{lab.count} windows, {lab.start_us} .. {lab.end_us} us"))
        rows.append(("label file", lab.path))
        rows.append(("label classes", classes or "none"))
        rows.append(("label overlaps", str(lab.overlaps)))
    rows.append(("problems", "; ".join(s.problems) or "none"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from smastream.stream.info import describe

    summary = describe(args.file)
    if args.json:
        print(json.dumps(summary.to_dict()), flush=True)
    else:
        print(format_summary(summary), flush=True)
    if summary.damage is not None:
        raise summary.damage  # what was read is above; the damage is the one-line error
    return 0
