"""The producer side: any source → ZeroMQ, with a lossless recording beside it.

:func:`publish` reads packets from a source, writes every event to the recording (when
one is asked for) *before* handing the packet to ZeroMQ, then publishes it. Publishing never
blocks on slow subscribers (ZeroMQ drops for them at the high-water mark and they count the
gaps), so the recording keeps every event however slow the consumers are. A status line
goes out once a second. Each packet's header carries ``t_last_us = t_end_us - 1`` of its
source packet (the time up to which the stream is complete), empty packets included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from smastream.stream.formats.base import EventWriter
from smastream.stream.sources import EventSource
from smastream.stream.transport import Publisher
from smastream.stream.wire import T_LIMIT_US, PacketFlags


@dataclass
class PublishStats:
    """What :func:`publish` did."""

    packets: int = 0
    events: int = 0
    recorded: int = 0
    send_timeouts: int = 0
    unsendable: int = 0
    """Packets whose timestamps lie beyond the wire's ±2**53 µs (recorded, not sent)."""
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def format_status(
    stats: PublishStats, interval_events: int, interval_s: float, subscribers: int
) -> str:
    """The once-a-second status line."""
    rate = interval_events / interval_s if interval_s > 0 else 0.0
    return (
        f"{rate / 1e6:7.3f} Mev/s  packets {stats.packets}  events {stats.events}  "
        f"recorded {stats.recorded}  subscribers {subscribers}  "
        f"send timeouts {stats.send_timeouts}  (HWM drops are counted by subscribers as lost)"
    )


def publish(
    source: EventSource,
    publisher: Publisher,
    *,
    recorder: EventWriter | None = None,
    seconds: float | None = None,
    status: Callable[[str], None] | None = None,
    status_every_s: float = 1.0,
) -> PublishStats:
    """Publish a source until it ends (or ``seconds`` of wall time pass).

    Sends an END_OF_STREAM packet at the end. The caller owns (and closes) the source,
    publisher and recorder; on Ctrl-C the exception propagates after the packet in hand
    was recorded.
    """
    stats = PublishStats()
    start = last_status = time.monotonic()
    events_at_status = 0
    for packet in source.packets():
        ev = packet.events
        if recorder is not None and len(ev):
            recorder.write(ev)
            stats.recorded += len(ev)
        flags = PacketFlags.DISCONTINUITY if packet.discontinuity else PacketFlags.NONE
        # the header's t_last_us says up to when the stream is complete, so a consumer
        # can close bins in quiet periods (see SourcePacket.t_end_us)
        t_first = int(ev["t"][0]) if len(ev) else packet.t_end_us - 1
        t_range = (t_first, packet.t_end_us - 1)
        if not -T_LIMIT_US <= t_range[0] <= t_range[1] <= T_LIMIT_US:
            stats.unsendable += 1  # subscribers would drop it as malformed
        else:
            try:
                publisher.send(ev, flags=flags, t_range_us=t_range)
            except TimeoutError:
                stats.send_timeouts += 1
        stats.packets += 1
        stats.events += len(ev)
        now = time.monotonic()
        if status is not None and now - last_status >= status_every_s:
            status(
                format_status(
                    stats, stats.events - events_at_status, now - last_status, publisher.subscribers
                )
            )
            last_status, events_at_status = now, stats.events
        if seconds is not None and now - start >= seconds:
            break
    publisher.send_end()
    stats.seconds = time.monotonic() - start
    return stats
