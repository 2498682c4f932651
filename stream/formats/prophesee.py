"""Prophesee recordings: RAW EVT 2.0 and EVT 3.0, and DAT (v2, CD events).

Layout (docs.prophesee.ai "EVT 2.0", "EVT 3.0", "DAT"):

* An ASCII header of ``% key value`` lines, ending at the first line that does not start
  with ``%`` (the data starts there). RAW headers say ``% evt 2.0`` / ``% evt 3.0`` (or
  ``% format EVT3;...``); DAT headers say ``% Data file containing ... events``.
* EVT 2.0: little-endian 32-bit words, the type in bits 28-31: CD_OFF 0x0 / CD_ON 0x1
  (6-bit time low in bits 22-27, x in 11-21, y in 0-10), EVT_TIME_HIGH 0x8 (28 bits),
  EXT_TRIGGER 0xA, OTHERS 0xE, CONTINUED 0xF. Decoded here with numpy (vectorised), event
  for event the same as expelliarmus (checked by the tests).
* EVT 3.0: little-endian 16-bit words with state (y, base x, time high/low): decoded by
  expelliarmus (its C reader, the decoding the reference ``evt3_sample.npy`` was made
  with). Before a word reaches it, a numpy scan checks the word types and counts the
  events, so expelliarmus only ever sees words it knows and is asked for exactly the
  events before any damage (it prints to stderr and drops the whole chunk otherwise).
* DAT: after the header one byte event type (0x00 Event2D or 0x0C CD) and one byte event
  size (8), then ``uint32 t; uint32 addr`` with ``x = addr & 0x3FFF``, ``y = (addr >> 14) &
  0x3FFF``, ``p = addr >> 28``. Decoded with numpy; a 32-bit time that drops by more than
  2^31 counts as a wrap (+2^32).

Sensor size comes from the header (``% geometry WxH``, ``% format ...;width=W;height=H``,
``% Width``/``% Height``), else from the sensor generation in ``% plugin_name`` /
``% sensor_generation`` (Gen3 640x480, Gen4/Gen4.1/IMX636 1280x720, ATIS 304x240); else
``None`` (pass ``sensor_size=`` to the reader or ``--sensor`` on the command line).

What the readers do with irregular content (never silently):

* EVT words of unknown type: damage. The events before the word are yielded, then
  :class:`~smastream.errors.FormatError` gives its byte offset. EVT formats have no
  framing to resynchronise on, so reading stops there;
* a file that ends inside a word (EVT) or an event (DAT): the same, at the partial word;
* events outside the sensor: dropped and counted in ``skipped``; EXT_TRIGGER / OTHERS /
  CONTINUED words: counted in ``skipped``;
* timestamps that go back: kept and counted in ``non_monotonic``.

The file is read :data:`BLOCK_BYTES` at a time, so memory stays flat for any file size.
``seek`` re-reads from the start and drops the events before the target (EVT 3 state
cannot be restarted mid-stream; EVT 2 and DAT are cheap to decode).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from smastream.errors import DependencyError, FormatError
from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.formats.base import DEFAULT_CHUNK_EVENTS, EventReader, check_header_line

__all__ = [
    "BLOCK_BYTES",
    "DatReader",
    "Evt2Reader",
    "Evt3Reader",
    "PropheseeHeader",
    "decode_dat",
    "decode_evt2",
    "evt3_scan",
    "prophesee_format",
    "read_prophesee_header",
]

BLOCK_BYTES = 4 << 20
"""Bytes scanned from the file at a time."""
MAX_HEADER_BYTES = 1 << 20

EVT2_KNOWN = (0x0, 0x1, 0x8, 0xA, 0xE, 0xF)
_EVT2_OK = np.isin(np.arange(16), EVT2_KNOWN)
EVT2_NAMES = {0xA: "EXT_TRIGGER", 0xE: "OTHERS", 0xF: "CONTINUED"}
EVT3_KNOWN = (0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xE, 0xF)
EVT3_TRIGGER = 0xA
"""EXT_TRIGGER: a valid EVT 3.0 word that expelliarmus 1.1 rejects, so it is stepped over
here (the reader brings expelliarmus's state up to the word itself, then skips it)."""
DAT_EVENT_TYPES = {0x00: "Event2D", 0x0C: "CD"}

# Sensor generation -> size, matched in plugin_name / sensor_generation (lower case).
_GENERATIONS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("imx636", (1280, 720)),
    ("imx646", (1280, 720)),
    ("gen41", (1280, 720)),
    ("gen4", (1280, 720)),
    ("evk4", (1280, 720)),
    ("imx8", (320, 320)),
    ("gen31", (640, 480)),
    ("gen3", (640, 480)),
    ("evk3", (640, 480)),
    ("gen2", (304, 240)),
    ("atis", (304, 240)),
    ("chronocam", (304, 240)),
)
_GEOMETRY = re.compile(r"^(\d{1,5})\s*x\s*(\d{1,5})$", re.IGNORECASE)


