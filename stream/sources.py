"""Event sources: recorded files, cameras and the synthetic gesture generator.

Every source yields :class:`SourcePacket` objects: a few milliseconds of sorted events plus
the sensor size and a ``discontinuity`` flag (set on the first packet after a loop restart
or a camera reconnection, so that the network's state is reset downstream). Timestamps are
kept monotonic across loops by shifting each repetition past the previous one.

- :class:`FileSource` streams any format the readers know (``smastream.stream.formats``),
  re-cut into packets of ``packet_us``, paced at recorded speed, at a multiple of it, or as
  fast as possible; ``loop``; ``start_us`` seeks by time.
- :class:`CameraSource` wraps dv-processing's camera input; with no camera it raises a
  one-line :class:`~smastream.errors.SmastreamError` that lists what it sees; when the
  camera goes away it retries with backoff and flags a discontinuity.
- :class:`SyntheticSource` runs the gesture generator as if it were a live camera.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from smastream.errors import DependencyError, SmastreamError
from smastream.stream.events import Events, as_events, empty_events
from smastream.stream.formats import open_events
from smastream.stream.info import JUMP_US

DEFAULT_PACKET_US = 5_000
"""Default packet duration: 5 ms, a few packets per 50 ms bin."""


@dataclass(frozen=True)
class SourcePacket:
    """A packet of events from a source.

    Attributes:
        events: Sorted events (:data:`~smastream.stream.events.EVENT_DTYPE`), maybe empty.
        sensor_size: ``(width, height)`` of the sensor.
        t_end_us: Sensor time up to which this packet is complete (exclusive): no later
            packet holds an event before it. Lets the binner close windows in quiet periods.
        discontinuity: True on the first packet after a gap in the stream (loop restart,
            camera reconnect): downstream state should be reset.
    """

    events: Events
    sensor_size: tuple[int, int]
    t_end_us: int
    discontinuity: bool = False


class EventSource(Protocol):
    """What the pipeline needs from a source."""

    sensor_size: tuple[int, int]
    name: str

    def packets(self) -> Iterator[SourcePacket]: ...

    def close(self) -> None: ...


GAP_SKIP_US = JUMP_US
"""A silence of this much sensor time or more between two events of a file (the forward
jump ``info`` lists as a problem, 10 s) is a timestamp jump: :class:`FileSource` skips it
(no empty packets, no pacing) and flags a discontinuity."""


class Pacer:
    """Sleeps so that sensor time advances at ``speed`` × wall-clock time.

    ``speed=None`` means as fast as possible. The first call anchors sensor time to the
    wall clock; a ``reanchor()`` after a discontinuity starts afresh.
    """

    def __init__(
        self,
        speed: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(
                f"speed must be positive (or None for as fast as possible), got {speed}"
            )
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        self._anchor: tuple[int, float] | None = None
        self.waited_s = 0.0
        """Total time spent sleeping (so stage timings can leave pacing out)."""

    def reanchor(self) -> None:
        self._anchor = None

    def wait_until(self, t_us: int) -> None:
        """Block until sensor time ``t_us`` is due."""
        if self.speed is None:
            return
        now = self._clock()
        if self._anchor is None:
            self._anchor = (t_us, now)
            return
        t0, w0 = self._anchor
        due = w0 + (t_us - t0) / 1e6 / self.speed
        if due > now:
            self._sleep(due - now)
            self.waited_s += due - now


class FileSource:
    """Replays an event file as a stream of packets.

    Args:
        path: Any file ``smastream.stream.formats.open_events`` can read.
        speed: 1.0 = recorded speed, 2.0 = twice as fast, None = as fast as possible.
        loop: Start again at the end (time keeps increasing; the restart is flagged).
        start_us: Skip to the first event at or after this (absolute) time.
        packet_us: Duration of each packet handed on.
        sensor_size: Override when the file does not say it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        speed: float | None = 1.0,
        loop: bool = False,
        start_us: int | None = None,
        packet_us: int = DEFAULT_PACKET_US,
        sensor_size: tuple[int, int] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        if packet_us <= 0:
            raise ValueError(f"packet_us must be positive, got {packet_us}")
        self.path = Path(path)
        self.loop = loop
        self.start_us = start_us
        self.packet_us = packet_us
        self.pacer = pacer or Pacer(speed)
        self._reader = open_events(self.path)
        size = sensor_size or self._reader.sensor_size
        if size is None:
            self._reader.close()
            raise SmastreamError(
                f"{self.path}: the file does not give its sensor size; pass one "
                "(for example --sensor dvs128)"
            )
        self.sensor_size: tuple[int, int] = size
        self.name = f"file:{self.path.name}"
        self.loops = 0
        self.gaps_skipped = 0
        """Forward timestamp jumps of at least :data:`GAP_SKIP_US` skipped (each flagged
        as a discontinuity on the next packet)."""

    def packets(self) -> Iterator[SourcePacket]:
        """Yield packets on the grid ``k*packet_us``, paced; returns at the end of the file.

        Quiet stretches give empty packets, so time keeps advancing downstream.
        """
        offset = 0  # added to the timestamps of a repetition (loop)
        discontinuity = False
        first_pass = True
        while True:
            self._reader.seek(
                self.start_us if first_pass and self.start_us is not None else -(1 << 62)
            )
            edge: int | None = None  # end (exclusive) of the packet being filled
            raw_first = 0
            pending: list[Events] = []
            try:
                for chunk in self._reader:
                    if len(chunk) == 0:
                        continue
                    if offset:
                        chunk = chunk.copy()
                        chunk["t"] += offset
                    if edge is None:
                        raw_first = int(chunk["t"][0]) - offset
                        edge = (
                            int(chunk["t"][0]) // self.packet_us * self.packet_us + self.packet_us
                        )
                    pending.append(chunk)
                    while int(chunk["t"][-1]) >= edge:
                        yield self._emit(pending, edge, discontinuity)
                        discontinuity = False
                        edge += self.packet_us
                        ahead = int(pending[0]["t"][0]) if pending and len(pending[0]) else edge
                        if ahead - edge >= GAP_SKIP_US:  # a timestamp jump: skip, don't pace
                            edge = ahead // self.packet_us * self.packet_us + self.packet_us
                            discontinuity = True
                            self.gaps_skipped += 1
                            self.pacer.reanchor()
            except SmastreamError:
                # Damage: the events the reader delivered before it go out first (and so
                # into a recording), then the error.
                if edge is not None and pending:
                    yield self._emit(pending, edge, discontinuity, rest=True)
                raise
            if edge is None:  # nothing (left) to read
                return
            yield self._emit(pending, edge, discontinuity, rest=True)
            if not self.loop:
                return
            first_pass = False
            self.loops += 1
            offset = edge - raw_first // self.packet_us * self.packet_us
            discontinuity = True
            self.pacer.reanchor()

    def _emit(
        self, pending: list[Events], edge: int, discontinuity: bool, rest: bool = False
    ) -> SourcePacket:
        """Take the events before ``edge`` out of ``pending`` as one packet; with ``rest``
        (the end of the file), every event left, even one at or after ``edge`` where the
        timestamps go back."""
        if rest:
            pending[:] = [np.concatenate(pending)] if pending else []
            if pending and len(pending[0]):
                last = int(pending[0]["t"].max())
                edge = max(edge, last // self.packet_us * self.packet_us + self.packet_us)
        before: list[Events] = []
        rest_parts: list[Events] = []
        for part in pending:
            cut = len(part) if rest else int(np.searchsorted(part["t"], edge, side="left"))
            if cut:
                before.append(part[:cut])
            if cut < len(part):
                rest_parts.append(part[cut:])
        pending[:] = rest_parts
        events = (
            np.concatenate(before) if len(before) > 1 else (before[0] if before else empty_events())
        )
        self.pacer.wait_until(edge)
        return SourcePacket(events, self.sensor_size, edge, discontinuity)

    def close(self) -> None:
        self._reader.close()


def _discover() -> list[tuple[str, str]]:
    """``(model, serial)`` of every camera dv-processing can see."""
    try:
        import dv_processing as dv
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise DependencyError(
            "camera input needs dv-processing: pip install dv-processing"
        ) from exc
    return [(str(d.cameraModel), str(d.serialNumber)) for d in dv.io.camera.discover()]


def list_cameras() -> list[str]:
    """Names (``model serial``) of the cameras dv-processing can see; empty when none."""
    return [f"{model} {serial}".strip() for model, serial in _discover()]


class CameraSource:
    """A live camera through dv-processing.

    Args:
        device: ``auto`` (the first camera found), a model name (``davis346``,
            ``dvxplorer``, ``dvs128``) or a serial number.
        reconnect_s: Longest wait between reconnection attempts (backoff doubles up to it).

    Raises:
        SmastreamError: no matching camera; the message lists what is visible and suggests
            ``smastream replay`` for recorded files.
    """

    def __init__(self, device: str = "auto", *, reconnect_s: float = 5.0) -> None:
        self.device = device
        self.reconnect_s = reconnect_s
        self._camera: Any = None
        self._serial = self._pick()
        self._camera = self._open()
        w, h = self._camera.getEventResolution()
        self.sensor_size = (int(w), int(h))
        self.name = f"camera:{self._camera.getCameraName()}"
        self.reconnects = 0

    def _pick(self) -> str:
        cameras = _discover()
        want = self.device.lower()
        for model, serial in cameras:
            if want in ("auto", serial.lower()) or want in model.lower().replace(" ", ""):
                return serial
        seen = ", ".join(f"{m} {s}".strip() for m, s in cameras) or "none"
        raise SmastreamError(
            f"no camera matching {self.device!r} (cameras found: {seen}); "
            "to run on a recording use: smastream replay FILE"
        )

    def _open(self) -> Any:
        import dv_processing as dv

        camera = dv.io.camera.open(self._serial)
        if not camera.isEventStreamAvailable():
            raise SmastreamError(f"camera {self._serial} has no event stream")
        return camera

    def packets(self) -> Iterator[SourcePacket]:
        discontinuity = False
        backoff = 0.1
        last_t = 0
        while True:
            try:
                running = self._camera is not None and self._camera.isRunning()
                batch = self._camera.getNextEventBatch() if running else None
            except RuntimeError:
                running = False
                batch = None
            if not running:
                self._camera = None
                time.sleep(backoff)
                backoff = min(backoff * 2, self.reconnect_s)
                try:
                    self._camera = self._open()
                    self.reconnects += 1
                    discontinuity = True
                    backoff = 0.1
                except (RuntimeError, SmastreamError):
                    pass
                continue
            if batch is None or batch.size() == 0:
                time.sleep(0.001)
                continue
            events = as_events(batch.numpy())
            # after a reconnect the camera's clock may start again: not max-clamped
            t_next = int(events["t"][-1]) + 1
            last_t = t_next if discontinuity else max(last_t, t_next)
            yield SourcePacket(events, self.sensor_size, last_t, discontinuity)
            discontinuity = False

    def close(self) -> None:
        self._camera = None


class SyntheticSource:
    """The synthetic gesture generator as a live camera (paced like a real one).

    Args:
        sensor: Sensor name or ``(width, height)``.
        seconds: Length of the generated schedule (``None`` repeats forever with new seeds).
        seed: Seed of the first schedule.
        speed: Pacing as for :class:`FileSource`.
    """

    def __init__(
        self,
        sensor: str | tuple[int, int] = "dvs128",
        *,
        seconds: float = 60.0,
        seed: int = 0,
        speed: float | None = 1.0,
        packet_us: int = DEFAULT_PACKET_US,
    ) -> None:
        from smastream.stream.events import sensor_size

        self.sensor_size = sensor_size(sensor)
        self.seconds = seconds
        self.seed = seed
        self.packet_us = packet_us
        self.pacer = Pacer(speed)
        self.name = f"synthetic:{self.seed}"

    def packets(self) -> Iterator[SourcePacket]:
        from smastream.stream.synthetic import SynthConfig, SyntheticGestures

        gen = SyntheticGestures(
            SynthConfig(sensor_size=self.sensor_size, seconds=self.seconds, seed=self.seed)
        )
        self.labels = gen.labels
        # the generator's packet k spans [k*packet_us, (k+1)*packet_us), empty ones included
        for k, events in enumerate(gen.packets(self.packet_us)):
            t_end = (k + 1) * self.packet_us
            self.pacer.wait_until(t_end)
            yield SourcePacket(events, self.sensor_size, t_end)

    def close(self) -> None:
        pass


class SubscriberSource:
    """Packets from another machine's ``smastream publish``, as a source.

    Waits (up to ``first_packet_s``) for the first packet to learn the sensor size. A
    packet flagged DISCONTINUITY is passed on as one; lost packets are counted by the
    subscriber (:meth:`lost_packets`) and the pipeline resets its state on them. The
    receive buffer holds ``buffer_packets`` (about 5 s of 5 ms packets) before it drops
    the oldest. While
    nothing arrives, empty packets are yielded every ``idle_s`` so the consumer can stop.
    The stream ends at an END_OF_STREAM packet.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        curve_server_public: str | Path | None = None,
        curve_client_secret: str | Path | None = None,
        first_packet_s: float = 30.0,
        idle_s: float = 0.2,
        buffer_packets: int = 1024,
    ) -> None:
        from smastream.stream.transport import Subscriber

        self.endpoint = endpoint
        self.idle_s = idle_s
        self._sub = Subscriber(
            endpoint,
            curve_server_public=curve_server_public,
            curve_client_secret=curve_client_secret,
            buffer_packets=buffer_packets,
        )
        first = self._sub.recv(timeout_s=first_packet_s)
        if first is None:
            self._sub.close()
            raise SmastreamError(
                f"no packets from {endpoint} within {first_packet_s:g} s "
                "(is `smastream publish` running there, with matching CURVE keys?)"
            )
        self._first = first
        self.sensor_size = first.header.sensor_size
        self.name = f"zmq:{endpoint}"

    def lost_packets(self) -> int:
        stats = self._sub.stats
        return int(stats.lost + stats.dropped_oldest)

    def transport_stats(self) -> Any:
        """The subscriber's counters (a :class:`~smastream.stream.transport.SubscriberStats`):
        lost, dropped, malformed by reason, late, restarts, discontinuities."""
        return self._sub.stats

    def packets(self) -> Iterator[SourcePacket]:
        packet: Any = self._first
        t_end = 0
        while True:
            if packet is None:
                yield SourcePacket(empty_events(), self.sensor_size, t_end)
            else:
                header = packet.header
                if header.end_of_stream:
                    return
                # a discontinuity (publisher restart, time going back) starts the time
                # base afresh: never max-clamped, or every event after it would be late
                t_end = (
                    header.t_last_us + 1
                    if header.discontinuity
                    else max(t_end, header.t_last_us + 1)
                )
                yield SourcePacket(packet.events, self.sensor_size, t_end, header.discontinuity)
            packet = self._sub.recv(timeout_s=self.idle_s)

    def close(self) -> None:
        self._sub.close()
