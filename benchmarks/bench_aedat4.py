"""AEDAT 4 throughput and memory: our reader/writer against dv-processing, same run.

    python benchmarks/bench_aedat4.py                 # ~5 M events, a few seconds
    python benchmarks/bench_aedat4.py --big-gb 1      # also peak RSS streaming a >=1 GB file

Prints Mevents/s and ratios against the baseline measured in the same run:

- read: :class:`Aedat4Reader` (faery decoder + packet walk, EVENT_DTYPE chunks) vs
  dv-processing's raw ``getNextEventBatch`` loop (no numpy copy, no dtype conversion:
  the most favourable baseline) and dv-processing with ``.numpy()`` (its 16-byte dtype,
  not yet converted to ours).
- write: :class:`Aedat4Writer` vs dv-processing ``EventStore.push_back`` per event plus
  ``MonoCameraWriter.writeEvents`` (on a small sample: it is ~1 Mevents/s).
- ``--big-gb``: writes a file of at least that size, streams it in a child process
  and reports the child's peak RSS (``VmHWM``, else ``ru_maxrss``), and times a seek to its middle.
  Temporary files are deleted at the end.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.formats.aedat4 import Aedat4Reader, Aedat4Writer

SIZE = (346, 260)


def make_block(rng: np.random.Generator, n: int, t0: int) -> Events:
    ev = np.empty(n, EVENT_DTYPE)
    ev["t"] = t0 + np.cumsum(rng.integers(0, 3, n))
    ev["x"] = rng.integers(0, SIZE[0], n)
    ev["y"] = rng.integers(0, SIZE[1], n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def write_file(path: Path, n_events: int, block: int = 1_000_000) -> tuple[int, float]:
    """Write ``n_events`` random events in ``block``-sized writes; (events, seconds)."""
    rng = np.random.default_rng(0)
    t0, done, spent = 1 << 32, 0, 0.0
    with Aedat4Writer(path, SIZE, camera="bench") as w:
        while done < n_events:
            ev = make_block(rng, min(block, n_events - done), t0)
            start = time.perf_counter()
            w.write(ev)
            spent += time.perf_counter() - start
            t0 = int(ev["t"][-1])
            done += len(ev)
        start = time.perf_counter()
    spent += time.perf_counter() - start
    return done, spent


def read_ours(path: Path) -> tuple[int, float]:
    start = time.perf_counter()
    n = 0
    with Aedat4Reader(path) as r:
        for chunk in r:
            n += len(chunk)
    return n, time.perf_counter() - start


def read_dv(path: Path, numpy: bool) -> tuple[int, float]:
    import dv_processing as dv

    start = time.perf_counter()
    rec = dv.io.MonoCameraRecording(str(path))
    n = 0
    while (batch := rec.getNextEventBatch()) is not None:
        n += len(batch.numpy()) if numpy else len(batch)
    return n, time.perf_counter() - start


def write_dv(path: Path, ev: Events) -> float:
    import dv_processing as dv

    start = time.perf_counter()
    store = dv.EventStore()
    for t, x, y, p in zip(
        ev["t"].tolist(), ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist(), strict=True
    ):
        store.push_back(t, x, y, bool(p))
    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.EventOnlyConfig("b", SIZE))
    writer.writeEvents(store)
    del writer
    return time.perf_counter() - start


_CHILD = """
import resource, sys, time
from smastream.stream.formats.aedat4 import Aedat4Reader
start = time.perf_counter(); n = 0
with Aedat4Reader(sys.argv[1]) as r:
    for chunk in r:
        n += len(chunk)
    t_read = time.perf_counter() - start
    start = time.perf_counter()
    r.seek(int(sys.argv[2]))
    first = next(iter(r))
    t_seek = time.perf_counter() - start
# VmHWM: this process's own peak (ru_maxrss can carry the parent's peak across fork).
try:
    hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
except (OSError, IndexError):
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, t_read, t_seek, int(first["t"][0]) >= int(sys.argv[2]), hwm)
"""


def mev(n: int, s: float) -> float:
    return n / s / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000, help="events in the read test")
    ap.add_argument("--dv-write-events", type=int, default=200_000)
    ap.add_argument("--big-gb", type=float, default=0.0, help="also test a file this big")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for temporary files")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-aedat4-") as tmp:
        d = Path(tmp)
        path = d / "bench.aedat4"
        n, s = write_file(path, args.events)
        ours_w = mev(n, s)
        size_mb = path.stat().st_size / 1e6
        print(f"file: {n:,} events, {size_mb:.1f} MB ({path.stat().st_size / n:.2f} B/event)")

        sample = make_block(np.random.default_rng(1), args.dv_write_events, 0)
        dv_w = mev(len(sample), write_dv(d / "dv.aedat4", sample))
        print(
            f"write  ours {ours_w:7.2f} Mev/s | dv push_back {dv_w:6.2f} Mev/s "
            f"| ratio {ours_w / dv_w:5.1f}x"
        )

        results = {}
        for name, fn in (
            ("ours", lambda: read_ours(path)),
            ("dv raw", lambda: read_dv(path, False)),
            ("dv numpy", lambda: read_dv(path, True)),
        ):
            best = min((fn() for _ in range(3)), key=lambda r: r[1])
            assert best[0] == n, (name, best[0], n)
            results[name] = mev(*best)
        print(
            f"read   ours {results['ours']:7.2f} Mev/s | dv raw {results['dv raw']:6.2f} "
            f"Mev/s (ratio {results['ours'] / results['dv raw']:.2f}) | dv .numpy() "
            f"{results['dv numpy']:6.2f} Mev/s (ratio {results['ours'] / results['dv numpy']:.2f})"
        )

        if args.big_gb > 0:
            big = d / "big.aedat4"
            target = int(args.big_gb * 1e9 / (path.stat().st_size / n)) + 1
            n_big, s_big = write_file(big, target, block=2_000_000)
            gb = big.stat().st_size / 1e9
            print(
                f"big file: {n_big:,} events, {gb:.2f} GB, written at {mev(n_big, s_big):.2f} Mev/s"
            )
            mid = (1 << 32) + n_big // 2  # events advance 1 µs on average
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(big), str(mid)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            n_read, t_read, t_seek, ok, rss_kb = (
                int(out[0]),
                float(out[1]),
                float(out[2]),
                out[3],
                int(out[4]),
            )
            assert n_read == n_big and ok == "True"
            print(
                f"big read {mev(n_read, t_read):.2f} Mev/s, seek to the middle {t_seek:.2f} s, "
                f"child peak RSS {rss_kb / 1024:.0f} MB (target < 300 MB)"
            )
            big.unlink()
    print(
        f"this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