@dataclass
class PropheseeHeader:
    """The ``%`` header of a Prophesee file.

    Attributes:
        data_start: Byte offset of the first byte after the header.
        fields: ``key -> value`` of the ``% key value`` lines (first wins).
        lines: Every header line without ``%`` and its line ending.
        sensor_size: ``(width, height)`` from geometry lines or the sensor generation.
        camera: A camera description (plugin name, serial number), if any.
    """

    data_start: int
    fields: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    sensor_size: tuple[int, int] | None = None
    camera: str | None = None


def _size(w: str, h: str) -> tuple[int, int] | None:
    if w.isdigit() and h.isdigit() and 0 < int(w) <= 65535 and 0 < int(h) <= 65535:
        return int(w), int(h)
    return None


def _header_sensor_size(fields: dict[str, str], lines: list[str]) -> tuple[int, int] | None:
    lower = {k.lower(): v for k, v in fields.items()}
    m = _GEOMETRY.match(lower.get("geometry", "").strip())
    if m and (size := _size(m.group(1), m.group(2))):
        return size
    fmt = lower.get("format", "")
    if ";" in fmt:
        opts = dict(o.split("=", 1) for o in fmt.split(";")[1:] if "=" in o)
        if size := _size(opts.get("width", "").strip(), opts.get("height", "").strip()):
            return size
    if size := _size(lower.get("width", "").strip(), lower.get("height", "").strip()):
        return size
    text = " ".join(
        [lower.get("plugin_name", ""), lower.get("sensor_generation", ""), *lines]
    ).lower()
    generation = lower.get("sensor_generation", "").replace(".", "").strip()
    if generation:
        text = f"gen{generation} {text}"
    for key, size in _GENERATIONS:
        if key in text:
            return size
    return None


def read_prophesee_header(f: BinaryIO, path: str | Path) -> PropheseeHeader:
    """Read the ``%`` header lines from the start of ``f``; leaves ``f`` anywhere.

    Raises:
        FormatError: no ``%`` header, a header line without a line ending at the end of
            the file, or a header over 1 MiB.
    """
    f.seek(0)
    pos = 0
    fields: dict[str, str] = {}
    lines: list[str] = []
    while True:
        peek = f.read(1)
        if peek != b"%":
            if not pos:
                raise FormatError(path, 0, "not a Prophesee file (no '%' header)")
            break
        raw = peek + f.readline(MAX_HEADER_BYTES)
        check_header_line(path, pos, raw, MAX_HEADER_BYTES)
        text = raw[1:].rstrip(b"\r\n").decode("utf-8", "replace").strip()
        pos += len(raw)
        if pos > MAX_HEADER_BYTES:
            raise FormatError(path, pos, "'%' header longer than 1 MiB")
        lines.append(text)
        if text.lower() == "end":  # newer Metavision files end the header with '% end'
            break
        key, _, value = text.partition(" ")
        if key and key not in fields:
            fields[key] = value.strip()
    camera_parts = [fields[k] for k in ("plugin_name", "camera_integrator_name") if k in fields]
    if "serial_number" in fields:
        camera_parts.append(f"S/N {fields['serial_number']}")
    return PropheseeHeader(
        data_start=pos,
        fields=fields,
        lines=lines,
        sensor_size=_header_sensor_size(fields, lines),
        camera=", ".join(camera_parts) or None,
    )


