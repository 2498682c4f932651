"""AEDAT 3.1 (the IBM DVS128 Gesture format): vectorised numpy reader and writer.

Layout (docs.inivation.com "AEDAT 3.1"; libcaer ``events/common.h`` and ``polarity.h``):

* ASCII header lines ``#...\\r\\n``, first ``#!AER-DAT3.1``, last ``#!END-HEADER``; the
  ``#Source <id>: <name>`` line names the camera (``DVS128`` in DVS128 Gesture).
* Packets back to back: a 28-byte little-endian header (``int16 eventType, int16
  eventSource, int32 eventSize, eventTSOffset, eventTSOverflow, eventCapacity,
  eventNumber, eventValid``) and a payload.
* Polarity events (type 1) are 8 bytes: ``uint32 data`` (bit 0 valid, bit 1 polarity,
  ``y = (data >> 2) & 0x7FFF``, ``x = (data >> 17) & 0x7FFF``) and ``int32`` timestamp;
  the 64-bit time is ``(eventTSOverflow << 31) | timestamp`` (libcaer ``TS_OVERFLOW_SHIFT``).
  The origin (0, 0) is the upper-left corner, as in :mod:`~smastream.stream.events`.

What the reader does with irregular content (never silently):

* packets of other types (special, frame, IMU...) are skipped and counted in ``skipped``;
* events whose valid bit is 0 are dropped and counted; so are events outside a known
  sensor size and events with a negative 31-bit timestamp;
* ``eventNumber != eventCapacity``: libcaer stores ``eventNumber`` events, some tools
  (tonic, SpikingJelly) read ``eventCapacity`` slots. The reader takes the layout whose
  end is followed by a plausible packet header (or the end of the file), preferring
  ``eventNumber``; such packets are counted in :attr:`Aedat3Reader.capacity_mismatches`
  and the unused slots of a capacity-sized payload in ``skipped``;
* timestamps that go backwards are kept (they are data) and counted in
  :attr:`Aedat3Reader.non_monotonic`;
* damage (a truncated header or payload, garbage header fields, ``eventSize != 8`` for
  polarity): every complete event before the damage is yielded, then
  :class:`~smastream.errors.FormatError` names the byte offset of the first packet (or
  header line) that could not be read.

The file is read in blocks of at most :data:`BLOCK_BYTES` and decoded a batch of packets
at a time (``np.frombuffer`` + bit operations), so memory stays flat for any file size.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from smastream.errors import FormatError
from smastream.stream.events import EVENT_DTYPE, Events, as_events
from smastream.stream.formats.base import (
    DEFAULT_CHUNK_EVENTS,
    EventReader,
    EventWriter,
    WriteError,
    check_header_line,
)

__all__ = [
    "BLOCK_BYTES",
    "PACKET_HEADER",
    "Aedat3Header",
    "Aedat3Reader",
    "Aedat3Writer",
    "camera_sensor_size",
    "decode_polarity",
    "encode_polarity",
    "packet_header_problem",
]

MAGIC = b"#!AER-DAT3.1"
END_HEADER = "#!END-HEADER"
PACKET_HEADER = struct.Struct("<hhiiiiii")
"""eventType, eventSource, eventSize, eventTSOffset, eventTSOverflow, eventCapacity,
eventNumber, eventValid (28 bytes, little-endian)."""
HEADER_BYTES = PACKET_HEADER.size
POLARITY_EVENT = 1
POLARITY_SIZE = 8
TS_OVERFLOW_SHIFT = 31
BLOCK_BYTES = 8 << 20
"""Bytes read from the file at a time."""
MAX_HEADER_BYTES = 1 << 20
MAX_EVENT_SIZE = 1 << 20

EVENT_TYPE_NAMES = {
    0: "special",
    1: "polarity",
    2: "frame",
    3: "imu6",
    4: "imu9",
    5: "sample",
    6: "ear",
    7: "config",
    8: "point1d",
    9: "point2d",
    10: "point3d",
    11: "point4d",
    12: "spike",
}
"""libcaer's default event types (``enum caer_default_event_types``)."""

