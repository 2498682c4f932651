"""What every event-file reader and writer provides.

A reader streams a file in bounded chunks: iterating yields event packets
(:data:`~smastream.stream.events.EVENT_DTYPE`, sorted by ``t``, at most ``chunk_events``
each), so a file of any size replays with flat memory. ``seek(t_us)`` positions the reader
so that the next packet starts with the first event at or after ``t_us``.

On damage (truncation, garbage) a reader first yields every good event before the damage,
then raises :class:`~smastream.errors.FormatError` naming the file, the byte offset and the
cause. Things it skips on purpose (other event types, invalid events, other streams) are
counted in ``skipped`` — never dropped silently.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

from smastream.errors import FormatError, SmastreamError
from smastream.stream.events import Events

DEFAULT_CHUNK_EVENTS = 1 << 18
"""Default upper bound on events per yielded packet (262,144 events, 3.4 MB)."""


def check_header_line(path: str | Path, pos: int, raw: bytes, limit: int) -> None:
    """A line of a text header (read with ``readline(limit)``) must end in a newline."""
    if not raw.endswith(b"\n"):
        cause = (
            f"header line longer than {limit >> 20} MiB"
            if len(raw) >= limit
            else "truncated header line (no line ending)"
        )
        raise FormatError(path, pos, cause)


class EventReader(abc.ABC):
    """Base class of the file readers. Use as a context manager and iterate.

    Attributes:
        path: The file.
        format: Short format name (``aedat4``, ``aedat3.1``, ``aedat2``).
        sensor_size: ``(width, height)`` when the file says it, else a best guess from the
            camera type, else ``None``.
        camera: Camera/source name from the header, if any.
        skipped: Counts of what was skipped on purpose, by reason.
    """

    format: str = ""

    def __init__(self, path: str | Path, chunk_events: int = DEFAULT_CHUNK_EVENTS) -> None:
        if chunk_events <= 0:
            raise ValueError(f"chunk_events must be positive, got {chunk_events}")
        self.path = Path(path)
        self.chunk_events = int(chunk_events)
        self.sensor_size: tuple[int, int] | None = None
        self.camera: str | None = None
        self.skipped: Counter[str] = Counter()

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Events]:
        """Yield packets from the current position to the end of the file."""

    @abc.abstractmethod
    def seek(self, t_us: int) -> None:
        """Position the reader at the first event with ``t >= t_us``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file."""

    def other_streams(self) -> dict[str, int]:
        """Non-event content of the file (stream name -> packets or samples), for ``info``."""
        return {}

    # Seek trimming and order counting of the readers that decode in numpy (one copy).
    # A reader sets ``_seek_t`` in ``seek`` (and clears ``_last_t``); ``non_monotonic``
    # counts events whose timestamp is below the previous event's (they are kept).
    _seek_t: int | None = None
    _last_t: int | None = None
    non_monotonic: int = 0

    def _after_seek(self, ev: Events) -> Events:
        """Drop the events before a pending seek target; clear the target once reached."""
        if self._seek_t is None or not len(ev):
            return ev
        hit = ev["t"] >= self._seek_t
        first = int(np.argmax(hit))
        if not hit[first]:
            return ev[:0]
        self._seek_t = None
        return ev[first:]

    def _count_order(self, ev: Events) -> None:
        """Count timestamps that go back, within ``ev`` and from the previous packet."""
        if not len(ev):
            return
        t = ev["t"]
        back = int(np.count_nonzero(t[1:] < t[:-1]))
        if self._last_t is not None and t[0] < self._last_t:
            back += 1
        self.non_monotonic += back
        self._last_t = int(t[-1])

    def __enter__(self) -> EventReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class WriteError(SmastreamError):
    """A file cannot be written (full disk, a folder, no permission): one line, naming
    the file and the operating system's reason."""

    def __init__(self, path: str | Path, cause: object) -> None:
        self.path = str(path)
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: cannot write: {self.reason}")


class EventWriter(abc.ABC):
    """Base class of the file writers: ``write(events)`` repeatedly, then ``close()``.

    Writers accept packets of any size, including empty ones, and keep every event.
    ``close()`` flushes and finalises the file; after it the file is complete and readable.
    """

    def __init__(self, path: str | Path, sensor_size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.sensor_size = sensor_size
        self.events_written = 0

    @abc.abstractmethod
    def write(self, events: Events) -> None:
        """Append sorted events (timestamps must not go back across calls)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and finalise the file."""

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
