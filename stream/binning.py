"""Events to frames: fixed-edge time bins, the sliding-window :class:`Binner`, equal-count frames.

The one binning function, :func:`bin_events`, is used by training and by the live path, so
frames never differ between the two (no train/serve skew).

Frames
    ``float32`` raw event counts, shape ``[T, 2, H, W]``. Channel 0 counts OFF events
    (``p == 0``), channel 1 ON events (``p != 0``): the same order as tonic's ``ToFrame``
    (which indexes the channel by ``p``) and spikingjelly's ``integrate_events_*``.

Time
    Bin ``k`` holds ``t0 + k*bin_us <= t < t0 + (k+1)*bin_us``. Edges come from ``t0`` and
    ``bin_us`` only, never from a chunk's first or last event, so cutting a stream into
    packets anywhere does not change the frames.

Space (:func:`frame_geometry`)
    The sensor ``(W, H)`` is optionally cropped to ``(x0, y0, w, h)``, then either
    sum-pooled by an integer ``downsample`` factor (output ``ceil(w/f) x ceil(h/f)``: the
    last column/row of blocks may be partial) or resized to an arbitrary ``output_size``
    by *centre mapping*: crop pixel ``u`` goes to output pixel
    ``floor((u + 0.5) * W_out / w)``, the output pixel that contains its centre. Every
    sensor pixel maps to exactly one output pixel, so both modes conserve event counts
    exactly and frames stay integer counts (area weighting would split events into
    fractions). Where ``w`` is a multiple of ``W_out`` the two modes agree.

Nothing is dropped silently: events outside the time range, outside the sensor, or
outside the crop are counted in a :class:`BinCounts` the caller passes in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numba import njit

from smastream.stream.events import EVENT_DTYPE, Events, as_events
from smastream.stream.events import sensor_size as resolve_size

__all__ = [
    "CHANNEL_OFF",
    "CHANNEL_ON",
    "BinCounts",
    "Binner",
    "BinnerStats",
    "FrameGeometry",
    "Window",
    "bin_events",
    "equal_count_bounds",
    "equal_count_frames",
    "frame_geometry",
]

CHANNEL_OFF = 0
"""Frame channel of OFF events (``p == 0``)."""
CHANNEL_ON = 1
"""Frame channel of ON events (``p != 0``)."""

Frames = npt.NDArray[np.float32]
"""``float32`` array ``[T, 2, H, W]`` of event counts."""

# Lookup-table sentinels: a sensor coordinate maps to an offset into one polarity plane,
# or to one of these. Their sum with any valid offset stays negative, and an out-of-sensor
# coordinate dominates a cropped one, so one comparison classifies an event.
_OUTSIDE = -(1 << 50)
_CROPPED = -(1 << 40)
_LUT_LEN = 1 << 16  # every uint16 coordinate has an entry: no bounds check in the kernel


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _bin_time_kernel(ev, t0, bin_us, n_bins, x_lut, y_lut, plane, out, bin_counts):
    """Scatter-add ``ev`` into ``out`` (flat ``[n_bins, 2, plane]``) by time bin.

    Returns ``(before, after, outside, cropped)``; ``bin_counts[k]`` gains the events
    binned into bin ``k``. Sorted input takes the fast path (no division per event);
    unsorted input is still binned correctly.
    """
    before = 0
    after = 0
    outside = 0
    cropped = 0
    t_end = t0 + n_bins * bin_us
    b = -1
    b_lo = t0
    b_hi = t0  # empty interval: the first event computes its bin
    base = 0
    run = 0
    plane2 = 2 * plane
    for i in range(ev.shape[0]):
        e = ev[i]
        t = e.t
        if t < b_lo or t >= b_hi:
            if t < t0:
                before += 1
                continue
            if t >= t_end:
                after += 1
                continue
            if b >= 0:
                bin_counts[b] += run
            run = 0
            b = (t - t0) // bin_us
            b_lo = t0 + b * bin_us
            b_hi = b_lo + bin_us
            base = b * plane2
        s = y_lut[e.y] + x_lut[e.x]
        if s < 0:
            if s < -(1 << 49):
                outside += 1
            else:
                cropped += 1
            continue
        if e.p:
            s += plane
        out[base + s] += np.float32(1.0)
        run += 1
    if b >= 0:
        bin_counts[b] += run
    return before, after, outside, cropped


@njit(cache=True, nogil=True)
def _bin_index_kernel(ev, bounds, x_lut, y_lut, plane, out):
    """Scatter-add ``ev[bounds[k]:bounds[k+1]]`` into frame ``k`` of ``out`` (flat).

    Returns ``(outside, cropped)``.
    """
    outside = 0
    cropped = 0
    plane2 = 2 * plane
    for k in range(bounds.shape[0] - 1):
        base = k * plane2
        for i in range(bounds[k], bounds[k + 1]):
            e = ev[i]
            s = y_lut[e.y] + x_lut[e.x]
            if s < 0:
                if s < -(1 << 49):
                    outside += 1
                else:
                    cropped += 1
                continue
            if e.p:
                s += plane
            out[base + s] += np.float32(1.0)
    return outside, cropped


@njit(cache=True, nogil=True)
def _fill_window(ev, lo, t0, bin_us, n_bins, x_lut, y_lut, plane, out, bin_counts):
    """Bin ``ev[lo:cut]`` into one window starting at ``t0``, where ``cut`` is the first
    index at or after ``lo`` with ``t >= t0 + n_bins*bin_us`` (binary search: ``ev`` is
    sorted). One dispatch per window for the streaming :class:`Binner`.

    Returns ``(cut, t[cut] or 0, before, after, outside, cropped)``.
    """
    t_end = t0 + n_bins * bin_us
    hi = ev.shape[0]
    cut_lo = lo
    while cut_lo < hi:
        mid = (cut_lo + hi) // 2
        if ev[mid].t < t_end:
            cut_lo = mid + 1
        else:
            hi = mid
    cut = cut_lo
    before, after, outside, cropped = _bin_time_kernel(
        ev[lo:cut], t0, bin_us, n_bins, x_lut, y_lut, plane, out, bin_counts
    )
    t_cut = ev[cut].t if cut < ev.shape[0] else 0
    return cut, t_cut, before, after, outside, cropped


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class FrameGeometry:
    """How sensor pixels map to frame pixels (build with :func:`frame_geometry`).

    Attributes:
        sensor_size: ``(W, H)`` of the sensor.
        crop: ``(x0, y0, w, h)`` region of the sensor that is kept.
        output_size: ``(W_out, H_out)`` of the frames.
        mode: ``"downsample"`` (integer sum-pooling, factor 1 = none) or ``"resize"``
            (centre mapping).
        factor: The integer factor in ``"downsample"`` mode, else 0.
        x_lut: ``int64[65536]``: sensor column -> output column, or a negative sentinel.
        y_lut: ``int64[65536]``: sensor row -> output row times ``W_out``, or a sentinel.
    """

    sensor_size: tuple[int, int]
    crop: tuple[int, int, int, int]
    output_size: tuple[int, int]
    mode: str
    factor: int
    x_lut: npt.NDArray[np.int64] = field(repr=False, compare=False)
    y_lut: npt.NDArray[np.int64] = field(repr=False, compare=False)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(2, H_out, W_out)``: the shape of one frame."""
        return 2, self.output_size[1], self.output_size[0]

    @property
    def plane(self) -> int:
        """Pixels in one polarity plane, ``H_out * W_out``."""
        return self.output_size[0] * self.output_size[1]