def prophesee_format(head: bytes) -> str | None:
    """``evt2``, ``evt3`` or ``dat`` from the first bytes of a file, or ``None``.

    Looks at the ``%`` header lines within ``head`` (pass the first few KiB).
    """
    if not head.startswith(b"%"):
        return None
    for raw in head.split(b"\n"):
        if not raw.startswith(b"%"):
            break
        text = raw[1:].strip().decode("ascii", "replace").lower()
        if text.startswith("evt "):
            version = text[4:].strip()
            if version.startswith("3"):
                return "evt3"
            if version.startswith("2"):
                return "evt2"
        if text.startswith("format "):
            value = text[7:].strip()
            if value.startswith("evt3"):
                return "evt3"
            if value.startswith("evt2"):
                return "evt2"
        if text.startswith("data file containing"):
            return "dat"
    return None


# -- pure decoders --------------------------------------------------------------------


def decode_evt2(
    words: npt.NDArray[np.uint32], time_high: int
) -> tuple[Events, int, dict[int, int]]:
    """Decode EVT 2.0 words whose types are all known (pure).

    Args:
        words: ``[N]`` little-endian uint32 words.
        time_high: The EVT_TIME_HIGH value in force before the first word.

    Returns:
        ``(events, time_high, other)``: the CD events in order, the time high in force
        after the last word, and the count of EXT_TRIGGER/OTHERS/CONTINUED words by type.
    """
    types = (words >> 28).astype(np.uint8)
    cd = types <= 1
    th_mask = types == 0x8
    n_high = int(np.count_nonzero(th_mask))
    w = words[cd]
    if n_high:
        # The time high in force at each word: a table [carry, each TIME_HIGH value...]
        # indexed by how many TIME_HIGH words came before.
        table = np.empty(n_high + 1, dtype=np.int64)
        table[0] = time_high
        table[1:] = words[th_mask] & 0x0FFFFFFF
        high = table[np.cumsum(th_mask, dtype=np.int32)[cd]]
        last_high = int(table[-1])
    else:
        high = np.full(len(w), time_high, dtype=np.int64)
        last_high = time_high
    out = np.empty(len(w), dtype=EVENT_DTYPE)
    high <<= 6
    high |= (w >> 22) & 0x3F
    out["t"] = high
    out["x"] = (w >> 11) & 0x7FF
    out["y"] = w & 0x7FF
    out["p"] = types[cd]
    other: dict[int, int] = {}
    if len(w) + n_high != len(words):
        counts = np.bincount(types, minlength=16)
        other = {k: int(counts[k]) for k in EVT2_NAMES if counts[k]}
    return out, last_high, other


def decode_dat(
    words: npt.NDArray[np.uint32], last_t: int, overflows: int
) -> tuple[Events, int, int]:
    """Decode DAT CD events (pure).

    Args:
        words: ``[N, 2]`` uint32: timestamp and address of each event.
        last_t: The previous event's 32-bit timestamp (``-1`` before the first).
        overflows: Wraps of the 32-bit timestamp so far.

    Returns:
        ``(events, last_t, overflows)`` after these events.
    """
    n = len(words)
    out = np.empty(n, dtype=EVENT_DTYPE)
    if n == 0:
        return out, last_t, overflows
    t32 = words[:, 0].astype(np.int64)
    addr = words[:, 1]
    prev = np.empty(n, dtype=np.int64)
    prev[0] = last_t if last_t >= 0 else t32[0]
    prev[1:] = t32[:-1]
    wraps = np.cumsum((prev - t32) > (1 << 31)) + overflows
    out["t"] = t32 + (wraps << 32)
    np.bitwise_and(addr, 0x3FFF, out=out["x"], casting="unsafe")
    np.bitwise_and(addr >> 14, 0x3FFF, out=out["y"], casting="unsafe")
    np.right_shift(addr, 28, out=out["p"], casting="unsafe")
    return out, int(t32[-1]), int(wraps[-1])


