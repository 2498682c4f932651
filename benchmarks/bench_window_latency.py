"""Latency from publishing the packet that completes a window to that window being ready.

    python benchmarks/bench_window_latency.py [--seconds 10] [--bin-ms 50] [--endpoint tcp]

A publisher thread replays a synthetic DVS128 gesture recording at recorded speed in 5 ms
packets over ZeroMQ (tcp loopback or ipc); the consumer receives, bins (Binner, 4 bins per
window, 64x64) and notes, for each window, the time from the ``send_time_ns`` stamped in the
header of the packet that closed it to the moment the binner handed the window over. The
baseline printed beside it is the bare transport time of the same packets (send -> recv),
measured in the same run, so the ratio shows what binning adds.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from smastream.stream.binning import Binner
from smastream.stream.publish import publish
from smastream.stream.sources import SyntheticSource
from smastream.stream.transport import Publisher, Subscriber


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--bin-ms", type=float, default=50.0)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--endpoint", choices=("tcp", "ipc"), default="tcp")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        endpoint = "tcp://127.0.0.1:*" if args.endpoint == "tcp" else f"ipc://{Path(tmp) / 'w.ipc'}"
        source = SyntheticSource("dvs128", seconds=args.seconds, seed=3, speed=1.0)
        with Publisher(endpoint, source.sensor_size) as pub, Subscriber(pub.endpoint) as sub:
            assert pub.wait_for_subscribers(1, timeout_s=10)
            producer = threading.Thread(target=publish, args=(source, pub), daemon=True)
            producer.start()
            binner = Binner(
                None,
                int(args.bin_ms * 1000),
                args.steps,
                source.sensor_size,
                output_size=(64, 64),
            )
            transit_ms: list[float] = []
            ready_ms: list[float] = []
            while True:
                packet = sub.recv(timeout_s=5.0)
                if packet is None or packet.header.end_of_stream:
                    break
                h = packet.header
                windows = binner.push(packet.events) if len(packet.events) else []
                windows += binner.flush(h.t_last_us + 1)
                now_ns = time.time_ns()
                transit_ms.append((packet.recv_time_ns - h.send_time_ns) / 1e6)
                ready_ms.extend((now_ns - h.send_time_ns) / 1e6 for _ in windows)
            producer.join(timeout=10)
    t = np.percentile(transit_ms, [50, 99])
    r = np.percentile(ready_ms, [50, 99])
    print(
        f"{len(ready_ms)} windows ({args.steps} x {args.bin_ms:g} ms bins) over {args.endpoint}, "
        f"{len(transit_ms)} packets of 5 ms"
    )
    print(f"  packet send -> recv (baseline)   p50 {t[0]:.3f} ms  p99 {t[1]:.3f} ms")
    print(
        f"  packet send -> window ready      p50 {r[0]:.3f} ms  p99 {r[1]:.3f} ms"
        f"  (ratio p50 {r[0] / t[0]:.2f}, p99 {r[1] / t[1]:.2f})"
    )


if __name__ == "__main__":
    main()
