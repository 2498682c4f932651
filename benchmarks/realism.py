"""Realism table: the synthetic generator's statistics beside the real DVS128 figures.

Generates one recording per seed (default config, 128x128, 40 s), computes the statistics
of ``shared/spec/real-dvs128.md`` with the same definitions (:mod:`smastream.stream.realism`)
and prints them beside the real ranges typed in from the spec (each row names its source
row). Writes the table as markdown and a plot (ours as points on the real bands).

Usage:
    python benchmarks/realism.py [--seeds 7 8] [--seconds 40] [--md docs/realism.md]
        [--png docs/realism.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from smastream.stream.realism import REAL_RANGES, STAT_NAMES, realism_stats
from smastream.stream.synthetic import SynthConfig, generate


def _fmt(lo_hi: tuple[float, float]) -> str:
    lo, hi = lo_hi
    return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 1000, 1001])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--md", type=Path, default=Path("docs/realism.md"))
    ap.add_argument("--png", type=Path, default=Path("docs/realism.png"))
    args = ap.parse_args()

    ours: dict[int, dict[str, float]] = {}
    for seed in args.seeds:
        cfg = SynthConfig(sensor_size=(128, 128), seconds=args.seconds, seed=seed)
        t = time.perf_counter()
        events, _ = generate(cfg)
        took = time.perf_counter() - t
        ours[seed] = realism_stats(events, (128, 128))
        print(f"seed {seed}: {len(events)} events, generated in {took:.1f} s")

    head = ["statistic (spec row)", "people", "objects", "hand"] + [f"ours s{s}" for s in ours]
    rows = []
    for name in STAT_NAMES:
        r = REAL_RANGES[name]
        lo, hi = r.union
        cells = []
        for s in ours:
            v = ours[s][name]
            cells.append(f"{v:.4g}" + ("" if lo <= v <= hi else " ✗"))
        rows.append([r.definition, _fmt(r.people), _fmt(r.objects), _fmt(r.hand), *cells])
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(md) + "\n\n✗: outside the union of the three real ranges.\n"
    print(text)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(
        f"# Realism: generator vs real DVS128 ({args.seconds:g} s, 128x128, default config)\n\n"
        + text
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 4, figsize=(14, 8))
    for ax, name in zip(axes.flat, STAT_NAMES, strict=True):
        r = REAL_RANGES[name]
        for k, (_set, band, colour) in enumerate(
            (("people", r.people, "C0"), ("objects", r.objects, "C1"), ("hand", r.hand, "C2"))
        ):
            ax.plot([k, k], band, lw=8, color=colour, alpha=0.5, solid_capstyle="butt")
            ax.plot([k], [band[0]], "_", ms=12, color=colour)
            ax.plot([k], [band[1]], "_", ms=12, color=colour)
        for s, st in ours.items():
            ax.plot([3.5], [st[name]], "o", ms=5, label=f"s{s}")
        ax.set_xticks([0, 1, 2, 3.5], ["people", "objects", "hand", "ours"], fontsize=7)
        ax.set_title(r.definition[:48], fontsize=8)
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=80)
    print(f"wrote {args.md} and {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
