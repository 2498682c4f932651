"""AEDAT 3.1 read speed against tonic's low-level reader, and peak memory when streaming.

    python benchmarks/bench_aedat3.py                  # a few million events, quick
    python benchmarks/bench_aedat3.py --big-gb 1.0     # also stream a >= 1 GB file

Speed: one generated DVS128 file (4096-event packets, like cAER output) is read by

* ours: ``Aedat3Reader`` streamed to the end (decoded to the event dtype, in chunks);
* tonic raw: ``read_aedat_header_from_file`` + ``get_aer_events_from_file`` (address and
  timestamp words only: no x/y/p decoding, whole file in memory);
* tonic + decode: tonic raw plus the x/y/p bit operations of ``tonic.io.read_dvs_ibm``
  into a structured array, i.e. the same result as ours.

Best of ``--repeat`` runs, Mevents/s and ratios (ours / baseline, > 1 = ours faster).
Memory: a child process streams the big file and reports its peak RSS (``VmHWM`` from
/proc/self/status, which unlike ``ru_maxrss`` cannot inherit the parent's RSS across
fork+exec; ``ru_maxrss`` elsewhere); a second child that only imports gives the baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from smastream.stream.events import EVENT_DTYPE
from smastream.stream.formats.aedat3 import Aedat3Reader, Aedat3Writer


def make_events(rng: np.random.Generator, n: int, t0: int) -> np.ndarray:
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["t"] = t0 + np.cumsum(rng.integers(0, 3, n))
    ev["x"] = rng.integers(0, 128, n)
    ev["y"] = rng.integers(0, 128, n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def write_file(path: Path, n_events: int, block: int = 4_000_000) -> float:
    """Write ``n_events`` in blocks; returns seconds spent in the writer."""
    rng = np.random.default_rng(0)
    spent = 0.0
    t0 = 0
    with Aedat3Writer(path, (128, 128), max_packet_events=4096) as w:
        for start in range(0, n_events, block):
            ev = make_events(rng, min(block, n_events - start), t0)
            t0 = int(ev["t"][-1]) + 1
            tic = time.perf_counter()
            w.write(ev)
            spent += time.perf_counter() - tic
    return spent


def read_ours(path: Path) -> int:
    with Aedat3Reader(path) as r:
        return sum(len(c) for c in r)


def read_tonic_raw(path: Path) -> int:
    import tonic.io as tio

    version, start, _ = tio.read_aedat_header_from_file(str(path))
    return len(tio.get_aer_events_from_file(str(path), version, start))


def read_tonic_decoded(path: Path) -> int:
    import tonic.io as tio

    version, start, _ = tio.read_aedat_header_from_file(str(path))
    raw = tio.get_aer_events_from_file(str(path), version, start)
    addr = raw["address"]
    out = np.empty(len(raw), dtype=EVENT_DTYPE)
    out["x"] = (addr >> 17) & 0x1FFF
    out["y"] = (addr >> 2) & 0x1FFF
    out["p"] = (addr >> 1) & 1
    out["t"] = raw["timeStamp"]
    return len(out)


def best_rate(fn, path: Path, repeat: int) -> tuple[float, int]:
    best = float("inf")
    n = 0
    for _ in range(repeat):
        tic = time.perf_counter()
        n = fn(path)
        best = min(best, time.perf_counter() - tic)
    return n / best / 1e6, n


_CHILD = """
import json, resource, sys, time
from smastream.stream.formats.aedat3 import Aedat3Reader
n = 0
tic = time.perf_counter()
if sys.argv[1] != "-":
    with Aedat3Reader(sys.argv[1]) as r:
        for chunk in r:
            n += len(chunk)
seconds = time.perf_counter() - tic
# ru_maxrss can carry the parent's RSS over fork+exec on Linux; VmHWM is this image's own.
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
try:
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    pass
print(json.dumps({"events": n, "seconds": seconds, "peak_mb": peak}))
"""


def child(arg: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, arg], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=4_000_000, help="events in the speed file")
    ap.add_argument("--repeat", type=int, default=3, help="runs per reader (best is kept)")
    ap.add_argument("--big-gb", type=float, default=0.0, help="also stream a file this big")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "speed.aedat"
        spent = write_file(path, args.events)
        size_mb = path.stat().st_size / 1e6
        w_rate = args.events / spent / 1e6
        print(f"file: {args.events:,} events, {size_mb:.1f} MB; writer {w_rate:.1f} Mevents/s")
        ours, n1 = best_rate(read_ours, path, args.repeat)
        raw, n2 = best_rate(read_tonic_raw, path, args.repeat)
        dec, n3 = best_rate(read_tonic_decoded, path, args.repeat)
        assert n1 == n2 == n3 == args.events, (n1, n2, n3)
        print(f"ours (streamed)        {ours:8.1f} Mevents/s")
        print(f"tonic raw (words only) {raw:8.1f} Mevents/s  ours/tonic raw    {ours / raw:.2f}")
        print(f"tonic + decode         {dec:8.1f} Mevents/s  ours/tonic+decode {ours / dec:.2f}")

        if args.big_gb > 0:
            big = Path(tmp) / "big.aedat"
            per_event = (8 * 4096 + 28) / 4096
            n_big = int(args.big_gb * 1e9 / per_event) + 1
            tic = time.perf_counter()
            write_file(big, n_big)
            gb = big.stat().st_size / 1e9
            took = time.perf_counter() - tic
            print(f"big file: {n_big:,} events, {gb:.2f} GB written in {took:.0f} s")
            base = child("-")
            res = child(str(big))
            assert res["events"] == n_big, res
            print(
                f"streaming it: peak RSS {res['peak_mb']:.0f} MB "
                f"(interpreter + imports alone: {base['peak_mb']:.0f} MB, "
                f"reader: +{res['peak_mb'] - base['peak_mb']:.0f} MB), "
                f"{res['events'] / res['seconds'] / 1e6:.1f} Mevents/s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