_EVT3_DECODABLE = np.isin(np.arange(16), [k for k in EVT3_KNOWN if k != EVT3_TRIGGER])
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def evt3_scan(words: npt.NDArray[np.uint16]) -> tuple[int, int]:
    """Check EVT 3.0 word types and count events (pure).

    Returns:
        ``(n_good, n_events)``: how many leading words have a known type other than
        EXT_TRIGGER (``len(words)`` when all do), and the CD events those words hold,
        counted as expelliarmus does (one per EVT_ADDR_X, one per set bit of a VECT_12 /
        VECT_8 mask).
    """
    types = words >> 12
    bad = np.flatnonzero(~_EVT3_DECODABLE[types])
    n_good = int(bad[0]) if len(bad) else len(words)
    w = words[:n_good]
    t = types[:n_good]
    n = int(np.count_nonzero(t == 0x2))
    v12 = w[t == 0x4] & 0xFFF
    v8 = w[t == 0x5] & 0xFF
    n += int(_POPCOUNT8[v12 & 0xFF].sum() + _POPCOUNT8[v12 >> 8].sum())
    n += int(_POPCOUNT8[v8].sum())
    return n_good, n


# -- readers --------------------------------------------------------------------------


class _PropheseeReader(EventReader):
    """Shared parts: header, sensor size, drop-outside, seek target, monotonic count."""

    word_bytes = 4

    def __init__(
        self,
        path: str | Path,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
        *,
        sensor_size: tuple[int, int] | None = None,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        super().__init__(path, chunk_events)
        if block_bytes < 16:
            raise ValueError(f"block_bytes must be at least 16, got {block_bytes}")
        self.block_bytes = block_bytes - block_bytes % 8
        try:
            self._f: BinaryIO = open(self.path, "rb")
        except OSError as exc:
            raise FormatError(self.path, 0, f"cannot open: {exc.strerror or exc}") from None
        try:
            self.header = read_prophesee_header(self._f, self.path)
            self._size = os.fstat(self._f.fileno()).st_size
            self.data_start = self._data_start()
        except BaseException:
            self._f.close()
            raise
        self.camera = self.header.camera
        self.sensor_size = sensor_size or self.header.sensor_size
        self.non_monotonic = 0
        self._seek_t: int | None = None
        self._last_t: int | None = None

    def _data_start(self) -> int:
        return self.header.data_start

    def _finish(self, ev: Events) -> Events:
        """Drop events outside the sensor and before a seek target; count going back."""
        if not len(ev):
            return ev
        if self.sensor_size is not None:
            w, h = self.sensor_size
            if int(ev["x"].max()) >= w or int(ev["y"].max()) >= h:
                inside = (ev["x"] < w) & (ev["y"] < h)
                self.skipped[f"events outside the {w}x{h} sensor"] += int(
                    len(ev) - np.count_nonzero(inside)
                )
                ev = ev[inside]
        ev = self._after_seek(ev)
        self._count_order(ev)
        return ev

    def _chunks(self, ev: Events) -> Iterator[Events]:
        for s in range(0, len(ev), self.chunk_events):
            yield ev[s : s + self.chunk_events]

    def _read(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(n)

    def _truncated(self, pos: int, what: str) -> FormatError:
        return FormatError(
            self.path,
            pos,
            f"truncated {what}: the file ends {self._size - pos} bytes into it (byte {self._size})",
        )

    def seek(self, t_us: int) -> None:
        """Position at the first event with ``t >= t_us`` (re-reads from the start)."""
        self._restart()
        self._seek_t = int(t_us)
        self._last_t = None

    def _restart(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._f.close()


class Evt2Reader(_PropheseeReader):
    """Streaming reader of Prophesee RAW EVT 2.0 (own vectorised numpy decoder).

    Args:
        path: The file.
        chunk_events: Upper bound on events per yielded packet.
        sensor_size: ``(width, height)``; overrides the header (the EVT 2.0 samples have
            no geometry line: Gen3 is 640x480 by plugin name).

    Raises:
        FormatError: the file cannot be opened or has no ``%`` header.
    """

    format = "evt2"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._restart()

    def _restart(self) -> None:
        self._pos = self.data_start
        self._time_high = 0

    def __iter__(self) -> Iterator[Events]:
        block = min(self.block_bytes, self.chunk_events * 4)
        while self._pos < self._size:
            raw = self._read(self._pos, block)
            n_words = len(raw) // 4
            if n_words == 0:
                raise self._truncated(self._pos, "EVT 2.0 word (4 bytes)")
            words = np.frombuffer(raw, dtype="<u4", count=n_words)
            known = _EVT2_OK[words >> 28]
            n_good = n_words if bool(known.all()) else int(np.argmin(known))
            ev, self._time_high, other = decode_evt2(words[:n_good], self._time_high)
            for k, v in other.items():
                self.skipped[f"{EVT2_NAMES[k]} words"] += v
            bad_at = self._pos + 4 * n_good
            self._pos = bad_at
            yield from self._chunks(self._finish(ev))
            if n_good < n_words:
                kind = int(words[n_good] >> 28)
                raise FormatError(
                    self.path, bad_at, f"EVT 2.0 word of unknown type 0x{kind:X} (damaged data?)"
                )


class DatReader(_PropheseeReader):
    """Streaming reader of Prophesee DAT (v2) CD events (own vectorised numpy decoder).

    Args:
        path: The file.
        chunk_events: Upper bound on events per yielded packet.
        sensor_size: ``(width, height)``; overrides the header.

    Raises:
        FormatError: unreadable header, or an event type/size this reader does not take.
    """

    format = "dat"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.event_type = DAT_EVENT_TYPES[self._etype]
        self._restart()

    def _data_start(self) -> int:
        pos = self.header.data_start
        pair = self._read(pos, 2)
        if len(pair) < 2:
            raise self._truncated(pos, "DAT event type/size bytes")
        etype, esize = pair[0], pair[1]
        if etype not in DAT_EVENT_TYPES:
            raise FormatError(
                self.path, pos, f"DAT event type 0x{etype:02X} is not a CD type (0x00, 0x0C)"
            )
        if esize != 8:
            raise FormatError(self.path, pos + 1, f"DAT event size {esize}, expected 8")
        self._etype = etype
        return pos + 2

    def _restart(self) -> None:
        self._pos = self.data_start
        self._t32 = -1
        self._overflows = 0

    def __iter__(self) -> Iterator[Events]:
        block = min(self.block_bytes, self.chunk_events * 8)
        while self._pos < self._size:
            raw = self._read(self._pos, block)
            n = len(raw) // 8
            if n == 0:
                raise self._truncated(self._pos, "DAT event (8 bytes)")
            words = np.frombuffer(raw, dtype="<u4", count=2 * n).reshape(n, 2)
            ev, self._t32, self._overflows = decode_dat(words, self._t32, self._overflows)
            self._pos += 8 * n
            yield from self._chunks(self._finish(ev))


def _expelliarmus() -> Any:
    try:
        from expelliarmus.wizard import clib, wizard_wrapper
    except ImportError as exc:
        raise DependencyError(
            f"reading EVT 3.0 needs expelliarmus ({exc}); pip install expelliarmus"
        ) from None
    return clib, wizard_wrapper


class Evt3Reader(_PropheseeReader):
    """Streaming reader of Prophesee RAW EVT 3.0 (expelliarmus decodes, numpy checks).

    Args:
        path: The file.
        chunk_events: Upper bound on events per yielded packet (expelliarmus may add up to
            11 events of a vector that straddles the bound).
        sensor_size: ``(width, height)``; overrides the header.

    Raises:
        FormatError: unreadable header.
        DependencyError: expelliarmus is not installed.
    """

    format = "evt3"
    word_bytes = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clib, self._wrapper = _expelliarmus()
        self._restart()

    def _restart(self) -> None:
        cargo = self._clib.c_cargos_t["evt3"](events_info=self._clib.events_cargo_t())
        cargo.events_info.is_chunk = 1
        cargo.events_info.start_byte = self.data_start  # > 0: the header is not re-parsed
        self._cargo = cargo
        self._scan_pos = self.data_start  # words before it are checked
        self._available = 0  # events checked but not yet decoded
        self._damage: FormatError | None = None
        self._trigger_at: int | None = None  # offset of an EXT_TRIGGER word to step over

    def _step_over_trigger(self, at: int) -> None:
        """Apply the state words between expelliarmus's position and the EXT_TRIGGER word
        at ``at`` to its state (as its C reader would), then move both past the word."""
        c = self._cargo
        start = int(c.events_info.start_byte)
        words = np.frombuffer(self._read(start, at - start), dtype="<u2")
        for w in words.tolist():
            kind, value = w >> 12, w & 0xFFF
            if kind == 0x0:
                c.last_event.y = w & 0x7FF
            elif kind == 0x3:
                c.last_event.p = (w >> 11) & 1
                c.base_x = w & 0x7FF
            elif kind in (0x4, 0x5):  # a vector with no event in it still moves base x
                c.base_x = (c.base_x + (12 if kind == 0x4 else 8)) & 0xFFFF
            elif kind in (0x6, 0x8):
                if kind == 0x6:
                    c.time_low_ovfs += value < c.time_low
                    c.time_low = value
                else:
                    c.time_high_ovfs += value < c.time_high
                    c.time_high = value
                c.last_event.t = (
                    (c.time_high_ovfs << 24) + ((c.time_high + c.time_low_ovfs) << 12) + c.time_low
                )
        c.events_info.start_byte = at + 2
        self._scan_pos = at + 2
        self._trigger_at = None
        self.skipped["EXT_TRIGGER words"] += 1

    def _scan(self) -> None:
        """Check the next block of words; sets ``_available`` and maybe ``_damage``."""
        raw = self._read(self._scan_pos, self.block_bytes)
        n_words = len(raw) // 2
        if n_words == 0:
            if raw:
                self._damage = self._truncated(self._scan_pos, "EVT 3.0 word (2 bytes)")
            return
        words = np.frombuffer(raw, dtype="<u2", count=n_words)
        n_good, n_events = evt3_scan(words)
        types = np.bincount(words[:n_good] >> 12, minlength=16)
        if types[0xE]:
            self.skipped["OTHERS words"] += int(types[0xE])
        self._available += n_events
        self._scan_pos += 2 * n_good
        if n_good < n_words:
            kind = int(words[n_good] >> 12)
            if kind == EVT3_TRIGGER:
                self._trigger_at = self._scan_pos
                return
            self._damage = FormatError(
                self.path,
                self._scan_pos,
                f"EVT 3.0 word of unknown type 0x{kind:X} (damaged data?)",
            )

    def __iter__(self) -> Iterator[Events]:
        buff_words = max(4096, min(self.block_bytes // 2, 1 << 20))
        while True:
            while self._available == 0 and self._damage is None and self._scan_pos < self._size:
                if self._trigger_at is not None:
                    self._step_over_trigger(self._trigger_at)
                    continue
                self._scan()
            if self._available == 0:
                if self._damage is not None:
                    raise self._damage
                return
            self._cargo.events_info.dim = min(self.chunk_events, self._available)
            arr, self._cargo, status = self._wrapper.c_read_chunk_wrapper(
                encoding="evt3", fpath=self.path, cargo=self._cargo, buff_size=buff_words
            )
            if arr is None or status != 0:
                raise FormatError(
                    self.path,
                    int(self._cargo.events_info.start_byte),
                    f"expelliarmus could not decode the EVT 3.0 data (status {status})",
                )
            self._available -= len(arr)
            out = np.empty(len(arr), dtype=EVENT_DTYPE)
            for name in ("t", "x", "y", "p"):
                out[name] = arr[name]
            yield from self._chunks(self._finish(out))