# Camera names as they appear on the ``#Source`` line, by prefix (upper case).
_CAMERA_SIZES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("DVS128", (128, 128)),
    ("DAVIS128", (128, 128)),
    ("DAVIS240", (240, 180)),
    ("DAVIS346", (346, 260)),
    ("DAVIS640", (640, 480)),
    ("DVXPLORER LITE", (320, 240)),
    ("DVXPLORER-LITE", (320, 240)),
    ("DVXPLORER_LITE", (320, 240)),
    ("DVXPLORER", (640, 480)),
)
_WRITER_NAMES = {(128, 128): "DVS128", (240, 180): "DAVIS240", (346, 260): "DAVIS346"}
_SIZE_IN_NAME = re.compile(r"(\d{1,5})x(\d{1,5})", re.IGNORECASE)
_SOURCE_LINE = re.compile(r"^#Source (\d+):\s*(.*?)\s*$")


def camera_sensor_size(name: str) -> tuple[int, int] | None:
    """Sensor size ``(width, height)`` for a ``#Source`` camera name, or ``None``.

    Known names (``DVS128``, ``DAVIS240C``, ``DAVIS346B``, ``DVXplorer``...) match by
    prefix; otherwise a ``WIDTHxHEIGHT`` inside the name (``Generic 640x480``) is used.
    """
    key = name.strip().upper()
    for prefix, size in _CAMERA_SIZES:
        if key.startswith(prefix):
            return size
    m = _SIZE_IN_NAME.search(name)
    if m:
        w, h = int(m.group(1)), int(m.group(2))
        if 0 < w <= 65535 and 0 < h <= 65535:
            return w, h
    return None


@dataclass
class Aedat3Header:
    """The ASCII header of an AEDAT 3.1 file.

    Attributes:
        data_start: Byte offset of the first packet.
        sources: ``#Source`` id -> device name.
        start_time: The ``#Start-Time`` text, if any.
        lines: Every header line without its line ending.
    """

    data_start: int
    sources: dict[int, str] = field(default_factory=dict)
    start_time: str | None = None
    lines: list[str] = field(default_factory=list)


def read_aedat3_header(f: BinaryIO, path: str | Path) -> Aedat3Header:
    """Read the header from the start of ``f``; leaves ``f`` anywhere.

    Raises:
        FormatError: not AEDAT 3.1, a line without ``#``, or no ``#!END-HEADER`` (the
            offset is the start of the line that could not be read).
    """
    f.seek(0)
    pos = 0
    lines: list[str] = []
    sources: dict[int, str] = {}
    start_time: str | None = None
    while True:
        raw = f.readline(MAX_HEADER_BYTES)
        if not raw:
            raise FormatError(path, pos, "header ends before '#!END-HEADER' (truncated file?)")
        check_header_line(path, pos, raw, MAX_HEADER_BYTES)
        if not pos and not raw.startswith(MAGIC):
            shown = raw[:16].decode("ascii", "backslashreplace")
            raise FormatError(path, 0, f"not an AEDAT 3.1 file (starts with {shown!r})")
        if not raw.startswith(b"#"):
            shown = raw[:16].decode("ascii", "backslashreplace")
            raise FormatError(path, pos, f"header line does not start with '#': {shown!r}")
        text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        pos += len(raw)
        lines.append(text)
        if text == END_HEADER:
            return Aedat3Header(data_start=pos, sources=sources, start_time=start_time, lines=lines)
        m = _SOURCE_LINE.match(text)
        if m:
            sources[int(m.group(1))] = m.group(2)
        elif text.startswith("#Start-Time:"):
            start_time = text[len("#Start-Time:") :].strip()
        if pos > MAX_HEADER_BYTES:
            raise FormatError(path, pos, "no '#!END-HEADER' within the first 1 MiB")


