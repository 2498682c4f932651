"""Transport benchmark: smastream Publisher -> Subscriber against bare pyzmq, same bytes.

Run: ``python benchmarks/bench_transport.py [--packets 3000] [--events 10000]``

Throughput: a child process publishes ``--packets`` packets of ``--events`` events (13 bytes
each) as fast as the socket takes them (no-drop mode, so nothing is lost and both sides
move the same bytes); this process consumes them and reports Mevents/s from first to last
packet. The baseline is bare pyzmq (XPUB/SUB, zero-copy send, ``recv_multipart(copy=False)``
and ``np.frombuffer`` in the consumer's thread); smastream adds the header checks, the
drain thread, the drop-oldest buffer and the per-stream sequence tracking. Over tcp
loopback and ipc. Best of ``--repeats``.

Latency: one packet at a time, from ``send`` to the consumer's ``recv`` returning it (both
in this process; p50/p99 over ``--latency-packets``), against bare pyzmq send -> recv.

Targets (issue 3): at least half of bare pyzmq's throughput and at least 50 Mevents/s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.transport import Publisher, Subscriber
from smastream.stream.wire import encode_packet, events_header

SENSOR = (346, 260)


def make_packets(n_distinct: int, per_packet: int, seed: int = 0) -> list[Events]:
    """``n_distinct`` sorted packets of ``per_packet`` events, contiguous in time."""
    rng = np.random.default_rng(seed)
    out = []
    t = 0
    for _ in range(n_distinct):
        ev = np.empty(per_packet, dtype=EVENT_DTYPE)
        ev["t"] = t + np.cumsum(rng.integers(0, 3, per_packet))
        ev["x"] = rng.integers(0, SENSOR[0], per_packet)
        ev["y"] = rng.integers(0, SENSOR[1], per_packet)
        ev["p"] = rng.integers(0, 2, per_packet)
        t = int(ev["t"][-1])
        out.append(ev)
    return out


# --------------------------------------------------------------------------- senders (child)


def _send_bare(endpoint_q: Any, bind: str, n_packets: int, per_packet: int) -> None:
    packets = make_packets(8, per_packet)
    headers = [events_header(p, stream_id=0, seq=0, sensor_size=SENSOR).pack() for p in packets]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 256)
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.bind(bind)
    endpoint_q.put(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    sock.recv()  # the subscription: the subscriber is listening
    for i in range(n_packets):
        sock.send_multipart([headers[i % 8], packets[i % 8].data], copy=False)
    sock.send(b"end")
    sock.close(linger=10_000)
    ctx.term()


def _send_smastream(endpoint_q: Any, bind: str, n_packets: int, per_packet: int) -> None:
    packets = make_packets(8, per_packet)
    with Publisher(
        bind, SENSOR, hwm=256, nodrop=True, send_timeout_ms=10_000, linger_ms=10_000
    ) as pub:
        endpoint_q.put(pub.endpoint)
        pub.wait_for_subscribers(1, 30)
        for i in range(n_packets):  # cycling 8 packets: the receiver counts them late
            pub.send(packets[i % 8])
        pub.send_end()


# ------------------------------------------------------------------------ receivers (parent)


def _throughput(kind: str, bind: str, n_packets: int, per_packet: int) -> tuple[float, str]:
    ctx_mp = mp.get_context("spawn")
    q = ctx_mp.Queue()
    target = _send_bare if kind == "bare" else _send_smastream
    proc = ctx_mp.Process(target=target, args=(q, bind, n_packets, per_packet))
    proc.start()
    endpoint = q.get(timeout=60)
    note = ""
    try:
        if kind == "bare":
            ctx = zmq.Context()
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(endpoint)
            n_events = 0
            frames = sock.recv_multipart(copy=False)
            t0 = time.perf_counter()
            n_events += len(np.frombuffer(frames[1].buffer, dtype=EVENT_DTYPE))
            while True:
                frames = sock.recv_multipart(copy=False)
                if len(frames) == 1:
                    break
                n_events += len(np.frombuffer(frames[1].buffer, dtype=EVENT_DTYPE))
            t1 = time.perf_counter()
            sock.close(linger=0)
            ctx.term()
        else:
            with Subscriber(endpoint, buffer_packets=256) as sub:
                packet = sub.recv(60)
                assert packet is not None
                t0 = time.perf_counter()
                n_events = packet.header.n_events
                while True:
                    packet = sub.recv(60)
                    assert packet is not None, "publisher stopped sending"
                    if packet.header.end_of_stream:
                        break
                    n_events += packet.header.n_events
                t1 = time.perf_counter()
                s = sub.stats
                note = f"lost {s.lost}, dropped_oldest {s.dropped_oldest}, malformed {s.malformed}"
    finally:
        proc.join(60)
    # the first packet starts the clock, so it is not counted in the rate
    first = per_packet
    return (n_events - first) / (t1 - t0) / 1e6, note


def _latency(kind: str, bind: str, n: int, per_packet: int) -> np.ndarray:
    packets = make_packets(8, per_packet)
    out = np.empty(n)
    if kind == "bare":
        ctx = zmq.Context()
        xpub = ctx.socket(zmq.XPUB)
        xpub.bind(bind)
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(xpub.getsockopt_string(zmq.LAST_ENDPOINT))
        xpub.recv()
        for i in range(n):
            p = packets[i % 8]
            t0 = time.perf_counter_ns()
            xpub.send_multipart(
                encode_packet(events_header(p, stream_id=0, seq=i, sensor_size=SENSOR), p),
                copy=False,
            )
            frames = sub.recv_multipart(copy=False)
            np.frombuffer(frames[1].buffer, dtype=EVENT_DTYPE)
            out[i] = time.perf_counter_ns() - t0
        sub.close(linger=0)
        xpub.close(linger=0)
        ctx.term()
        return out / 1e3
    with Publisher(bind, SENSOR, linger_ms=0) as pub, Subscriber(pub.endpoint) as s:
        pub.wait_for_subscribers(1, 30)
        for i in range(n):
            t0 = time.perf_counter_ns()
            pub.send(packets[i % 8])
            packet = s.recv(10)
            out[i] = time.perf_counter_ns() - t0
            assert packet is not None
    return out / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument("--events", type=int, default=10_000, help="events per packet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-packets", type=int, default=2000)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="smastream-bench-"))
    binds = {"tcp": "tcp://127.0.0.1:*", "ipc": f"ipc://{tmp / 'bench.ipc'}"}
    mb = args.events * 13 / 1e6
    print(
        f"{args.packets} packets x {args.events} events ({mb:.2f} MB each), best of {args.repeats}"
    )
    ok = True
    for transport, bind in binds.items():
        best: dict[str, float] = {}
        notes = ""
        for _ in range(args.repeats):
            for kind in ("bare", "smastream"):
                rate, note = _throughput(kind, bind, args.packets, args.events)
                if rate > best.get(kind, 0.0):
                    best[kind] = rate
                    notes = note or notes
        ratio = best["smastream"] / best["bare"]
        passed = ratio >= 0.5 and best["smastream"] >= 50
        ok &= passed
        print(
            f"throughput {transport}: bare pyzmq {best['bare']:7.1f} Mevents/s, smastream "
            f"{best['smastream']:7.1f} Mevents/s, ratio {ratio:.2f} "
            f"({'meets' if passed else 'MISSES'} >=0.5x and >=50)  [{notes}]"
        )
    for transport, bind in binds.items():
        lat = {
            kind: _latency(kind, bind, args.latency_packets, args.events)
            for kind in ("bare", "smastream")
        }
        p = {k: np.percentile(v, [50, 99]) for k, v in lat.items()}
        print(
            f"latency {transport} ({args.events}-event packet, send -> consumer): "
            f"bare p50 {p['bare'][0]:.0f} us p99 {p['bare'][1]:.0f} us; smastream "
            f"p50 {p['smastream'][0]:.0f} us p99 {p['smastream'][1]:.0f} us; ratio p50 "
            f"{p['smastream'][0] / p['bare'][0]:.2f} p99 {p['smastream'][1] / p['bare'][1]:.2f}"
        )
    print("targets met" if ok else "targets MISSED")


if __name__ == "__main__":
    main()
