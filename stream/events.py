"""The one event dtype used everywhere, sensor sizes, validation and packet helpers.

Events are a packed little-endian numpy structured array (13 bytes per event):

====  ========  =========================================
t     ``<i8``   timestamp, integer microseconds
x     ``<u2``   column, 0 .. width-1 (0 = left)
y     ``<u2``   row, 0 .. height-1 (0 = top)
p     ``u1``    polarity, 1 = ON (brighter), 0 = OFF
====  ========  =========================================

Within a packet events are sorted by ``t``. Functions here never modify the caller's array.
Sensor sizes are ``(width, height)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
"""The event dtype: packed, little-endian, 13 bytes per event."""

Events = npt.NDArray[np.void]
"""A 1-D array of :data:`EVENT_DTYPE`."""

SENSOR_SIZES: dict[str, tuple[int, int]] = {
    "dvs128": (128, 128),
    "davis346": (346, 260),
    "dvxplorer": (640, 480),
    "dvxplorer-lite": (320, 240),
}
"""Sensor sizes ``(width, height)`` by name."""


def sensor_size(name_or_size: str | tuple[int, int]) -> tuple[int, int]:
    """Resolve a sensor name (``davis346``) or ``WxH`` string or tuple to ``(width, height)``.

    Raises:
        ValueError: unknown name or malformed size, with the valid options.
    """
    if isinstance(name_or_size, tuple):
        w, h = (int(v) for v in name_or_size)
    else:
        key = name_or_size.strip().lower().replace("_", "-")
        if key in SENSOR_SIZES:
            return SENSOR_SIZES[key]
        parts = key.split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(
                f"unknown sensor {name_or_size!r}: use one of {', '.join(SENSOR_SIZES)} "
                "or WIDTHxHEIGHT such as 346x260"
            )
        w, h = int(parts[0]), int(parts[1])
    if not (0 < w <= 65535 and 0 < h <= 65535):
        raise ValueError(f"sensor size {w}x{h} out of range: both sides must be 1..65535")
    return w, h


def empty_events(n: int = 0) -> Events:
    """A zeroed event array of length ``n``."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_events(t: npt.ArrayLike, x: npt.ArrayLike, y: npt.ArrayLike, p: npt.ArrayLike) -> Events:
    """Build an event array from four equal-length columns (copied and cast).

    Raises:
        ValueError: columns of different lengths, or values that do not fit the dtype.
    """
    cols = [np.asarray(c) for c in (t, x, y, p)]
    n = cols[0].shape[0] if cols[0].ndim else 1
    if any(c.reshape(-1).shape[0] != n for c in cols):
        raise ValueError(f"columns differ in length: {[c.size for c in cols]}")
    out = np.empty(n, dtype=EVENT_DTYPE)
    for name, col in zip("txyp", cols, strict=True):
        col = col.reshape(-1)
        if name in "xy" and col.size and (col.min() < 0 or col.max() > 65535):
            raise ValueError(f"{name} out of 0..65535: min {col.min()}, max {col.max()}")
        out[name] = col if name != "p" else (col != 0)
    return out


def as_events(array: np.ndarray) -> Events:
    """Return ``array`` as :data:`EVENT_DTYPE`, converting (copying) only when needed.

    Accepts any structured array with fields t, x, y, p (for example dv-processing's
    int16 x/y and int8 polarity, or tonic's). Polarity becomes 1 for ON, 0 for OFF.

    Raises:
        TypeError: not a structured array with those fields.
    """
    names = array.dtype.names
    missing = [f for f in "txyp" if names is None or f not in names]
    if missing:
        raise TypeError(
            f"events need fields t, x, y, p; got dtype {array.dtype} (missing {missing})"
        )
    if array.dtype == EVENT_DTYPE:
        return array
    return make_events(array["t"], array["x"], array["y"], array["p"])


@dataclass
class ValidationReport:
    """What :func:`validate_events` found; ``ok`` is True when nothing is wrong."""

    n_events: int = 0
    problems: list[str] = field(default_factory=list)
    unsorted: int = 0
    out_of_range: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"{self.n_events} events, valid"
        return f"{self.n_events} events: " + "; ".join(self.problems)


def validate_events(events: np.ndarray, size: tuple[int, int] | None = None) -> ValidationReport:
    """Check an event array and report everything wrong with it (never raises, never fixes).

    Checks: structured array with fields t, x, y, p and the exact :data:`EVENT_DTYPE`;
    1-D; timestamps non-decreasing; coordinates inside ``size = (width, height)``;
    polarity 0 or 1.
    """
    report = ValidationReport()
    if not isinstance(events, np.ndarray):
        report.problems.append(f"not a numpy array but {type(events).__name__}")
        return report
    names = events.dtype.names
    if names is None:
        report.problems.append(f"not a structured array (dtype {events.dtype})")
        return report
    missing = [f for f in "txyp" if f not in names]
    if missing:
        report.problems.append(f"missing fields {missing} (has {list(names)})")
        return report
    if events.dtype != EVENT_DTYPE:
        report.problems.append(f"dtype {events.dtype} is not {EVENT_DTYPE}")
    if events.ndim != 1:
        report.problems.append(f"shape {events.shape} is not 1-D")
        return report
    report.n_events = int(events.shape[0])
    if report.n_events == 0:
        return report
    t = events["t"]
    report.unsorted = int(np.count_nonzero(np.diff(t) < 0))
    if report.unsorted:
        report.problems.append(f"{report.unsorted} timestamps go backwards")
    if size is not None:
        w, h = size
        x = events["x"].astype(np.int64)
        y = events["y"].astype(np.int64)
        bad = (x < 0) | (x >= w) | (y < 0) | (y >= h)
        report.out_of_range = int(np.count_nonzero(bad))
        if report.out_of_range:
            report.problems.append(
                f"{report.out_of_range} events outside the {w}x{h} sensor "
                f"(x {int(x.min())}..{int(x.max())}, y {int(y.min())}..{int(y.max())})"
            )
    p = events["p"]
    bad_p = int(np.count_nonzero((p != 0) & (p != 1)))
    if bad_p:
        report.problems.append(f"{bad_p} polarities not 0 or 1")
    return report