def packet_header_problem(
    event_type: int,
    event_source: int,
    event_size: int,
    ts_offset: int,
    ts_overflow: int,
    capacity: int,
    number: int,
    valid: int,
) -> str | None:
    """What is wrong with a packet header's fields, or ``None`` if they are plausible."""
    del event_source  # any value is allowed
    if event_type < 0:
        return f"garbage packet header: eventType {event_type} is negative"
    if not 0 < event_size <= MAX_EVENT_SIZE:
        return f"garbage packet header: eventSize {event_size} not in 1..{MAX_EVENT_SIZE}"
    if not 0 <= ts_offset <= event_size - 4:
        return (
            f"garbage packet header: eventTSOffset {ts_offset} not in 0..{event_size - 4} "
            f"for eventSize {event_size}"
        )
    if ts_overflow < 0:
        return f"garbage packet header: eventTSOverflow {ts_overflow} is negative"
    if capacity < 0 or number < 0 or valid < 0:
        return (
            f"garbage packet header: negative count (eventCapacity {capacity}, "
            f"eventNumber {number}, eventValid {valid})"
        )
    if number > capacity:
        return f"garbage packet header: eventNumber {number} > eventCapacity {capacity}"
    if valid > number:
        return f"garbage packet header: eventValid {valid} > eventNumber {number}"
    if event_type == POLARITY_EVENT and (event_size != POLARITY_SIZE or ts_offset != 4):
        return (
            f"polarity packet with eventSize {event_size} and eventTSOffset {ts_offset} "
            "(expected 8 and 4)"
        )
    return None


def decode_polarity(
    words: npt.NDArray[np.uint32],
    ts_overflow: int | npt.NDArray[np.int64],
    sensor_size: tuple[int, int] | None = None,
) -> tuple[Events, int, int, int]:
    """Decode polarity-event words to events (pure; ``words`` is not modified).

    Args:
        words: ``[N, 2]`` uint32: the ``data`` word and the 31-bit timestamp of each event.
        ts_overflow: The packet's eventTSOverflow, scalar or ``[N]`` per event.
        sensor_size: ``(width, height)``; events outside it are dropped and counted.

    Returns:
        ``(events, n_invalid, n_outside, n_negative_ts)``: the valid events in order, the
        number dropped for a 0 valid bit, for being outside the sensor, and for a negative
        timestamp.
    """
    data = words[:, 0]
    ts = words[:, 1]
    n = len(data)
    out = np.empty(n, dtype=EVENT_DTYPE)
    if n == 0:
        return out, 0, 0, 0
    # Decode straight into the packed fields (no full-size temporaries per field).
    np.right_shift(data, 17, out=out["x"], casting="unsafe")
    tmp = np.right_shift(data, 2)
    np.bitwise_and(tmp, 0x7FFF, out=out["y"], casting="unsafe")
    np.right_shift(data, 1, out=tmp)
    np.bitwise_and(tmp, 1, out=out["p"], casting="unsafe")
    out["t"] = ts
    over = np.asarray(ts_overflow, dtype=np.int64)
    if over.ndim or int(over):
        out["t"] |= over << TS_OVERFLOW_SHIFT
    # Anomalies are rare: rule them out with cheap reductions before building masks.
    all_valid = bool(np.bitwise_and.reduce(data) & 1)
    no_negative = int(ts.max()) < (1 << 31)
    inside = sensor_size is None or (
        int(out["x"].max()) < sensor_size[0] and int(out["y"].max()) < sensor_size[1]
    )
    if all_valid and no_negative and inside:
        return out, 0, 0, 0
    keep = (data & 1).astype(bool)
    n_invalid = n - int(np.count_nonzero(keep))
    neg = ts >= np.uint32(1 << 31)
    n_negative = int(np.count_nonzero(neg & keep))
    keep &= ~neg
    n_outside = 0
    if sensor_size is not None:
        outside = (out["x"] >= sensor_size[0]) | (out["y"] >= sensor_size[1])
        n_outside = int(np.count_nonzero(outside & keep))
        keep &= ~outside
    out = out[keep]
    return out, n_invalid, n_outside, n_negative


