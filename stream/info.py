"""What is in an event file: counts, time span, rates, other streams, labels, problems.

:func:`describe` streams the file through :func:`~smastream.stream.formats.open_events`
(any format a reader exists for; only the :class:`~.formats.base.EventReader` interface is
used), so memory stays flat for files of any size. The statistics are accumulated by
:class:`EventStats`, a thin shell over the pure :func:`bin_counts`.

Peak rate: events per fixed ``PEAK_BIN_US`` (10 ms) bin, bins at multiples of 10 ms of
the file's clock (``t // 10_000``), so a bin that spans two chunks is counted once. With
non-monotonic timestamps a bin that is revisited later is counted as a separate run, so
the peak is then a lower bound (and ``problems`` says the timestamps go back).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from smastream.errors import FormatError
from smastream.stream.events import Events, validate_events
from smastream.stream.formats import open_events
from smastream.stream.formats.labels import labels_path_for, read_labels

PEAK_BIN_US = 10_000
"""Bin width of the peak event rate, in µs."""

JUMP_US = 10_000_000
"""A step forward in time between two consecutive events longer than this (10 s) is
listed as a problem: no camera is silent that long (sensor noise alone gives events every
few ms), so it is a corrupted timestamp or a clock jump, and a replay skips it."""


def bin_counts(t: npt.NDArray[np.int64], bin_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal bin index ``t // bin_us`` in ``t``, in order.

    Args:
        t: Timestamps, shape ``[N]`` (sorted or not).
        bin_us: Bin width in µs (> 0).

    Returns:
        ``(bins, counts)``, both shape ``[R]``: the bin index of each run of consecutive
        events that share a bin, and the run's length (sum of counts == N).
    """
    if bin_us <= 0:
        raise ValueError(f"bin_us must be positive, got {bin_us}")
    if len(t) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    b = np.asarray(t, dtype=np.int64) // bin_us
    starts = np.concatenate(([0], np.flatnonzero(b[1:] != b[:-1]) + 1))
    counts = np.diff(np.append(starts, len(b)))
    return b[starts], counts


@dataclass
class EventStats:
    """Streaming event statistics: call :meth:`update` per chunk (explicit carry state).

    Attributes:
        n_events, n_on: Counts so far.
        t_min, t_max: Earliest and latest timestamp (µs), ``None`` before any event.
        unsorted: Timestamps lower than the previous event's (within and across chunks).
        out_of_range: Events outside ``size``, when given.
        peak_count: Most events in one ``bin_us`` bin so far (including the open bin).
        jumps: Steps forward longer than ``jump_us`` between consecutive events.
        largest_jump_us: The longest such step; ``jump_at_us`` the timestamp it lands on.
    """

    size: tuple[int, int] | None = None
    bin_us: int = PEAK_BIN_US
    n_events: int = 0
    n_on: int = 0
    t_min: int | None = None
    t_max: int | None = None
    unsorted: int = 0
    out_of_range: int = 0
    bad_polarity: int = 0
    peak_count: int = 0
    jump_us: int = JUMP_US
    jumps: int = 0
    largest_jump_us: int = 0
    jump_at_us: int | None = None
    _last_t: int | None = None
    _open_bin: int | None = None
    _open_count: int = 0

    def update(self, events: Events) -> None:
        """Add one chunk (not modified)."""
        n = len(events)
        if n == 0:
            return
        t = events["t"]
        report = validate_events(events, self.size)
        self.unsorted += report.unsorted
        self.out_of_range += report.out_of_range
        p = events["p"]
        self.bad_polarity += int(np.count_nonzero(p > 1))
        self.n_events += n
        self.n_on += int(np.count_nonzero(p))
        lo, hi = int(t.min()), int(t.max())
        self.t_min = lo if self.t_min is None else min(self.t_min, lo)
        self.t_max = hi if self.t_max is None else max(self.t_max, hi)
        if self._last_t is not None and int(t[0]) < self._last_t:
            self.unsorted += 1
        steps = np.diff(t, prepend=t[0] if self._last_t is None else self._last_t)
        big = np.flatnonzero(steps > self.jump_us)
        if big.size:
            self.jumps += int(big.size)
            i = int(big[np.argmax(steps[big])])
            if int(steps[i]) > self.largest_jump_us:
                self.largest_jump_us, self.jump_at_us = int(steps[i]), int(t[i])
        self._last_t = int(t[-1])
        bins, counts = bin_counts(t, self.bin_us)
        if self._open_bin is not None and int(bins[0]) == self._open_bin:
            counts = counts.copy()
            counts[0] += self._open_count
        self.peak_count = max(self.peak_count, int(counts.max()))
        self._open_bin, self._open_count = int(bins[-1]), int(counts[-1])

    @property
    def peak_rate_eps(self) -> float:
        """Peak rate in events/s over ``bin_us`` bins."""
        return self.peak_count * 1e6 / self.bin_us


