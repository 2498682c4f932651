"""A JSON-lines file that never holds a half-written line (``--predictions``).

Each ``write(line)`` goes to the file in one ``os.write`` (no Python buffer to flush later
in pieces). When the disk is full or the write is short, the file is cut back to the end
of the last complete line and :class:`~.base.WriteError` names the file: a reader of the
file sees whole records only, however the run ended.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from smastream.stream.formats.base import WriteError


class JsonLinesWriter:
    """Append whole lines to ``path`` (created or truncated).

    Args:
        path: The file.

    Raises:
        WriteError: the file cannot be created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines_written = 0
        self._size = 0
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise WriteError(self.path, exc) from None

    def write(self, line: str) -> None:
        """Append ``line``, which must end with its newline, whole or not at all.

        Raises:
            ValueError: ``line`` does not end with ``"\\n"``, or the writer is closed.
            WriteError: the disk is full or the file cannot be written (the file is left
                ending with the last complete line).
        """
        if self._fd is None:
            raise ValueError(f"write to closed writer of {self.path}")
        if not line.endswith("\n"):
            raise ValueError("a JSON line must end with a newline")
        data = line.encode("utf-8")
        try:
            n = os.write(self._fd, data)
            if n != len(data):
                raise OSError(28, "No space left on device (short write)")
        except OSError as exc:
            self._cut_back()
            raise WriteError(self.path, exc) from None
        self._size += n
        self.lines_written += 1

    def _cut_back(self) -> None:
        """Drop a partial line: cut the file to its last complete line and close it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            pass  # the write error is the one reported
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the file (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
