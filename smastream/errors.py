"""Errors that the command line reports as one line, without a traceback.

Anything expected to go wrong with a user's input (a bad file, a missing camera, a bad
option) raises a :class:`SmastreamError`; ``smastream.cli.main`` prints its message on one
line and exits non-zero. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from pathlib import Path


class SmastreamError(Exception):
    """Base of every error the CLI reports as a single line."""


class FormatError(SmastreamError):
    """A file is corrupt, truncated or not in the format it claims.

    Args:
        path: The file.
        offset: Byte offset in the file where the problem was found.
        cause: What was wrong, in a few words.
    """

    def __init__(self, path: str | Path, offset: int, cause: str) -> None:
        self.path = str(path)
        self.offset = int(offset)
        self.cause = cause
        super().__init__(f"{self.path}: at byte {self.offset}: {cause}")

    def __reduce__(self) -> tuple[type[FormatError], tuple[str, int, str]]:
        # Pickled as its arguments: it crosses process boundaries (parallel preparation).
        return (type(self), (self.path, self.offset, self.cause))


class DependencyError(SmastreamError):
    """An optional dependency is missing; the message says what to install."""