def _axis_lut(n_sensor: int, start: int, length: int, n_out: int, factor: int) -> np.ndarray:
    lut = np.full(_LUT_LEN, _OUTSIDE, dtype=np.int64)
    lut[:n_sensor] = _CROPPED
    u = np.arange(length, dtype=np.int64)
    lut[start : start + length] = u // factor if factor else (2 * u + 1) * n_out // (2 * length)
    return lut


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _pair(name: str, value: object) -> tuple[int, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be (width, height), got {value!r}")
    return _check_int(f"{name} width", value[0], 1), _check_int(f"{name} height", value[1], 1)


@functools.lru_cache(maxsize=32)
def _geometry(
    size: tuple[int, int],
    crop: tuple[int, int, int, int] | None,
    downsample: int,
    output_size: tuple[int, int] | None,
) -> FrameGeometry:
    w_s, h_s = size
    if crop is None:
        crop = (0, 0, w_s, h_s)
    if len(crop) != 4:
        raise ValueError(f"crop must be (x0, y0, width, height), got {crop!r}")
    x0, y0 = (_check_int(n, v, 0) for n, v in zip(("crop x0", "crop y0"), crop[:2], strict=True))
    cw, ch = (_check_int(n, v, 1) for n, v in zip(("crop w", "crop h"), crop[2:], strict=True))
    if x0 + cw > w_s or y0 + ch > h_s:
        raise ValueError(
            f"crop {crop!r} reaches past the {w_s}x{h_s} sensor: "
            f"need x0 + width <= {w_s} and y0 + height <= {h_s}"
        )
    factor = _check_int("downsample", downsample, 1)
    if output_size is not None and factor != 1:
        raise ValueError(
            f"give either downsample (got {downsample!r}) or output_size "
            f"(got {output_size!r}), not both"
        )
    if output_size is None:
        mode = "downsample"
        out_w, out_h = -(-cw // factor), -(-ch // factor)
    else:
        mode, factor = "resize", 0
        out_w, out_h = _pair("output_size", output_size)
    x_lut = _axis_lut(w_s, x0, cw, out_w, factor)
    y_lut = _axis_lut(h_s, y0, ch, out_h, factor)
    valid = y_lut >= 0
    y_lut[valid] *= out_w
    x_lut.setflags(write=False)
    y_lut.setflags(write=False)
    return FrameGeometry((w_s, h_s), (x0, y0, cw, ch), (out_w, out_h), mode, factor, x_lut, y_lut)


def frame_geometry(
    sensor_size: str | tuple[int, int],
    *,
    crop: tuple[int, int, int, int] | None = None,
    downsample: int = 1,
    output_size: tuple[int, int] | None = None,
) -> FrameGeometry:
    """Build (and cache) the pixel mapping from a sensor to the frames.

    Args:
        sensor_size: ``(W, H)``, a ``"WxH"`` string, or a sensor name such as ``davis346``.
        crop: ``(x0, y0, width, height)`` region to keep; ``None`` keeps the whole sensor.
        downsample: Integer sum-pooling factor applied after the crop (1 = none). The
            output is ``ceil(width / downsample) x ceil(height / downsample)``.
        output_size: ``(W_out, H_out)``: resize the crop to this size by centre mapping
            instead. Give either this or ``downsample``, not both.

    Raises:
        ValueError: a bad size, a crop outside the sensor, or both resize options.
    """
    size = resolve_size(tuple(sensor_size) if isinstance(sensor_size, list) else sensor_size)
    crop_t = None if crop is None else tuple(crop)
    out_t = None if output_size is None else tuple(output_size)
    if crop_t is not None and len(crop_t) != 4:
        raise ValueError(f"crop must be (x0, y0, width, height), got {crop!r}")
    if out_t is not None and len(out_t) != 2:
        raise ValueError(f"output_size must be (width, height), got {output_size!r}")
    return _geometry(size, crop_t, downsample, out_t)


# --------------------------------------------------------------------------- pure functions


@dataclass
class BinCounts:
    """What a binning call did with each event; pass one in to have it added to.

    ``binned + before + after + outside_sensor + cropped`` is the number of events seen.

    Attributes:
        binned: Events counted in a frame.
        before: Events earlier than the first bin edge.
        after: Events at or after the last bin edge.
        outside_sensor: Events with ``x >= W`` or ``y >= H`` of the sensor.
        cropped: Events on the sensor but outside the crop.
    """

    binned: int = 0
    before: int = 0
    after: int = 0
    outside_sensor: int = 0
    cropped: int = 0

    @property
    def total(self) -> int:
        """All events seen."""
        return self.binned + self.before + self.after + self.outside_sensor + self.cropped


def _as_kernel_events(events: np.ndarray) -> Events:
    """Events as a contiguous 1-D :data:`EVENT_DTYPE` array (copied only when needed)."""
    if (
        type(events) is np.ndarray
        and events.dtype is EVENT_DTYPE
        and events.ndim == 1
        and events.flags.c_contiguous
    ):
        return events  # the live path's packets: no structured-dtype comparison per packet
    if not isinstance(events, np.ndarray):
        raise TypeError(f"events must be a numpy structured array, got {type(events).__name__}")
    if events.ndim != 1:
        raise ValueError(f"events must be 1-D, got shape {events.shape}")
    ev = as_events(events)
    return np.ascontiguousarray(ev)


def _check_out(out: np.ndarray, shape: tuple[int, ...]) -> None:
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a float32 array of shape {shape}, got {got}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")


def bin_events(
    events: np.ndarray,
    t0_us: int,
    bin_us: int,
    n_bins: int,
    sensor_size: str | tuple[int, int],
    *,
    crop: tuple[int, int, int, int] | None = None,
    downsample: int = 1,
    output_size: tuple[int, int] | None = None,
    out: Frames | None = None,
    counts: BinCounts | None = None,
) -> Frames:
    """Count events into fixed-edge time bins and 2 polarity channels.

    Event ``e`` lands in bin ``(e.t - t0_us) // bin_us`` when
    ``t0_us <= e.t < t0_us + n_bins * bin_us``, channel ``0`` (OFF) if ``e.p == 0`` else
    ``1`` (ON), at its pixel mapped by :func:`frame_geometry`. Events need not be sorted
    (sorted input is faster). The input array is never modified.

    Args:
        events: 1-D event array (:data:`~smastream.stream.events.EVENT_DTYPE`, or any
            structured array with fields t, x, y, p, which is converted).
        t0_us: First bin edge, µs.
        bin_us: Bin width, µs (> 0).
        n_bins: Number of bins ``T`` (>= 0).
        sensor_size: ``(W, H)`` of the sensor, or a sensor name.
        crop: ``(x0, y0, width, height)``, see :func:`frame_geometry`.
        downsample: Integer sum-pooling factor, see :func:`frame_geometry`.
        output_size: ``(W_out, H_out)`` centre-mapping resize, see :func:`frame_geometry`.
        out: Optional float32 C-contiguous ``[T, 2, H_out, W_out]`` array; counts are
            *added* to it (it is not zeroed) and it is returned.
        counts: Optional :class:`BinCounts`; what happened to every event is added to it.

    Returns:
        ``float32 [T, 2, H_out, W_out]`` event counts.

    Raises:
        ValueError: bad ``bin_us``/``n_bins``/geometry/``out``, quoting the value.
        TypeError: ``events`` is not a structured array with fields t, x, y, p.
    """
    bin_us = _check_int("bin_us", bin_us, 1)
    n_bins = _check_int("n_bins", n_bins, 0)
    t0 = _check_int("t0_us", t0_us, -(1 << 62))
    geom = frame_geometry(sensor_size, crop=crop, downsample=downsample, output_size=output_size)
    shape = (n_bins, *geom.frame_shape)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        _check_out(out, shape)
    ev = _as_kernel_events(events)
    bin_counts = np.zeros(max(n_bins, 1), dtype=np.int64)
    result = _bin_time_kernel(
        ev,
        np.int64(t0),
        np.int64(bin_us),
        np.int64(n_bins),
        geom.x_lut,
        geom.y_lut,
        np.int64(geom.plane),
        out.reshape(-1),
        bin_counts,
    )
    if counts is not None:
        before, after, outside, cropped = (int(v) for v in result)
        counts.binned += int(bin_counts.sum())
        counts.before += before
        counts.after += after
        counts.outside_sensor += outside
        counts.cropped += cropped
    return out


def equal_count_bounds(n_events: int, n_frames: int) -> npt.NDArray[np.int64]:
    """Event-index boundaries of ``n_frames`` consecutive equal-count chunks.

    spikingjelly's ``cal_fixed_frames_number_segment_index(split_by="number")`` rule:
    with ``d = n_events // n_frames``, frame ``j`` holds events ``[j*d, (j+1)*d)`` and the
    last frame also takes the remainder, ``[(T-1)*d, n_events)``. With fewer events than
    frames, ``d = 0``: every frame is empty except the last, which holds all events.

    Returns:
        ``int64[n_frames + 1]``: frame ``j`` is ``events[bounds[j]:bounds[j+1]]``.
    """
    n_events = _check_int("n_events", n_events, 0)
    n_frames = _check_int("n_frames", n_frames, 1)
    d = n_events // n_frames
    bounds = np.arange(n_frames + 1, dtype=np.int64) * d
    bounds[-1] = n_events
    return bounds


def equal_count_frames(
    events: np.ndarray,
    n_frames: int,
    sensor_size: str | tuple[int, int],
    *,
    crop: tuple[int, int, int, int] | None = None,
    downsample: int = 1,
    output_size: tuple[int, int] | None = None,
    counts: BinCounts | None = None,
) -> Frames:
    """The paper's offline protocol: ``T`` frames of (nearly) equal event count for a clip.

    Events are split in their array order (a clip is sorted by time) by
    :func:`equal_count_bounds`, spikingjelly's ``integrate_events_by_fixed_frames_number``
    rule; pixels map as in :func:`bin_events` (same channels, crop, downsample/resize).

    Args:
        events: 1-D event array of one clip.
        n_frames: ``T`` (>= 1).
        sensor_size, crop, downsample, output_size: as in :func:`bin_events`.
        counts: Optional :class:`BinCounts`; ``binned``, ``outside_sensor``, ``cropped``
            are added to (time is not a criterion here).

    Returns:
        ``float32 [T, 2, H_out, W_out]`` event counts.
    """
    n_frames = _check_int("n_frames", n_frames, 1)
    geom = frame_geometry(sensor_size, crop=crop, downsample=downsample, output_size=output_size)
    ev = _as_kernel_events(events)
    bounds = equal_count_bounds(ev.shape[0], n_frames)
    out = np.zeros((n_frames, *geom.frame_shape), dtype=np.float32)
    outside, cropped = _bin_index_kernel(
        ev, bounds, geom.x_lut, geom.y_lut, np.int64(geom.plane), out.reshape(-1)
    )
    if counts is not None:
        counts.binned += ev.shape[0] - int(outside) - int(cropped)
        counts.outside_sensor += int(outside)
        counts.cropped += int(cropped)
    return out


# --------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class Window:
    """``steps_per_window`` consecutive bins, handed on as one array.

    Attributes:
        t_start_us: The window's first bin edge, µs (sensor time).
        bin_us: Bin width, µs.
        frames: ``float32 [S, 2, H, W]`` event counts (channel 0 OFF, 1 ON).
        n_events: Events counted in ``frames``.
        skipped_before: Windows skipped just before this one because a gap exceeded
            ``max_gap_windows`` (0 normally): a discontinuity, reset state on it.
    """

    t_start_us: int
    bin_us: int
    frames: Frames
    n_events: int
    skipped_before: int = 0

    @property
    def n_bins(self) -> int:
        """``S``, the number of bins."""
        return int(self.frames.shape[0])

    @property
    def t_end_us(self) -> int:
        """The window's end edge (exclusive), µs: when it could first be complete."""
        return self.t_start_us + self.n_bins * self.bin_us


@dataclass
class BinnerStats:
    """Running counters of a :class:`Binner` (nothing is dropped without a count).

    Attributes:
        windows: Windows emitted.
        empty_windows: Emitted windows with no event (gaps, wall-clock flushes).
        skipped_windows: Windows not emitted because a gap exceeded ``max_gap_windows``.
        binned: Events counted into frames.
        late: Events older than the window being filled (arrived after it moved on).
        out_of_order: Events ahead of the window being filled that came before an earlier
            event in the same packet (unsorted packet); dropped.
        outside_sensor: Events with coordinates outside the sensor.
        cropped: Events outside the crop.
        discarded: Events in an unfinished window thrown away by :meth:`Binner.reset`.
    """

    windows: int = 0
    empty_windows: int = 0
    skipped_windows: int = 0
    binned: int = 0
    late: int = 0
    out_of_order: int = 0
    outside_sensor: int = 0
    cropped: int = 0
    discarded: int = 0


class Binner:
    """Sliding-window binner: packets in, complete non-overlapping windows out.

    Window ``k`` covers ``[t0 + k*S*bin_us, t0 + (k+1)*S*bin_us)``, split into ``S`` bins
    exactly as :func:`bin_events` would bin the whole stream, whatever the packet
    boundaries. Only the unfinished window is kept (an ``[S, 2, H, W]`` array that
    packets are added into) plus its start edge: memory is O(1) in the stream length.

    Time is sensor time (µs). With ``t0_us=None`` the first edge is the first event's
    ``t`` rounded down to a multiple of ``bin_us`` (or, if :meth:`flush` comes first,
    ``now_us`` rounded down the same way). Windows are then aligned to multiples of
    ``bin_us``, not of the window length.

    Packets must be sorted by ``t`` (as every source delivers them). Events older than
    the unfinished window are counted as ``late`` and dropped; gaps produce empty
    windows; :meth:`flush` completes windows on a wall-clock tick when the sensor is
    silent. A gap longer than ``max_gap_windows`` windows is skipped instead of being
    filled with empty windows (counted in ``skipped_windows`` and flagged on the next
    window's ``skipped_before``), so a clock jump cannot allocate without bound.

    Args:
        t0_us: First bin edge, µs, or ``None`` to take it from the first event.
        bin_us: Bin width, µs.
        steps_per_window: ``S``, bins per window.
        sensor_size: ``(W, H)``, ``"WxH"`` or a sensor name.
        crop, downsample, output_size: spatial mapping, see :func:`frame_geometry`.
        max_gap_windows: Largest gap, in windows, filled with empty windows; ``None``
            fills every gap.

    Example::

        b = Binner(None, 10_000, 4, "dvs128", downsample=2)
        windows = b.push(packet)            # list[Window], maybe empty
        windows += b.flush(now_sensor_us)   # silent sensor: time still moves on
    """

    def __init__(
        self,
        t0_us: int | None,
        bin_us: int,
        steps_per_window: int,
        sensor_size: str | tuple[int, int],
        *,
        crop: tuple[int, int, int, int] | None = None,
        downsample: int = 1,
        output_size: tuple[int, int] | None = None,
        max_gap_windows: int | None = 256,
    ) -> None:
        self.bin_us = _check_int("bin_us", bin_us, 1)
        self.steps_per_window = _check_int("steps_per_window", steps_per_window, 1)
        self.geometry = frame_geometry(
            sensor_size, crop=crop, downsample=downsample, output_size=output_size
        )
        self.max_gap_windows = (
            None if max_gap_windows is None else _check_int("max_gap_windows", max_gap_windows, 0)
        )
        self.stats = BinnerStats()
        self._start: int | None = None if t0_us is None else _check_int("t0_us", t0_us, -(1 << 62))
        self._frames = self._zeros()
        self._bin_counts = np.zeros(self.steps_per_window, dtype=np.int64)
        self._skipped = 0

    @property
    def window_us(self) -> int:
        """Window length ``S * bin_us``, µs."""
        return self.steps_per_window * self.bin_us

    @property
    def window_shape(self) -> tuple[int, int, int, int]:
        """``(S, 2, H, W)``."""
        return (self.steps_per_window, *self.geometry.frame_shape)

    @property
    def next_window_start_us(self) -> int | None:
        """Start edge of the unfinished window (``None`` before the first event/flush)."""
        return self._start

    @property
    def pending_events(self) -> int:
        """Events already counted into the unfinished window."""
        return int(self._bin_counts.sum())

    def _zeros(self) -> Frames:
        return np.zeros(self.window_shape, dtype=np.float32)

    def _emit(self) -> Window:
        assert self._start is not None
        n = int(self._bin_counts.sum())
        win = Window(self._start, self.bin_us, self._frames, n, self._skipped)
        self.stats.windows += 1
        self.stats.empty_windows += int(n == 0)
        self._start += self.window_us
        self._frames = self._zeros()
        self._bin_counts = np.zeros(self.steps_per_window, dtype=np.int64)
        self._skipped = 0
        return win

    def _advance(self, n_windows: int, out: list[Window]) -> None:
        """Move past ``n_windows`` whole windows with no events: emit or skip them."""
        if n_windows <= 0:
            return
        if self.max_gap_windows is not None and n_windows > self.max_gap_windows:
            assert self._start is not None
            self._start += n_windows * self.window_us
            self._skipped += n_windows
            self.stats.skipped_windows += n_windows
            return
        for _ in range(n_windows):
            out.append(self._emit())

    def push(self, events: np.ndarray) -> list[Window]:
        """Add a packet; return the windows it completed (oldest first, maybe none).

        Args:
            events: 1-D event packet sorted by ``t`` (not modified).

        Returns:
            Completed :class:`Window` objects; the frames arrays are handed over (the
            binner keeps no reference to them).
        """
        ev = _as_kernel_events(events)
        n = ev.shape[0]
        out: list[Window] = []
        if n == 0:
            return out
        if self._start is None:
            self._start = int(ev[0]["t"]) // self.bin_us * self.bin_us
        geom = self.geometry
        plane = np.int64(geom.plane)
        bin_us = np.int64(self.bin_us)
        n_bins = np.int64(self.steps_per_window)
        pos = 0
        while True:
            cut, t_cut, before, after, outside, cropped = _fill_window(
                ev,
                np.int64(pos),
                np.int64(self._start),
                bin_us,
                n_bins,
                geom.x_lut,
                geom.y_lut,
                plane,
                self._frames.reshape(-1),
                self._bin_counts,
            )
            cut = int(cut)
            dropped = int(before) + int(after) + int(outside) + int(cropped)
            self.stats.binned += cut - pos - dropped
            self.stats.late += int(before)
            self.stats.out_of_order += int(after)
            self.stats.outside_sensor += int(outside)
            self.stats.cropped += int(cropped)
            if cut >= n:
                break
            pos = cut
            out.append(self._emit())
            self._advance((int(t_cut) - self._start) // self.window_us, out)
        return out

    def flush(self, now_us: int) -> list[Window]:
        """Complete every window whose end is ``<= now_us``, with or without events.

        Call it on a wall-clock tick with ``now_us`` = the sensor time that has surely
        passed (the caller maps wall clock to sensor time); events that arrive later
        with ``t`` before the new window start are counted as ``late``.

        Returns:
            The completed windows, oldest first.
        """
        now = _check_int("now_us", now_us, -(1 << 62))
        out: list[Window] = []
        if self._start is None:
            self._start = now // self.bin_us * self.bin_us
            return out
        if self._start + self.window_us > now:
            return out
        out.append(self._emit())
        self._advance((now - self._start) // self.window_us, out)
        return out

    def finish(self) -> list[Window]:
        """End of the stream: hand on the unfinished window if it holds any event (its
        later bins may be empty), so that a stream shorter than one window, or the last
        partial bin of a file, is still decided. The binner then starts afresh."""
        if self._start is None or self.pending_events == 0:
            return []
        win = self._emit()
        self._start = None
        return [win]

    def reset(self, t0_us: int | None = None) -> None:
        """Drop the unfinished window (its events count as ``discarded``) and restart at
        ``t0_us`` (``None``: from the next event or flush). Counters are kept."""
        self.stats.discarded += self.pending_events
        self._start = None if t0_us is None else _check_int("t0_us", t0_us, -(1 << 62))
        self._frames = self._zeros()
        self._bin_counts = np.zeros(self.steps_per_window, dtype=np.int64)
        self._skipped = 0
