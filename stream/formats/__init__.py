"""Event file formats, chosen by sniffing the header (never the extension).

``open_events(path)`` returns a streaming :class:`~.base.EventReader`;
``open_writer(path, sensor_size, format=...)`` a :class:`~.base.EventWriter`.

=========  =================================  ======================================
format     reader                             writer
=========  =================================  ======================================
aedat4     dv-processing (``aedat4.py``)      faery, from numpy (``aedat4.py``)
aedat3.1   own numpy code (``aedat3.py``)     own numpy code (``aedat3.py``)
aedat2     own numpy code (``aedat2.py``)     --
evt2       own numpy code (``prophesee.py``)  --
evt3       expelliarmus (``prophesee.py``)    --
dat        own numpy code (``prophesee.py``)  --
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
_SNIFF_BYTES = 4096


def sniff_format(path: str | Path) -> str:
    """Name the format of ``path`` from its first bytes.

    Raises:
        FormatError: unreadable, empty, or not a known format (lists the known ones).
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        raise FormatError(p, 0, f"cannot open: {exc.strerror or exc}") from None
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    if head.startswith(b"%"):
        from smastream.stream.formats.prophesee import prophesee_format

        found = prophesee_format(head)
        if found:
            return found
        raise FormatError(
            p,
            0,
            "'%' header without '% evt 2.0' / '% evt 3.0' / '% format EVT..' or "
            "'% Data file containing' in its first 4 KiB: not a Prophesee RAW/DAT file",
        )
    if not head:
        raise FormatError(p, 0, "empty file")
    shown = head[:16].decode("ascii", "backslashreplace")
    raise FormatError(
        p,
        0,
        f"unknown format (starts with {shown!r}); supported: AEDAT 4.0, 3.1, 2.0, "
        "Prophesee RAW EVT 2.0 / 3.0, DAT",
    )


def open_events(
    path: str | Path,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    *,
    sensor_size: tuple[int, int] | None = None,
) -> EventReader:
    """Open an event file of any supported format for streaming reads.

    ``sensor_size`` is used by the Prophesee readers (their headers may have none); the
    AEDAT readers ignore it (callers such as ``FileSource`` override it themselves).
    """
    fmt = sniff_format(path)
    if fmt in ("evt2", "evt3", "dat"):
        from smastream.stream.formats import prophesee

        cls = {"evt2": prophesee.Evt2Reader, "evt3": prophesee.Evt3Reader}.get(
            fmt, prophesee.DatReader
        )
        return cls(path, chunk_events, sensor_size=sensor_size)
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