def encode_polarity(events: Events) -> npt.NDArray[np.uint32]:
    """Encode events as ``[N, 2]`` little-endian uint32 words (valid bit set, 31-bit time).

    The caller splits packets by ``t >> 31`` (the packet's eventTSOverflow).
    """
    words = np.empty((len(events), 2), dtype="<u4")
    x = events["x"].astype(np.uint32)
    y = events["y"].astype(np.uint32)
    p = (events["p"] != 0).astype(np.uint32)
    words[:, 0] = (x << 17) | (y << 2) | (p << 1) | 1
    words[:, 1] = events["t"] & 0x7FFFFFFF
    return words


@dataclass(frozen=True)
class _Packet:
    """A located packet: where it is, what it holds and how many of its events exist."""

    offset: int
    event_type: int
    event_size: int
    ts_overflow: int
    number: int
    capacity: int
    end: int  # offset of the next packet header
    n_events: int  # events readable (eventNumber, or fewer if truncated)
    padding: int  # unused capacity slots in the payload
    mismatch: bool  # eventNumber != eventCapacity
    damage: str | None  # set when the payload is truncated

    @property
    def payload(self) -> int:
        return self.offset + HEADER_BYTES


class _Damage(Exception):
    def __init__(self, offset: int, cause: str) -> None:
        super().__init__(cause)
        self.offset = offset
        self.cause = cause


class _Blocks:
    """Reads a file in immutable blocks; views handed out stay valid after the next read."""

    def __init__(self, f: BinaryIO, block_bytes: int) -> None:
        self._f = f
        self._block = block_bytes
        self._buf = b""
        self._start = 0

    def get(self, offset: int, n: int) -> memoryview:
        """``n`` bytes at ``offset`` (fewer at the end of the file)."""
        rel = offset - self._start
        if rel < 0 or rel + n > len(self._buf):
            self._f.seek(offset)
            self._buf = self._f.read(max(n, self._block))
            self._start = offset
            rel = 0
        return memoryview(self._buf)[rel : rel + n]

    def reset(self) -> None:
        self._buf = b""
        self._start = 0


_Read = Callable[[int, int], "bytes | memoryview"]