@dataclass
class LabelsSummary:
    """The label file beside a recording (``<stem>_labels.csv``)."""

    path: str
    count: int
    classes: dict[str, int]
    repeated_classes: dict[str, int]
    overlaps: int
    start_us: int
    end_us: int
    outside_recording: int


@dataclass
class FileSummary:
    """Everything :func:`describe` found; ``to_dict()`` is JSON-ready."""

    path: str
    format: str
    sensor_size: tuple[int, int] | None
    camera: str | None
    n_events: int
    n_on: int
    n_off: int
    t_first_us: int | None
    t_last_us: int | None
    duration_s: float
    mean_rate_eps: float | None
    peak_rate_eps: float
    peak_bin_us: int
    other_streams: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    labels: LabelsSummary | None = None
    problems: list[str] = field(default_factory=list)
    damage: FormatError | None = None
    """The damage the reader stopped at (everything above is what was read before it)."""

    def to_dict(self) -> dict[str, Any]:
        damage = self.damage
        self.damage = None  # asdict() deep-copies; an exception is not data
        try:
            out = asdict(self)
        finally:
            self.damage = damage
        out["sensor_size"] = list(self.sensor_size) if self.sensor_size else None
        out["error"] = str(damage) if damage is not None else None
        return out


def summarize_labels(path: Path, t_min: int | None, t_max: int | None) -> LabelsSummary:
    """Summarise a label file; windows that share no time with ``[t_min, t_max]`` (so hold
    no events) are counted in ``outside_recording``."""
    labels = read_labels(path)
    classes: dict[str, int] = {}
    for w in labels:
        classes[w.name] = classes.get(w.name, 0) + 1
    outside = 0
    if t_min is not None and t_max is not None:
        outside = sum(1 for w in labels if w.end_us <= t_min or w.start_us > t_max)
    else:
        outside = len(labels)
    windows = labels.windows
    return LabelsSummary(
        path=str(path),
        count=len(labels),
        classes=classes,
        repeated_classes={k: v for k, v in classes.items() if v > 1},
        overlaps=len(labels.overlaps),
        start_us=min((w.start_us for w in windows), default=0),
        end_us=max((w.end_us for w in windows), default=0),
        outside_recording=outside,
    )


def describe(path: str | Path, bin_us: int = PEAK_BIN_US) -> FileSummary:
    """Stream ``path`` once and summarise it.

    A damaged file is summarised up to the damage, which is returned in ``damage`` (and
    listed first in ``problems``); the caller reports it.

    Raises:
        FormatError: unknown format or unreadable header (nothing read), or a malformed
            label file beside it.
    """
    p = Path(path)
    damage: FormatError | None = None
    with open_events(p) as reader:
        stats = EventStats(size=reader.sensor_size, bin_us=bin_us)
        other: dict[str, int] = {}
        try:
            for chunk in reader:
                stats.update(chunk)
            other = reader.other_streams()
        except FormatError as exc:
            damage = exc
        skipped = dict(reader.skipped)
        fmt, size, camera = reader.format, reader.sensor_size, reader.camera
    problems = [f"damaged at byte {damage.offset}: {damage.cause}"] if damage else []
    if stats.unsorted:
        problems.append(f"{stats.unsorted} timestamps go back in time")
    if stats.out_of_range and size is not None:
        problems.append(f"{stats.out_of_range} events outside the {size[0]}x{size[1]} sensor")
    if stats.bad_polarity:
        problems.append(f"{stats.bad_polarity} polarities not 0 or 1")
    if stats.jumps:
        problems.append(
            f"{stats.jumps} forward timestamp jump(s) over {stats.jump_us / 1e6:g} s "
            f"(largest {stats.largest_jump_us / 1e6:.3f} s, to t = {stats.jump_at_us} us)"
        )
    duration_s = (
        (stats.t_max - stats.t_min) / 1e6
        if stats.t_max is not None and stats.t_min is not None
        else 0.0
    )
    labels = None
    lp = labels_path_for(p)
    if lp.is_file():
        labels = summarize_labels(lp, stats.t_min, stats.t_max)
        if labels.outside_recording:
            problems.append(
                f"{labels.outside_recording} label windows outside the recording's time span"
                " (they hold no events)"
            )
    return FileSummary(
        path=str(p),
        format=fmt,
        sensor_size=size,
        camera=camera,
        n_events=stats.n_events,
        n_on=stats.n_on,
        n_off=stats.n_events - stats.n_on,
        t_first_us=stats.t_min,
        t_last_us=stats.t_max,
        duration_s=duration_s,
        mean_rate_eps=stats.n_events / duration_s if duration_s > 0 else None,
        peak_rate_eps=stats.peak_rate_eps,
        peak_bin_us=bin_us,
        other_streams=other,
        skipped=skipped,
        labels=labels,
        problems=problems,
        damage=damage,
    )
