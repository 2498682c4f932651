"""DVS Gesture label files: ``class,startTime_usec,endTime_usec``, one gesture per row, and
the scene files of synthetic recordings: ``scene,startTime_usec,endTime_usec``, one stretch
outside the gestures per row (``idle`` or a no-gesture scene such as ``walk``).

Classes are 1..11 in the file and 0..10 in memory (:data:`smastream.gestures.CLASS_NAMES`).
A sample is the events with ``start_us <= t < end_us``. Repeated classes and overlapping
windows occur in the real dataset (user26_fluorescent, user22_led): both are kept as they
are, and :attr:`Labels.overlaps` reports every overlapping pair.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from smastream.errors import FormatError
from smastream.gestures import CLASS_NAMES, NUM_CLASSES
from smastream.stream.formats.base import WriteError

HEADER = ("class", "startTime_usec", "endTime_usec")
SCENE_HEADER = ("scene", "startTime_usec", "endTime_usec")
_SCENE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")

_INTEGER = re.compile(r"-?[0-9]+")
_INT64 = 1 << 63


@dataclass(frozen=True, order=True)
class GestureWindow:
    """One labelled gesture: class ``label`` (0..10) for ``start_us <= t < end_us``."""

    start_us: int
    end_us: int
    label: int

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.label]

    @property
    def duration_us(self) -> int:
        return self.end_us - self.start_us


@dataclass
class Labels:
    """The windows of one recording, in file order, and the overlapping pairs among them."""

    windows: list[GestureWindow] = field(default_factory=list)

    @property
    def overlaps(self) -> list[tuple[GestureWindow, GestureWindow]]:
        """Every pair of windows that share time, ordered by start."""
        ws = sorted(self.windows)
        pairs = []
        for i, a in enumerate(ws):
            for b in ws[i + 1 :]:
                if b.start_us >= a.end_us:
                    break
                pairs.append((a, b))
        return pairs

    @property
    def repeated_classes(self) -> dict[int, int]:
        """Classes that occur more than once: label -> count."""
        counts: dict[int, int] = {}
        for w in self.windows:
            counts[w.label] = counts.get(w.label, 0) + 1
        return {k: v for k, v in counts.items() if v > 1}

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[GestureWindow]:
        return iter(self.windows)


def labels_path_for(recording: str | Path) -> Path:
    """``rec.aedat4`` -> ``rec_labels.csv`` (the DVS Gesture naming)."""
    p = Path(recording)
    return p.with_name(p.stem + "_labels.csv")


def _csv_rows(p: Path, header: tuple[str, ...], what: str) -> Iterator[tuple[int, int, list[str]]]:
    """``(line number, byte offset, cells)`` of every non-empty row after ``header``.

    Raises:
        FormatError: unreadable or non-UTF-8 file, a CSV error, a wrong header, no header.
    """
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise FormatError(p, 0, f"cannot read {what} file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise FormatError(p, exc.start, f"{what} file is not UTF-8 text") from None
    offset = 0
    header_seen = False
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        row_offset = offset
        offset += len(line.encode("utf-8"))
        stripped = line.strip()
        if not stripped:
            continue
        try:
            cells = [c.strip() for c in next(csv.reader([stripped]))]
        except csv.Error as exc:
            raise FormatError(p, row_offset, f"line {lineno}: {exc}") from None
        if not header_seen:
            header_seen = True
            if tuple(cells) != header:
                raise FormatError(
                    p, row_offset, f"line {lineno}: header {cells} is not {list(header)}"
                )
            continue
        yield lineno, row_offset, cells
    if not header_seen:
        raise FormatError(p, 0, f"empty {what} file (no header)")


def _times(p: Path, row_offset: int, lineno: int, cells: list[str]) -> tuple[int, int]:
    """``(start, end)`` from a row's last two cells: 64-bit integers, end after start.
    ASCII digits only: str.isdigit() also accepts "²" (which int() refuses)."""
    start, end = (int(c) for c in cells[-2:])
    if not all(-_INT64 <= v < _INT64 for v in (start, end)):
        raise FormatError(p, row_offset, f"line {lineno}: time outside the 64-bit range: {cells}")
    if end <= start:
        raise FormatError(p, row_offset, f"line {lineno}: end {end} is not after start {start}")
    return start, end


def _write_csv(
    path: str | Path, header: tuple[str, ...], rows: Iterable[tuple[object, ...]]
) -> None:
    """Write ``header`` and ``rows`` via a temporary file, so a crash never leaves a
    half-written file under the final name."""
    p = Path(path)
    tmp = p.with_name(p.name + ".part")
    done = False
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)
        tmp.replace(p)
        done = True
    except OSError as exc:
        raise WriteError(p, exc) from None
    finally:
        if not done:
            tmp.unlink(missing_ok=True)


def read_labels(path: str | Path) -> Labels:
    """Parse a label CSV.

    Raises:
        FormatError: unreadable file, wrong header, a bad row (with its line and byte
            offset), a class outside 1..11, or an end not after its start.
    """
    p = Path(path)
    labels = Labels()
    for lineno, row_offset, cells in _csv_rows(p, HEADER, "label"):
        if len(cells) != 3 or not all(_INTEGER.fullmatch(c) for c in cells):
            raise FormatError(p, row_offset, f"line {lineno}: expected 3 integers, got {cells}")
        start, end = _times(p, row_offset, lineno, cells)
        cls = int(cells[0])
        if not 1 <= cls <= NUM_CLASSES:
            raise FormatError(p, row_offset, f"line {lineno}: class {cls} outside 1..{NUM_CLASSES}")
        labels.windows.append(GestureWindow(start, end, cls - 1))
    return labels


def write_labels(path: str | Path, windows: Iterable[GestureWindow]) -> None:
    """Write windows as a label CSV (classes written as 1..11), via a temporary file so a
    crash never leaves a half-written file under the final name."""
    rows = []
    for win in windows:
        if not 0 <= win.label < NUM_CLASSES:
            raise ValueError(f"label {win.label} outside 0..{NUM_CLASSES - 1}")
        rows.append((win.label + 1, win.start_us, win.end_us))
    _write_csv(path, HEADER, rows)


@dataclass(frozen=True)
class SceneSegment:
    """One stretch of a recording outside the gesture windows and what happens in it."""

    start_us: int
    end_us: int
    name: str  # "idle" or the name of a no-gesture scene


def scenes_path_for(recording: str | Path) -> Path:
    """``rec.aedat4`` -> ``rec_scenes.csv``."""
    p = Path(recording)
    return p.with_name(p.stem + "_scenes.csv")


def write_scenes(path: str | Path, segments: Iterable[SceneSegment]) -> None:
    """Write scene segments as ``scene,startTime_usec,endTime_usec`` (via a temporary file)."""
    _write_csv(path, SCENE_HEADER, [(seg.name, seg.start_us, seg.end_us) for seg in segments])


def read_scenes(path: str | Path) -> list[SceneSegment]:
    """Parse a scene CSV written by :func:`write_scenes`.

    Raises:
        FormatError: unreadable file, wrong header or a bad row (line and byte offset).
    """
    p = Path(path)
    out: list[SceneSegment] = []
    for lineno, row_offset, cells in _csv_rows(p, SCENE_HEADER, "scene"):
        if (
            len(cells) != 3
            or not _SCENE_NAME.fullmatch(cells[0])
            or not all(_INTEGER.fullmatch(c) for c in cells[1:])
        ):
            raise FormatError(
                p, row_offset, f"line {lineno}: expected a scene name and 2 integers, got {cells}"
            )
        start, end = _times(p, row_offset, lineno, cells)
        out.append(SceneSegment(start, end, cells[0]))
    return out
