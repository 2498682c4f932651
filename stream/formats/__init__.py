"""Event file formats, chosen by sniffing the header (never the extension).

``open_events(path)`` returns a streaming :class:`~.base.EventReader`;
``open_writer(path, sensor_size, format=...)`` a :class:`~.base.EventWriter`.

=========  =================================  ======================================
format     reader                             writer
=========  =================================  ======================================
aedat4     dv-processing (``aedat4.py``)      faery, from numpy (``aedat4.py``)
aedat3.1   own numpy code (``aedat3.py``)     own numpy code (``aedat3.py``)
aedat2     own numpy code (``aedat2.py``)     --
=========  =================================  ======================================
"""

from __future__ import annotations

from pathlib import Path

from smastream.errors import FormatError
from smastream.stream.formats.base import DEFAULT_CHUNK_EVENTS, EventReader, EventWriter

__all__ = [
    "DEFAULT_CHUNK_EVENTS",
    "EventReader",
    "EventWriter",
    "open_events",
    "open_writer",
    "sniff_format",
]

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"#!AER-DAT4.0", "aedat4"),
    (b"#!AER-DAT3.1", "aedat3.1"),
    (b"#!AER-DAT2.0", "aedat2"),
)


def sniff_format(path: str | Path) -> str:
    """Name the format of ``path`` from its first bytes.

    Raises:
        FormatError: unreadable, empty, or not a known format (lists the known ones).
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise FormatError(p, 0, f"cannot open: {exc.strerror or exc}") from None
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    if not head:
        raise FormatError(p, 0, "empty file")
    shown = head[:16].decode("ascii", "backslashreplace")
    raise FormatError(
        p, 0, f"unknown format (starts with {shown!r}); supported: AEDAT 4.0, 3.1, 2.0"
    )


def open_events(path: str | Path, chunk_events: int = DEFAULT_CHUNK_EVENTS) -> EventReader:
    """Open an event file of any supported format for streaming reads."""
    fmt = sniff_format(path)
    if fmt == "aedat4":
        from smastream.stream.formats.aedat4 import Aedat4Reader

        return Aedat4Reader(path, chunk_events)
    if fmt == "aedat3.1":
        from smastream.stream.formats.aedat3 import Aedat3Reader

        return Aedat3Reader(path, chunk_events)
    from smastream.stream.formats.aedat2 import Aedat2Reader

    return Aedat2Reader(path, chunk_events)


def open_writer(
    path: str | Path, sensor_size: tuple[int, int], format: str = "aedat4"
) -> EventWriter:
    """Open a streaming writer; ``format`` is ``aedat4`` (default) or ``aedat3.1``."""
    if format == "aedat4":
        from smastream.stream.formats.aedat4 import Aedat4Writer

        return Aedat4Writer(path, sensor_size)
    if format == "aedat3.1":
        from smastream.stream.formats.aedat3 import Aedat3Writer

        return Aedat3Writer(path, sensor_size)
    raise ValueError(f"cannot write format {format!r}: use 'aedat4' or 'aedat3.1'")
