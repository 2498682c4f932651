"""Prophesee RAW / DAT read speed: our streaming readers against expelliarmus called directly.

    python benchmarks/bench_prophesee.py            # the real files in ../shared/data/real
    python benchmarks/bench_prophesee.py --repeat 5

For each real file (EVT 2.0, EVT 3.0, DAT):

* ours: ``open_events(path)`` streamed to the end (numpy word check + decode for EVT 2.0
  and DAT; numpy word check + expelliarmus for EVT 3.0), in ``--chunk-events`` chunks,
  converted to our event dtype;
* expelliarmus: ``Wizard(encoding=...).read()`` (the whole file into one array, its own
  dtype; no damage checks).

Best of ``--repeat`` runs, Mevents/s and the ratio (ours / expelliarmus, > 1 = ours
faster). The files are small (0.02-2 MB), so this measures decoding, not the disk.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path

from smastream.stream.formats import DEFAULT_CHUNK_EVENTS, open_events

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
FILES = (
    ("expelliarmus/evt2_sample.raw", "evt2"),
    ("faery/evt2.raw", "evt2"),
    ("expelliarmus/evt3_sample.raw", "evt3"),
    ("tonic/sample_ncars.dat", "dat"),
)


def read_ours(path: Path, chunk_events: int) -> int:
    with open_events(path, chunk_events) as reader:
        return sum(len(c) for c in reader)


def read_expelliarmus(path: Path, encoding: str) -> int:
    from expelliarmus import Wizard

    return len(Wizard(encoding=encoding, fpath=path).read())


def best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    seconds, n = float("inf"), 0
    for _ in range(repeat):
        tic = time.perf_counter()
        n = fn()
        seconds = min(seconds, time.perf_counter() - tic)
    return seconds, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per reader (best is kept)")
    ap.add_argument("--chunk-events", type=int, default=DEFAULT_CHUNK_EVENTS)
    ap.add_argument("--data", type=Path, default=REAL, help="the real-data folder")
    args = ap.parse_args(argv)
    print(f"{'file':32} {'events':>9} {'ours Mev/s':>11} {'expelliarmus':>13} {'ratio':>6}")
    for name, enc in FILES:
        path = args.data / name
        t_ours, n1 = best(functools.partial(read_ours, path, args.chunk_events), args.repeat)
        t_ref, n2 = best(functools.partial(read_expelliarmus, path, enc), args.repeat)
        if n1 != n2:
            raise SystemExit(f"{name}: ours read {n1} events, expelliarmus {n2}")
        ours, ref = n1 / t_ours / 1e6, n2 / t_ref / 1e6
        print(f"{name:32} {n1:9,} {ours:11.1f} {ref:13.1f} {ours / ref:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
