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
        offset: Byte offset in the file where the problem was found, or ``None`` for a
            problem that has no place in the file (a checkpoint that describes no valid
            network, a model without metadata): the message then has no "at byte" part.
        cause: What was wrong, in a few words.
    """

    def __init__(self, path: str | Path, offset: int | None, cause: str) -> None:
        self.path = str(path)
        self.offset = None if offset is None else int(offset)
        self.cause = cause
        where = "" if self.offset is None else f" at byte {self.offset}:"
        super().__init__(f"{self.path}:{where} {cause}")

    def __reduce__(self) -> tuple[type[FormatError], tuple[str, int | None, str]]:
        # Pickled as its arguments: it crosses process boundaries (parallel preparation).
        return (type(self), (self.path, self.offset, self.cause))


class ConfigError(SmastreamError):
    """A bad option or configuration value (a flag, a TOML key): the message names it."""


class DependencyError(SmastreamError):
    """An optional dependency is missing; the message says what to install."""
