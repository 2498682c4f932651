"""Overlay drawing speed: ms per frame, against a baseline of the colour mapping and the
nearest-neighbour upscale alone (``events_image``), measured in the same run.

    python benchmarks/bench_overlay.py [--repeat 7] [--number 200]

Each figure is the best of ``--repeat`` runs of ``--number`` frames (the least disturbed by
other processes). Frames are a window ``[S=8, 2, H, W]`` with 5 % of pixels active per bin.
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

from smastream.stream.decision import Decider, Decision, DecisionConfig, stamp_decided
from smastream.stream.overlay import OverlayStats, events_image, overlay_size, render_overlay

CASES = ((128, 128, 2), (128, 128, 4), (64, 64, 8))


def _decision(rng: np.random.Generator, steps: int) -> Decision:
    logits = rng.normal(0.0, 1.0, (steps, 11))
    logits[:, 4] += 3.0
    d = Decider(DecisionConfig(smooth_ms=0.0, hold_steps=1))
    out = d.update(logits, np.full(steps, 1000), 0, 10_000, window_closed_wall=0.0)
    return stamp_decided(out, 0.002)[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=200)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    steps = 8
    stats = OverlayStats(
        fps=99.5,
        stage_ms={"receive": 0.1, "binner": 0.4, "engine": 3.2, "decision": 0.03},
        dropped_windows=2,
        lost_packets=1,
        source="bench",
    )
    decision = _decision(rng, steps)
    print(
        f"{'input':>10} {'scale':>5} {'output':>9} {'baseline ms':>12} {'overlay ms':>11} "
        f"{'ratio':>6} {'overlay fps':>12}"
    )
    for h, w, scale in CASES:
        frames = (rng.random((steps, 2, h, w)) < 0.05).astype(np.float32)

        def base(frames: np.ndarray = frames, scale: int = scale) -> None:
            events_image(frames, scale)

        def full(frames: np.ndarray = frames, scale: int = scale) -> None:
            render_overlay(frames, decision, stats, scale)

        full()  # fill the layout caches once, as a live run does on its first frame
        t_base = min(timeit.repeat(base, number=args.number, repeat=args.repeat)) / args.number
        t_full = min(timeit.repeat(full, number=args.number, repeat=args.repeat)) / args.number
        oh, ow = overlay_size(h, w, scale)
        print(
            f"{f'{h}x{w}':>10} {scale:>5} {f'{oh}x{ow}':>9} {t_base * 1e3:>12.3f} "
            f"{t_full * 1e3:>11.3f} {t_full / t_base:>6.2f} {1 / t_full:>12.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
