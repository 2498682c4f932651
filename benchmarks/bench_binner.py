"""Binner throughput against tonic's ``ToFrame``, measured in the same run.

    python benchmarks/bench_binner.py [--events 4000000] [--repeat 5]

Cases (best of ``--repeat``, one core; the numba kernel is single-threaded):

* ``tonic ToFrame``: ``tonic.transforms.ToFrame(sensor_size=(128, 128, 2), time_window)``
  on a whole clip (the baseline).
* ``bin_events``: the same events, the same 128x128 frames, one call.
* ``Binner.push``: the same stream in 10,000-event packets, windows of 4 bins.
* ``bin_events 346x260 -> 64x64``: a DAVIS346 stream resized by centre mapping.

Prints Mevents/s of each and the ratio to tonic. Frames are checked equal to tonic's
before timing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from smastream.stream.binning import Binner, bin_events
from smastream.stream.events import EVENT_DTYPE, Events


def make_stream(n: int, size: tuple[int, int], duration_us: int, seed: int = 0) -> Events:
    """``n`` sorted random events over ``duration_us`` on a ``size`` sensor."""
    rng = np.random.default_rng(seed)
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, duration_us, n))
    ev["t"][0] = 0
    ev["x"] = rng.integers(0, size[0], n)
    ev["y"] = rng.integers(0, size[1], n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls, seconds (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--window-us", type=int, default=10_000)
    args = parser.parse_args(argv)
    n, window = args.events, args.window_us
    duration = 2_000_000  # 2 s: about 2 Mevents/s per second of stream at the default n
    ev = make_stream(n, (128, 128), duration)
    # tonic's first edge is ev.t[0] = 0 and it leaves out the incomplete last slice
    n_bins = (int(ev["t"][-1]) - int(ev["t"][0])) // window

    results: dict[str, float] = {}
    try:
        from tonic.transforms import ToFrame

        to_frame = ToFrame(sensor_size=(128, 128, 2), time_window=window)
        theirs = to_frame(ev.copy())
        ours = bin_events(ev, 0, window, theirs.shape[0], (128, 128))
        if not np.array_equal(ours, theirs):
            print("MISMATCH: bin_events differs from tonic ToFrame")
            return 1
        results["tonic ToFrame"] = best_time(lambda: to_frame(ev.copy()), args.repeat)
    except ImportError:
        print("tonic not installed: no baseline")

    results["bin_events 128x128"] = best_time(
        lambda: bin_events(ev, 0, window, n_bins, (128, 128)), args.repeat
    )
    packets = [ev[i : i + 10_000] for i in range(0, n, 10_000)]

    def stream() -> None:
        b = Binner(0, window, 4, (128, 128))
        for p in packets:
            b.push(p)

    results["Binner.push 128x128, 10k-event packets"] = best_time(stream, args.repeat)
    davis = make_stream(n, (346, 260), duration, seed=1)
    results["bin_events 346x260 -> 64x64"] = best_time(
        lambda: bin_events(davis, 0, window, n_bins + 1, (346, 260), output_size=(64, 64)),
        args.repeat,
    )

    base = results.get("tonic ToFrame")
    print(f"{n:,} events, {window} us bins, best of {args.repeat}")
    for name, seconds in results.items():
        rate = n / seconds / 1e6
        ratio = f"{base / seconds:7.1f}x tonic" if base else ""
        print(f"  {name:42s} {rate:9.1f} Mevents/s  {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