class Aedat3Reader(EventReader):
    """Streaming reader of AEDAT 3.1 polarity events.

    Args:
        path: The file.
        chunk_events: Upper bound on events per yielded packet.

    Attributes:
        header: The parsed :class:`Aedat3Header`.
        non_monotonic: Events whose timestamp is smaller than the previous event's (kept).
        capacity_mismatches: Packets whose eventNumber differs from eventCapacity.

    Raises:
        FormatError: the file cannot be opened or its header is not AEDAT 3.1.

    Yields (iteration):
        Event arrays of :data:`~smastream.stream.events.EVENT_DTYPE`, ``[<= chunk_events]``.
    """

    format = "aedat3.1"

    def __init__(
        self,
        path: str | Path,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
        *,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        super().__init__(path, chunk_events)
        if block_bytes < HEADER_BYTES:
            raise ValueError(f"block_bytes must be at least {HEADER_BYTES}, got {block_bytes}")
        try:
            self._f: BinaryIO = open(self.path, "rb")
        except OSError as exc:
            raise FormatError(self.path, 0, f"cannot open: {exc.strerror or exc}") from None
        try:
            self.header = read_aedat3_header(self._f, self.path)
            self._size = os.fstat(self._f.fileno()).st_size
        except BaseException:
            self._f.close()
            raise
        if self.header.sources:
            self.camera = self.header.sources[min(self.header.sources)]
            self.sensor_size = camera_sensor_size(self.camera)
        self.non_monotonic = 0
        self.capacity_mismatches = 0
        self._blocks = _Blocks(self._f, block_bytes)
        self._pos = self.header.data_start  # next packet header
        self._skip = 0  # events of that packet already delivered
        self._seek_t: int | None = None
        self._last_t: int | None = None
        self._counted_upto = 0  # packet stats are counted once per pass

    # -- locating packets -------------------------------------------------------------

    def _pread(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(n)

    def _plausible_header_at(self, offset: int, read: _Read) -> bool:
        if offset == self._size:
            return True
        if offset + HEADER_BYTES > self._size:
            return False
        fields = PACKET_HEADER.unpack_from(read(offset, HEADER_BYTES))
        return packet_header_problem(*fields) is None

    def _packet_at(self, pos: int, read: _Read) -> _Packet | None:
        """Locate the packet at ``pos``; ``None`` at the end of the file.

        Raises:
            _Damage: a truncated or implausible header.
        """
        if pos >= self._size:
            return None
        hdr = read(pos, HEADER_BYTES)
        if len(hdr) < HEADER_BYTES:  # the file ends inside it
            raise _Damage(
                pos,
                f"truncated packet header ({len(hdr)} of {HEADER_BYTES} bytes before the end "
                "of the file)",
            )
        fields = PACKET_HEADER.unpack_from(hdr)
        problem = packet_header_problem(*fields)
        if problem:
            raise _Damage(pos, problem)
        etype, _, esize, _, over, cap, num, _ = fields
        payload = pos + HEADER_BYTES
        available = self._size - payload
        slots = num
        mismatch = num != cap
        if mismatch:
            if num * esize <= available and self._plausible_header_at(payload + num * esize, read):
                slots = num
            elif cap * esize <= available and self._plausible_header_at(
                payload + cap * esize, read
            ):
                slots = cap
        damage = None
        n_events = num
        if slots * esize > available:
            n_events = min(num, available // esize)
            damage = (
                f"truncated packet: payload of {slots} x {esize} bytes, but the file ends "
                f"{available} bytes after the packet header (byte {self._size})"
            )
        return _Packet(
            offset=pos,
            event_type=etype,
            event_size=esize,
            ts_overflow=over,
            number=num,
            capacity=cap,
            end=payload + slots * esize,
            n_events=n_events,
            padding=slots - num,
            mismatch=mismatch,
            damage=damage,
        )

    # -- iteration --------------------------------------------------------------------

    def __iter__(self) -> Iterator[Events]:
        return self._iterate()

    def _iterate(self) -> Iterator[Events]:
        words: list[npt.NDArray[np.uint32]] = []
        overs: list[tuple[int, int]] = []  # (events, overflow) per piece
        n_batch = 0
        pos, skip = self._pos, self._skip
        read = self._blocks.get
        try:
            while True:
                pkt = self._packet_at(pos, read)
                if pkt is None:
                    break
                if pkt.offset >= self._counted_upto:
                    self._counted_upto = pkt.end
                    self.capacity_mismatches += pkt.mismatch
                    if pkt.padding:
                        self.skipped["unused slots after eventNumber (eventCapacity layout)"] += (
                            pkt.padding
                        )
                if pkt.event_type != POLARITY_EVENT:
                    if pkt.damage:
                        raise _Damage(pkt.offset, pkt.damage)
                    name = EVENT_TYPE_NAMES.get(pkt.event_type, "unknown")
                    self.skipped[f"packets of type {pkt.event_type} ({name})"] += 1
                    pos, skip = pkt.end, 0
                    continue
                left = pkt.n_events - skip
                while left > 0:
                    if n_batch == self.chunk_events:
                        self._pos, self._skip = pos, skip
                        ev = self._decode(words, overs, n_batch)
                        words, overs, n_batch = [], [], 0
                        if len(ev):
                            yield ev
                    take = min(self.chunk_events - n_batch, left)
                    view = read(pkt.payload + skip * POLARITY_SIZE, take * POLARITY_SIZE)
                    words.append(np.frombuffer(view, dtype="<u4").reshape(take, 2))
                    overs.append((take, pkt.ts_overflow))
                    n_batch += take
                    skip += take
                    left -= take
                if pkt.damage:
                    raise _Damage(pkt.offset, pkt.damage)
                pos, skip = pkt.end, 0
        except _Damage as damage:
            if n_batch:
                self._pos, self._skip = pos, skip
                ev = self._decode(words, overs, n_batch)
                if len(ev):
                    yield ev
            self._pos, self._skip = pos, skip  # at the damage: iterating again re-raises
            raise FormatError(self.path, damage.offset, damage.cause) from None
        self._pos, self._skip = pos, 0
        if n_batch:
            ev = self._decode(words, overs, n_batch)
            if len(ev):
                yield ev

    def _decode(
        self, words: list[npt.NDArray[np.uint32]], overs: list[tuple[int, int]], n: int
    ) -> Events:
        w = words[0] if len(words) == 1 else np.concatenate(words)
        over_values = {o for _, o in overs}
        over: int | npt.NDArray[np.int64]
        if len(over_values) == 1:
            over = over_values.pop()
        else:
            counts = np.fromiter((c for c, _ in overs), dtype=np.int64, count=len(overs))
            values = np.fromiter((o for _, o in overs), dtype=np.int64, count=len(overs))
            over = np.repeat(values, counts)
        ev, n_invalid, n_outside, n_negative = decode_polarity(w, over, self.sensor_size)
        if n_invalid:
            self.skipped["invalid events (valid bit 0)"] += n_invalid
        if n_outside and self.sensor_size is not None:
            w_, h_ = self.sensor_size
            self.skipped[f"events outside the {w_}x{h_} sensor"] += n_outside
        if n_negative:
            self.skipped["events with a negative timestamp"] += n_negative
        ev = self._after_seek(ev)
        self._count_order(ev)
        return ev

    # -- seeking and info -------------------------------------------------------------

    def seek(self, t_us: int) -> None:
        """Position at the first event with ``t >= t_us``.

        Scans packet headers (and each polarity packet's last timestamp) from the start of
        the data; payloads are not decoded. If damage comes first, the reader is left at
        the damage, so the next iteration raises :class:`FormatError` there.
        """
        t_us = int(t_us)
        pos = self.header.data_start
        while True:
            try:
                pkt = self._packet_at(pos, self._pread)
            except _Damage:
                break
            if pkt is None:
                break
            if pkt.event_type == POLARITY_EVENT and pkt.n_events:
                last = pkt.payload + (pkt.n_events - 1) * POLARITY_SIZE
                (ts,) = struct.unpack("<i", self._pread(last + 4, 4))
                if ((pkt.ts_overflow << TS_OVERFLOW_SHIFT) | (ts & 0x7FFFFFFF)) >= t_us:
                    break
            if pkt.damage:
                break
            pos = pkt.end
        self._pos, self._skip = pos, 0
        self._seek_t = t_us
        self._last_t = None
        self._counted_upto = 0
        self._blocks.reset()

    def other_streams(self) -> dict[str, int]:
        """Packets of other event types (type name -> packets), from a header scan."""
        counts: dict[str, int] = {}
        pos = self.header.data_start
        while True:
            try:
                pkt = self._packet_at(pos, self._pread)
            except _Damage:
                break
            if pkt is None:
                break
            if pkt.event_type != POLARITY_EVENT:
                name = EVENT_TYPE_NAMES.get(pkt.event_type, f"type {pkt.event_type}")
                counts[name] = counts.get(name, 0) + 1
            if pkt.damage:
                break
            pos = pkt.end
        return counts

    def close(self) -> None:
        self._f.close()


class Aedat3Writer(EventWriter):
    """Writes polarity events as AEDAT 3.1 (readable by libcaer/dv-python and tonic).

    Each ``write()`` becomes one or more polarity packets of at most ``max_packet_events``
    events; a packet never spans a change of ``t >> 31`` (its eventTSOverflow), so
    timestamps past 2^31 µs round-trip. Empty writes write nothing.

    Args:
        path: Output file (overwritten).
        sensor_size: ``(width, height)``, each 1..32768 (15-bit coordinates).
        source_name: The ``#Source 1:`` name; default ``DVS128``/``DAVIS240``/``DAVIS346``
            for those sizes, else ``Generic WxH``.
        start_time: For the ``#Start-Time`` line; default now.
        max_packet_events: Events per packet at most.

    Attributes:
        non_monotonic: Events written whose timestamp is below the previous one's.
    """

    def __init__(
        self,
        path: str | Path,
        sensor_size: tuple[int, int],
        *,
        source_name: str | None = None,
        start_time: _dt.datetime | None = None,
        max_packet_events: int = 4096,
    ) -> None:
        w, h = (int(v) for v in sensor_size)
        if not (0 < w <= 0x8000 and 0 < h <= 0x8000):
            raise ValueError(
                f"sensor_size {sensor_size!r} out of range: AEDAT 3.1 stores 15-bit "
                "coordinates, so width and height must be 1..32768"
            )
        if max_packet_events <= 0:
            raise ValueError(f"max_packet_events must be positive, got {max_packet_events}")
        super().__init__(path, (w, h))
        name = source_name if source_name is not None else _WRITER_NAMES.get((w, h))
        if name is None:
            name = f"Generic {w}x{h}"
        if "\n" in name or "\r" in name:
            raise ValueError(f"source_name must be one line, got {name!r}")
        self.source_name = name
        self.max_packet_events = int(max_packet_events)
        self.non_monotonic = 0
        self._last_t: int | None = None
        when = start_time or _dt.datetime.now().astimezone()
        stamp = when.strftime("%Y-%m-%d %H:%M:%S (TZ%z)")
        lines = ["#!AER-DAT3.1", "#Format: RAW", f"#Source 1: {name}", f"#Start-Time: {stamp}"]
        lines.append(END_HEADER)
        self._f: BinaryIO | None = None
        try:
            self._f = open(self.path, "wb")
            self._f.write("".join(line + "\r\n" for line in lines).encode("utf-8"))
        except OSError as exc:
            self._abandon()
            raise WriteError(self.path, exc) from None

    def write(self, events: Events) -> None:
        """Append events (any count, including none).

        Raises:
            ValueError: writer closed, negative timestamps, or coordinates outside the
                sensor (quoting the bad values).
        """
        if self._f is None:
            raise ValueError(f"write() on a closed writer ({self.path})")
        ev = as_events(np.asarray(events))
        n = len(ev)
        if n == 0:
            return
        t = ev["t"]
        if int(t.min()) < 0:
            raise ValueError(f"negative timestamps cannot be written: min t = {int(t.min())}")
        w, h = self.sensor_size
        xmax, ymax = int(ev["x"].max()), int(ev["y"].max())
        if xmax >= w or ymax >= h:
            raise ValueError(f"coordinates outside the {w}x{h} sensor: max x {xmax}, max y {ymax}")
        back = int(np.count_nonzero(t[1:] < t[:-1]))
        if self._last_t is not None and int(t[0]) < self._last_t:
            back += 1
        self.non_monotonic += back
        self._last_t = int(t[-1])
        words = encode_polarity(ev)
        over = t >> TS_OVERFLOW_SHIFT
        runs = np.flatnonzero(over[1:] != over[:-1]) + 1
        bounds = [0, *runs.tolist(), n]
        f = self._f
        try:
            for a, b in itertools.pairwise(bounds):
                ov = int(over[a])
                for s in range(a, b, self.max_packet_events):
                    e = min(s + self.max_packet_events, b)
                    k = e - s
                    f.write(PACKET_HEADER.pack(POLARITY_EVENT, 1, POLARITY_SIZE, 4, ov, k, k, k))
                    f.write(words[s:e].data)
        except OSError as exc:
            self._abandon()
            raise WriteError(self.path, exc) from None
        self.events_written += n

    def _abandon(self) -> None:
        """Close a file that failed, without flushing it again (that would fail too)."""
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass  # the failure that brought us here is the one reported

    def close(self) -> None:
        """Flush and close the file (idempotent).

        Raises:
            WriteError: the file cannot be written (disk full, ...).
        """
        if self._f is not None:
            f, self._f = self._f, None
            try:
                f.close()
            except OSError as exc:
                raise WriteError(self.path, exc) from None
