"""AEDAT 2.0 (jAER): vectorised numpy reader of DVS128 and DAVIS240/346 recordings.

Layout: ASCII header lines starting with ``#`` (CRLF), the first ``#!AER-DAT2.0``; newer
jAER versions end the header with ``#End Of ASCII Header``, older ones just stop (the
header ends at the first byte that is not ``#``). Then 8-byte **big-endian** records:
``int32 address, int32 timestamp`` (µs).

Address layouts, taken from jAER's own extractors (SensorsINI/jaer on GitHub):

* DVS128 (``ch/unizh/ini/jaer/chip/retina/DVS128.java``, ``DVS128.Extractor``):
  ``x_raw = (addr & 0xFE) >> 1``, ``y_raw = (addr & 0x7F00) >> 8``, polarity bit 0 with
  ``fliptype``: raw 0 is ON. Addresses with bit 15 (sync, ``SYNC_EVENT_BITMASK 0x8000``)
  or bit 31 (``BasicEvent.SPECIAL_EVENT_BIT_MASK``) are special events, not pixels.
* DAVIS (``eu/seebetter/ini/chips/DavisChip.java``, ``DavisBaseCamera.DavisEventExtractor``):
  bit 31 set = APS sample (``ADDRESS_TYPE_APS``), or IMU sample when
  ``(addr & 0x80000C00) == 0x80000C00``; with bit 31 clear, bit 10 set is an external
  input event (``EXTERNAL_INPUT_EVENT_ADDR``), otherwise a DVS event with
  ``y_raw = bits 22-30``, ``x_raw = bits 12-21``, polarity ``bit 11`` (1 = ON).

Orientation: jAER mirrors x (``x = sizeX - 1 - x_raw``, ``setFlipx(true)``) and puts the
origin at the lower left (OpenGL). We use the upper-left origin everywhere, so
``x = W - 1 - x_raw`` and ``y = H - 1 - y_raw``. This matches v2e's AEDAT 2.0 writer
(``v2ecore/output/aedat2_output.py``: ``flipx``/``flipy`` from an upper-left origin) and
the Rust ``eventcv-core`` reader checked on a real DAVIS346 file (y flipped).

Timestamps are 32-bit and wrap: a backwards jump of more than 2^30 µs is a wrap and adds
2^32 (when the previous value used bit 31) or 2^31 (a 31-bit counter); wraps are counted
in :attr:`Aedat2Reader.wraps`. Smaller backward steps are kept and counted in
:attr:`Aedat2Reader.non_monotonic`.

The chip comes from the ``chip`` argument, else from a header line naming it (``# AEChip:
...DVS128`` / ``...Davis346B`` / ``# HardwareInterface: ...``), else it is inferred from the
first block of addresses (any bit above 15 set -> DAVIS; DAVIS346 if a coordinate exceeds
the DAVIS240 array, else DAVIS240 — a guess, recorded in :attr:`Aedat2Reader.chip_source`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from smastream.errors import FormatError
from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.formats.base import DEFAULT_CHUNK_EVENTS, EventReader

__all__ = [
    "CHIP_SIZES",
    "RECORD_DTYPE",
    "Aedat2Reader",
    "chip_from_header",
    "decode_addresses",
    "infer_chip",
    "unwrap_timestamps",
]

MAGIC = b"#!AER-DAT2"
RECORD_DTYPE = np.dtype([("address", ">u4"), ("timestamp", ">u4")])
"""One AEDAT 2.0 record: big-endian address and timestamp (8 bytes)."""
CHIP_SIZES: dict[str, tuple[int, int]] = {
    "dvs128": (128, 128),
    "davis240": (240, 180),
    "davis346": (346, 260),
}
"""Supported chips and their ``(width, height)``."""
WRAP_JUMP = 1 << 30
MAX_HEADER_BYTES = 16 << 20
INFER_RECORDS = 1 << 16

_END_OF_HEADER = re.compile(rb"^#\s*end of ascii header\s*$", re.IGNORECASE)
_CHIP_LINE = re.compile(r"aechip|hardwareinterface|chip\s*class", re.IGNORECASE)
_CHIP_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"davi?s?\s*-?346", re.IGNORECASE), "davis346"),
    (re.compile(r"davi?s?\s*-?240", re.IGNORECASE), "davis240"),
    (re.compile(r"dvs\s*-?128|tmpdiff128", re.IGNORECASE), "dvs128"),
)


def chip_from_header(lines: list[str]) -> str | None:
    """The chip named on an ``AEChip``/``HardwareInterface`` header line, or ``None``."""
    for line in lines:
        if not _CHIP_LINE.search(line):
            continue
        for pattern, chip in _CHIP_PATTERNS:
            if pattern.search(line):
                return chip
    return None


def infer_chip(addresses: npt.NDArray[np.uint32]) -> str | None:
    """Guess the chip from raw addresses (``None`` when there are none).

    DVS128 addresses use bits 0-15 only; DAVIS DVS events put x at bits 12-21 and y at
    22-30, so any bit above 15 means DAVIS. Between DAVIS240 and DAVIS346 the coordinate
    ranges decide (DAVIS240 unless a coordinate lies outside 240x180).
    """
    a = np.asarray(addresses, dtype=np.uint32)
    if a.size == 0:
        return None
    if not np.any(a > 0xFFFF):
        return "dvs128"
    dvs = a[(a & 0x80000400) == 0]
    if dvs.size and (int(((dvs >> 12) & 0x3FF).max()) >= 240 or int((dvs >> 22).max()) >= 180):
        return "davis346"
    return "davis240"


def unwrap_timestamps(
    raw: npt.NDArray[np.uint32], offset: int = 0, prev: int | None = None
) -> tuple[npt.NDArray[np.int64], int, int | None, int]:
    """Unwrap 32-bit timestamps to int64 µs (pure).

    Args:
        raw: ``[N]`` raw timestamps in file order.
        offset: What earlier wraps added (carry from the previous block).
        prev: The previous block's last raw timestamp (``None`` at the start).

    Returns:
        ``(t, offset, prev, wraps)``: ``[N]`` int64 times, the carry for the next block,
        and the number of wraps found in this block.
    """
    r = raw.astype(np.int64)
    if r.size == 0:
        return r, offset, prev, 0
    before = np.empty_like(r)
    before[0] = r[0] if prev is None else prev
    before[1:] = r[:-1]
    jumps = np.flatnonzero(r - before < -WRAP_JUMP)
    if jumps.size == 0:
        return r + offset, offset, int(r[-1]), 0
    inc = np.zeros_like(r)
    inc[jumps] = np.where(before[jumps] >= (1 << 31), 1 << 32, 1 << 31)
    offsets = np.cumsum(inc)
    offsets += offset
    return r + offsets, int(offsets[-1]), int(r[-1]), int(jumps.size)


def decode_addresses(
    addresses: npt.NDArray[np.uint32], t: npt.NDArray[np.int64], chip: str
) -> tuple[Events, Counter[str]]:
    """Decode raw jAER addresses of ``chip`` to upper-left-origin events (pure).

    Args:
        addresses: ``[N]`` raw addresses.
        t: ``[N]`` unwrapped timestamps (µs).
        chip: One of :data:`CHIP_SIZES`.

    Returns:
        ``(events, skipped)``: the DVS events in file order, and counts of the records
        that are not DVS events (APS, IMU, special) or fall outside the sensor.
    """
    if chip not in CHIP_SIZES:
        raise ValueError(f"unknown chip {chip!r}: use one of {', '.join(CHIP_SIZES)}")
    w, h = CHIP_SIZES[chip]
    a = np.asarray(addresses, dtype=np.uint32)
    skipped: Counter[str] = Counter()
    if chip == "dvs128":
        special = (a & 0x80008000) != 0
        foreign = ((a & 0x7FFF0000) != 0) & ~special
        xr = (a >> 1) & 0x7F
        yr = (a >> 8) & 0x7F
        pol = 1 - (a & 1)  # jAER fliptype: raw 0 is ON
        keep = ~(special | foreign)
        skipped["special/sync events (bit 15 or 31)"] = int(np.count_nonzero(special))
        skipped["addresses outside the DVS128 layout (bits 16-30)"] = int(np.count_nonzero(foreign))
    else:
        aps = (a & 0x80000000) != 0
        imu = (a & 0x80000C00) == 0x80000C00
        external = ~aps & ((a & 0x400) != 0)
        xr = (a >> 12) & 0x3FF
        yr = (a >> 22) & 0x1FF
        pol = (a >> 11) & 1
        keep = ~(aps | external)
        skipped["IMU samples"] = int(np.count_nonzero(imu))
        skipped["APS samples"] = int(np.count_nonzero(aps)) - skipped["IMU samples"]
        skipped["external input events (bit 10)"] = int(np.count_nonzero(external))
        outside = keep & ((xr >= w) | (yr >= h))
        skipped[f"events outside the {w}x{h} sensor"] = int(np.count_nonzero(outside))
        keep &= ~outside
    idx = np.flatnonzero(keep)
    out = np.empty(idx.size, dtype=EVENT_DTYPE)
    out["t"] = t[idx]
    out["x"] = (w - 1) - xr[idx].astype(np.int64)
    out["y"] = (h - 1) - yr[idx].astype(np.int64)
    out["p"] = pol[idx]
    return out, +skipped  # drop zero counts


def read_aedat2_header(f: BinaryIO, path: str | Path) -> tuple[int, list[str]]:
    """Read the ``#`` header lines; returns ``(data_start, lines)``.

    Raises:
        FormatError: not AEDAT 2.0, or a header line without a line ending.
    """
    f.seek(0)
    pos = 0
    lines: list[str] = []
    while True:
        f.seek(pos)
        if pos and f.read(1) != b"#":
            return pos, lines
        f.seek(pos)
        raw = f.readline(MAX_HEADER_BYTES)
        if not pos and not raw.startswith(MAGIC):
            shown = raw[:16].decode("ascii", "backslashreplace")
            raise FormatError(path, 0, f"not an AEDAT 2.0 file (starts with {shown!r})")
        if not raw.endswith(b"\n"):
            cause = (
                "header line longer than 16 MiB"
                if len(raw) >= MAX_HEADER_BYTES
                else "truncated header line (no line ending)"
            )
            raise FormatError(path, pos, cause)
        pos += len(raw)
        text = raw.rstrip(b"\r\n")
        lines.append(text.decode("utf-8", "replace"))
        if _END_OF_HEADER.match(text):
            return pos, lines
        if pos > MAX_HEADER_BYTES:
            raise FormatError(path, pos, "header longer than 16 MiB")


class Aedat2Reader(EventReader):
    """Streaming reader of jAER AEDAT 2.0 DVS events (DVS128, DAVIS240, DAVIS346).

    Args:
        path: The file.
        chunk_events: Records decoded per yielded packet (so at most that many events).
        chip: Force the address layout: ``dvs128``, ``davis240`` or ``davis346``.

    Attributes:
        header: The header lines, without line endings.
        chip: The address layout in use (``None`` for an empty file without a header hint).
        chip_source: ``"argument"``, ``"header"`` or ``"inferred from addresses"``.
        wraps: Timestamp wraps unwrapped so far.
        non_monotonic: Events whose timestamp is below the previous event's (kept).

    Raises:
        FormatError: the file cannot be opened or does not start with ``#!AER-DAT2``.
        ValueError: unknown ``chip``.
    """

    format = "aedat2"

    def __init__(
        self, path: str | Path, chunk_events: int = DEFAULT_CHUNK_EVENTS, *, chip: str | None = None
    ) -> None:
        super().__init__(path, chunk_events)
        if chip is not None and chip.lower() not in CHIP_SIZES:
            raise ValueError(f"unknown chip {chip!r}: use one of {', '.join(CHIP_SIZES)}")
        try:
            self._f: BinaryIO = open(self.path, "rb")
        except OSError as exc:
            raise FormatError(self.path, 0, f"cannot open: {exc.strerror or exc}") from None
        try:
            self._data_start, self.header = read_aedat2_header(self._f, self.path)
            size = os.fstat(self._f.fileno()).st_size
        except BaseException:
            self._f.close()
            raise
        body = size - self._data_start
        self._n_records, self._tail = divmod(body, RECORD_DTYPE.itemsize)
        self.chip: str | None
        if chip is not None:
            self.chip, self.chip_source = chip.lower(), "argument"
        elif (named := chip_from_header(self.header)) is not None:
            self.chip, self.chip_source = named, "header"
        else:
            first = self._records(0, min(self._n_records, INFER_RECORDS))
            self.chip, self.chip_source = infer_chip(first["address"]), "inferred from addresses"
        if self.chip is not None:
            self.sensor_size = CHIP_SIZES[self.chip]
            self.camera = self.chip.upper()
        for line in self.header:
            m = re.match(r"^#\s*AEChip:\s*(\S+)", line, re.IGNORECASE)
            if m:
                self.camera = m.group(1).rsplit(".", 1)[-1]  # class name without package
                break
        self.wraps = 0
        self.non_monotonic = 0
        self._index = 0  # next record
        self._offset = 0  # unwrap carry at _index
        self._prev: int | None = None
        self._last_t: int | None = None
        self._seek_t: int | None = None

    def _records(self, index: int, count: int) -> np.ndarray:
        self._f.seek(self._data_start + index * RECORD_DTYPE.itemsize)
        buf = self._f.read(count * RECORD_DTYPE.itemsize)
        if len(buf) < count * RECORD_DTYPE.itemsize:
            raise FormatError(
                self.path,
                self._data_start + index * RECORD_DTYPE.itemsize + len(buf),
                "file shrank while reading",
            )
        return np.frombuffer(buf, dtype=RECORD_DTYPE)

    def __iter__(self) -> Iterator[Events]:
        return self._iterate()

    def _iterate(self) -> Iterator[Events]:
        while self._index < self._n_records:
            k = min(self.chunk_events, self._n_records - self._index)
            rec = self._records(self._index, k)
            t, offset, prev, wraps = unwrap_timestamps(rec["timestamp"], self._offset, self._prev)
            if self.chip is None:  # only an empty file has no chip
                raise FormatError(self.path, self._data_start, "cannot tell the chip")
            ev, skipped = decode_addresses(rec["address"], t, self.chip)
            self.skipped.update(skipped)
            self.wraps += wraps
            self._index += k
            self._offset, self._prev = offset, prev
            ev = self._after_seek(ev)
            if len(ev):
                self._count_order(ev)
                yield ev
        if self._tail:
            end = self._data_start + self._n_records * RECORD_DTYPE.itemsize
            raise FormatError(
                self.path,
                end,
                f"truncated record: {self._tail} of {RECORD_DTYPE.itemsize} bytes at the end",
            )

    def seek(self, t_us: int) -> None:
        """Position at the first event with ``t >= t_us``.

        Unwrapping needs every earlier timestamp, so this scans the timestamps (not the
        addresses) from the start, a block at a time.
        """
        t_us = int(t_us)
        index, offset, prev = 0, 0, None
        block = max(self.chunk_events, 1 << 20)
        while index < self._n_records:
            k = min(block, self._n_records - index)
            raw = self._records(index, k)["timestamp"]
            t, new_offset, new_prev, _ = unwrap_timestamps(raw, offset, prev)
            hit = np.flatnonzero(t >= t_us)
            if hit.size:
                j = int(hit[0])
                if j:
                    _, offset, prev, _ = unwrap_timestamps(raw[:j], offset, prev)
                index += j
                break
            index, offset, prev = index + k, new_offset, new_prev
        self._index, self._offset, self._prev = index, offset, prev
        self._seek_t = t_us
        self._last_t = None

    def close(self) -> None:
        self._f.close()
