"""The wire format of one transport message: a fixed little-endian header + raw events.

Pure functions, no sockets: :mod:`smastream.stream.transport` moves these frames over
ZeroMQ. One event packet is one multipart message of exactly two frames:

1. the header, :data:`HEADER_SIZE` (56) bytes, little-endian:

   ======  =====  ==============  ==============================================
   offset  type   field           meaning
   ======  =====  ==============  ==============================================
   0       4s     magic           ``b"SMAS"``
   4       u1     version         :data:`WIRE_VERSION` (1)
   5       u1     kind            :class:`MessageKind` (1 = events; 2 reserved for
                                  predictions)
   6       u2     flags           :class:`PacketFlags` bits (end of stream,
                                  discontinuity); unknown bits are malformed
   8       u4     stream_id       which source this is (a publisher's id)
   12      u4     n_events        number of events in frame 2
   16      u8     seq             sequence number, 0, 1, 2... per stream
   24      i8     t_first_us      start of the packet's time span (its first event's
                                  timestamp unless the sender gave a span)
   32      i8     t_last_us       end of the span (normally the last event's ``t``)
   40      i8     send_time_ns    sender's wall clock (``time.time_ns()``) at send
   48      u2     width           sensor width
   50      u2     height          sensor height
   52      u4     reserved        0
   ======  =====  ==============  ==============================================

2. the events, ``n_events * 13`` bytes of :data:`~smastream.stream.events.EVENT_DTYPE`
   (packed, little-endian), decoded with a read-only ``np.frombuffer`` — never pickled.

An empty packet (``n_events == 0``) is legal: it says that time advanced to ``t_last_us``
without events (or, with :attr:`PacketFlags.END_OF_STREAM`, that the stream ended).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from smastream.errors import SmastreamError
from smastream.stream.events import EVENT_DTYPE, Events

MAGIC = b"SMAS"
"""The first four bytes of every header."""

WIRE_VERSION = 1
"""The header layout version this module writes and accepts."""

_HEADER = struct.Struct("<4sBBHIIQqqqHHI")
HEADER_SIZE = _HEADER.size
"""Size of the header frame in bytes (56)."""

EVENT_SIZE = EVENT_DTYPE.itemsize
"""Bytes per event on the wire (13)."""

MAX_COUNT = 0xFFFFFFFF
"""The largest event count one packet can carry (the ``n_events`` field is u4)."""

T_LIMIT_US = 1 << 53
"""Timestamps beyond ``±T_LIMIT_US`` (about 285 years of µs) are malformed: no sensor
clock gets there (dv-processing counts µs since the Unix epoch, about 1.8e15 in 2026),
and a value such as ``2**62`` or ``2**63 - 1`` would overflow the binner's edge
arithmetic or end every later window for good."""


class MessageKind(enum.IntEnum):
    """What a message carries (header byte 5)."""

    EVENTS = 1
    """An event packet: header + one frame of raw events."""
    PREDICTIONS = 2
    """Reserved for prediction messages (not decoded by this module yet)."""


class PacketFlags(enum.IntFlag):
    """Flag bits of the header (u2 at byte 6)."""

    NONE = 0
    END_OF_STREAM = 1
    """The stream ends with this packet (usually empty)."""
    DISCONTINUITY = 2
    """The events do not follow the previous packet's (seek, camera restart, file
    boundary): consumers reset their state."""


KNOWN_FLAGS = PacketFlags.END_OF_STREAM | PacketFlags.DISCONTINUITY

# lookups instead of enum constructors, which cost microseconds per packet
_KIND_BY_VALUE = {int(k): k for k in MessageKind}
_FLAGS_BY_VALUE = {i: PacketFlags(i) for i in range(int(KNOWN_FLAGS) + 1)}
_T = struct.Struct("<q")  # an event's timestamp: the first 8 bytes of its 13


class MalformedPacket(SmastreamError, ValueError):
    """A message that is not a valid packet; the subscriber counts and drops it.

    Args:
        reason: A short key for counting (``"frames"``, ``"header size"``, ``"magic"``,
            ``"version"``, ``"kind"``, ``"flags"``, ``"sensor size"``, ``"payload size"``,
            ``"timestamps"``).
        detail: What exactly was wrong, quoting the bad value.
    """

    REASONS = (
        "frames",
        "header size",
        "magic",
        "version",
        "kind",
        "flags",
        "sensor size",
        "payload size",
        "timestamps",
    )

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown reason {reason!r}: use one of {self.REASONS}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"malformed packet ({reason}): {detail}")


class PacketHeader(NamedTuple):
    """The fixed header of one message; see the module docstring for the layout.

    Immutable (a named tuple: cheap to build for every packet received).

    Attributes:
        stream_id: Source id (u4).
        seq: Sequence number within the stream (u8), 0 for the first packet.
        sensor_size: ``(width, height)``, both 1..65535.
        t_first_us: First event's timestamp (µs).
        t_last_us: Last event's timestamp (µs); ``>= t_first_us``.
        n_events: Number of events in the payload frame.
        flags: :class:`PacketFlags` bits.
        send_time_ns: Sender's ``time.time_ns()`` when it sent the packet (0 if unknown).
        kind: :class:`MessageKind`.
        version: Header layout version.
    """

    stream_id: int
    seq: int
    sensor_size: tuple[int, int]
    t_first_us: int
    t_last_us: int
    n_events: int
    flags: PacketFlags = PacketFlags.NONE
    send_time_ns: int = 0
    kind: MessageKind = MessageKind.EVENTS
    version: int = WIRE_VERSION

    @property
    def end_of_stream(self) -> bool:
        return bool(self.flags & PacketFlags.END_OF_STREAM)

    @property
    def discontinuity(self) -> bool:
        return bool(self.flags & PacketFlags.DISCONTINUITY)

    @property
    def payload_size(self) -> int:
        """Bytes the events frame must have: ``n_events * 13``."""
        return self.n_events * EVENT_SIZE

    def pack(self) -> bytes:
        """The :data:`HEADER_SIZE`-byte header frame.

        Raises:
            ValueError: a field does not fit its wire type (quoting it and the range).
        """
        w, h = self.sensor_size
        _check_range("stream_id", self.stream_id, 0, 0xFFFFFFFF)
        _check_range("seq", self.seq, 0, 0xFFFFFFFFFFFFFFFF)
        _check_range("width", w, 1, 0xFFFF)
        _check_range("height", h, 1, 0xFFFF)
        _check_range("n_events", self.n_events, 0, MAX_COUNT)
        _check_range("t_first_us", self.t_first_us, -T_LIMIT_US, T_LIMIT_US)
        _check_range("t_last_us", self.t_last_us, self.t_first_us, T_LIMIT_US)
        _check_range("send_time_ns", self.send_time_ns, -(1 << 63), (1 << 63) - 1)
        if int(self.flags) & ~int(KNOWN_FLAGS):
            raise ValueError(f"unknown flag bits {int(self.flags):#x}: valid {KNOWN_FLAGS!r}")
        return _HEADER.pack(
            MAGIC,
            self.version,
            int(self.kind),
            int(self.flags),
            self.stream_id,
            self.n_events,
            self.seq,
            self.t_first_us,
            self.t_last_us,
            self.send_time_ns,
            w,
            h,
            0,
        )

    @classmethod
    def unpack(cls, buf: Any) -> PacketHeader:
        """Parse and check a header frame (any object with the buffer protocol).

        Raises:
            MalformedPacket: wrong size, magic, version, kind, unknown flags, zero sensor
                side, or ``t_last_us < t_first_us``.
        """
        view = memoryview(buf)
        if view.nbytes != HEADER_SIZE:
            raise MalformedPacket(
                "header size", f"header frame is {view.nbytes} bytes, expected {HEADER_SIZE}"
            )
        (magic, version, kind, flags, stream_id, count, seq, t_first, t_last, sent, w, h, _) = (
            _HEADER.unpack_from(view)
        )
        if magic != MAGIC:
            raise MalformedPacket("magic", f"magic {magic!r}, expected {MAGIC!r}")
        if version != WIRE_VERSION:
            raise MalformedPacket(
                "version", f"wire version {version}, this build reads {WIRE_VERSION}"
            )
        message_kind = _KIND_BY_VALUE.get(kind)
        if message_kind is None:
            raise MalformedPacket("kind", f"message kind {kind}, known {list(_KIND_BY_VALUE)}")
        packet_flags = _FLAGS_BY_VALUE.get(flags)
        if packet_flags is None:
            raise MalformedPacket("flags", f"unknown flag bits {flags & ~int(KNOWN_FLAGS):#x}")
        if w == 0 or h == 0:
            raise MalformedPacket("sensor size", f"sensor size {w}x{h}")
        if t_last < t_first:
            raise MalformedPacket("timestamps", f"t_last_us {t_last} < t_first_us {t_first}")
        if not (-T_LIMIT_US <= t_first and t_last <= T_LIMIT_US):
            raise MalformedPacket(
                "timestamps",
                f"time span {t_first}..{t_last} us is outside ±{T_LIMIT_US} (2**53) us",
            )
        return cls(
            stream_id,
            seq,
            (w, h),
            t_first,
            t_last,
            count,
            packet_flags,
            sent,
            message_kind,
            version,
        )


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} does not fit the header: valid {lo}..{hi}")


def events_header(
    events: Events,
    *,
    stream_id: int,
    seq: int,
    sensor_size: tuple[int, int],
    flags: PacketFlags = PacketFlags.NONE,
    send_time_ns: int = 0,
    t_range_us: tuple[int, int] | None = None,
) -> PacketHeader:
    """The header describing ``events``.

    ``t_first_us``/``t_last_us`` are the first and last event's timestamps; ``t_range_us``
    overrides them (needed for empty packets, which carry no timestamp of their own).

    Raises:
        ValueError: empty ``events`` without ``t_range_us``, or a ``t_range_us`` that does
            not contain the events.
    """
    n = len(events)
    if t_range_us is None:
        if n == 0:
            raise ValueError("an empty packet needs t_range_us=(t_first_us, t_last_us)")
        t_first, t_last = int(events["t"][0]), int(events["t"][-1])
    else:
        t_first, t_last = (int(v) for v in t_range_us)
        if n and (int(events["t"][0]) < t_first or int(events["t"][-1]) > t_last):
            raise ValueError(
                f"t_range_us {t_range_us} does not contain the events "
                f"({int(events['t'][0])}..{int(events['t'][-1])})"
            )
    return PacketHeader(
        stream_id=stream_id,
        seq=seq,
        sensor_size=sensor_size,
        t_first_us=t_first,
        t_last_us=t_last,
        n_events=n,
        flags=flags,
        send_time_ns=send_time_ns,
    )


def encode_packet(header: PacketHeader, events: Events) -> list[Any]:
    """The two frames of one event packet: ``[header bytes, events buffer]``.

    The events frame is a view of ``events``' memory (no copy) when it is a contiguous
    :data:`EVENT_DTYPE` array; anything else is converted (copied) once. Sent with
    ``copy=False`` the caller must not modify ``events`` afterwards.

    Shapes:
        events: ``[N]`` of :data:`EVENT_DTYPE`, ``N == header.n_events``.

    Raises:
        ValueError: ``len(events) != header.n_events``, not 1-D, or not an event dtype.
    """
    if not isinstance(events, np.ndarray) or events.ndim != 1:
        raise ValueError(
            f"events must be a 1-D array of EVENT_DTYPE, got {type(events).__name__} "
            f"of shape {getattr(events, 'shape', None)}"
        )
    if events.dtype != EVENT_DTYPE:
        raise ValueError(f"events dtype {events.dtype} is not {EVENT_DTYPE}")
    if len(events) != header.n_events:
        raise ValueError(f"header.n_events={header.n_events} but {len(events)} events given")
    if header.kind != MessageKind.EVENTS:
        raise ValueError(f"encode_packet writes event packets, header kind is {header.kind!r}")
    payload = events if events.flags.c_contiguous else np.ascontiguousarray(events)
    return [header.pack(), payload.data.cast("B")]


def decode_packet(frames: Sequence[Any]) -> tuple[PacketHeader, Events]:
    """Parse one event packet; the events are a read-only view of the payload frame.

    Args:
        frames: The message's frames, each anything with the buffer protocol
            (``bytes``, ``memoryview``, ``zmq.Frame.buffer``).

    Returns:
        ``(header, events)``; ``events`` is ``[n_events]`` of :data:`EVENT_DTYPE`, read-only,
        sharing memory with ``frames[1]``.

    Raises:
        MalformedPacket: not two frames, bad header (see :meth:`PacketHeader.unpack`),
            not an event packet (kind 2 is reserved for predictions), payload length
            ``!= n_events * 13``, a first/last event timestamp outside the header's
            ``t_first_us..t_last_us``, or events not sorted by ``t``.
    """
    if len(frames) != 2:
        raise MalformedPacket("frames", f"{len(frames)} frames, an event packet has 2")
    header = PacketHeader.unpack(frames[0])
    if header.kind != MessageKind.EVENTS:
        raise MalformedPacket(
            "kind",
            f"message kind {int(header.kind)} ({header.kind.name}) is reserved, "
            f"not an event packet (kind {int(MessageKind.EVENTS)})",
        )
    payload = memoryview(frames[1])
    if payload.format != "B":
        payload = payload.cast("B")
    if payload.nbytes != header.payload_size:
        raise MalformedPacket(
            "payload size",
            f"payload is {payload.nbytes} bytes, n_events {header.n_events} needs "
            f"{header.payload_size} ({EVENT_SIZE} per event)",
        )
    if header.n_events:
        t0 = _T.unpack_from(payload, 0)[0]
        t1 = _T.unpack_from(payload, payload.nbytes - EVENT_SIZE)[0]
        if t0 < header.t_first_us or t1 > header.t_last_us:
            raise MalformedPacket(
                "timestamps",
                f"events span {t0}..{t1}, outside the header's "
                f"{header.t_first_us}..{header.t_last_us}",
            )
    events = np.frombuffer(payload, dtype=EVENT_DTYPE)
    if header.n_events > 1:
        t = events["t"]
        if bool((t[1:] < t[:-1]).any()):
            raise MalformedPacket("timestamps", "events are not sorted by t")
    if events.flags.writeable:
        events.flags.writeable = False
    return header, events
