"""The live pipeline: source → binner → stateful engine → decisions → sinks.

Three stages run concurrently, joined by bounded queues:

1. **ingest** (thread): reads source packets (camera, file, synthetic, or a ZeroMQ
   subscription), writes them to the lossless recording if asked, bins them into windows
   and closes windows on the packets' completeness times (quiet sensors still produce
   windows).
2. **inference** (thread): runs the runtime one window at a time with its state kept,
   turns logits into decisions, writes predictions (JSON lines, ZeroMQ).
3. **display** (the calling thread): at ``display_fps`` frames per second of sensor time
   (default 30), draws the raw events of the last frame period at full sensor resolution,
   the model's crop, and the latest decision, into a window and/or a video file; handles
   keys (``q`` quit, ``r`` reset, space pause). Ingest cuts the display frames; the display
   never waits for inference (it shows the latest decision) and inference never waits for
   the display.

In *live* mode the queues drop the oldest item when full (counted: engine windows, and
separately display frames, so a slow display drops display frames, never engine steps):
a slow consumer works on fresh data and never blocks the camera. In *lossless* mode (a
replay as fast as possible) every stage waits for the next, so every window is inferred
and every display frame drawn: results are then reproducible. State (engine and decider)
is reset on request, on a source discontinuity (loop restart, camera reconnect, lost
transport packets, a skipped gap, a backward time base) and when the decider reports an
idle timeout.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from smastream.engine.runtime import Runtime
from smastream.errors import SmastreamError
from smastream.gestures import CLASS_NAMES
from smastream.stream.binning import Binner, Window
from smastream.stream.decision import Decider, Decision, DecisionConfig, stamp_decided
from smastream.stream.formats.base import EventWriter
from smastream.stream.sources import EventSource, SourcePacket

T = TypeVar("T")


def model_geometry(
    sensor_size: tuple[int, int], input_size: tuple[int, int]
) -> tuple[tuple[int, int, int, int] | None, tuple[int, int]]:
    """Map any sensor onto the model input: a centred crop to the input's aspect ratio,
    then an area resize. Returns ``(crop, output_size)`` for the binner."""
    sw, sh = sensor_size
    iw, ih = input_size
    if sw * ih == sh * iw:
        return None, (iw, ih)
    if sw * ih > sh * iw:  # sensor wider than the input: crop the sides
        cw = sh * iw // ih
        return ((sw - cw) // 2, 0, cw, sh), (iw, ih)
    ch = sw * ih // iw
    return (0, (sh - ch) // 2, sw, ch), (iw, ih)


class WindowQueue(Generic[T]):
    """A bounded queue between two stages.

    ``drop_oldest=True`` (live): a put into a full queue discards the oldest item and
    counts it in ``dropped``; the producer never waits. ``drop_oldest=False`` (lossless):
    a put waits for room. ``close()`` wakes the consumer, whose ``get`` then returns None.
    """

    def __init__(self, maxsize: int, drop_oldest: bool) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T, stop: threading.Event | None = None) -> bool:
        """Add an item; returns False if the queue was closed (or ``stop`` set) first."""
        with self._cond:
            while not self.drop_oldest and len(self._items) >= self.maxsize:
                if self._closed or (stop is not None and stop.is_set()):
                    return False
                self._cond.wait(0.05)
            if self._closed:
                return False
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout_s: float | None = None) -> T | None:
        """Next item; None when closed and empty (or on timeout)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 0.1)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """Closed and empty: no item will come any more."""
        with self._cond:
            return self._closed and not self._items


@dataclass(frozen=True)
class Reset:
    """A marker between windows: reset engine and decider state here."""

    reason: str


#: A forward gap in sensor time longer than this is skipped by the binner (counted,
#: flagged, state reset) rather than run through the model as empty bins.
MAX_GAP_US = 1_000_000
#: Events this far (or more) behind the binner's window are a new time base (a publisher
#: restart, a backward clock), not late events: binner and engine are reset.
BACKWARD_RESET_US = 1_000_000
#: Wall-time quantiles kept per window for the event -> decision percentiles.
EVENT_QUANTILES = 16


@dataclass(frozen=True, eq=False)
class EventPiece:
    """The events of one packet that fell into one window, for their wall times.

    A packet that arrived (``perf_counter``) at ``arrival`` is due at its end edge
    ``t_end_us`` (a paced replay releases it then; a camera delivers it then, plus
    transport), so its event at sensor time ``t`` happened ``(t_end_us - t) / speed``
    earlier. ``t`` is a view of the packet's timestamps (no copy): one piece per packet
    and window, not one wall time per event, on the ingest path.
    """

    t: np.ndarray
    t_end_us: int
    arrival: float


@dataclass(frozen=True)
class ClosedWindow:
    """A window and when (wall clock, ``time.perf_counter``) the ingest stage closed it.

    ``pieces`` are its events' packets (see :class:`EventPiece`) and ``speed`` the replay
    speed that maps sensor to wall time (None: as fast as possible, every event counts
    from its packet's arrival); :func:`event_wall_summary` turns them into the mean and
    :data:`EVENT_QUANTILES` quantiles of the events' wall times.
    """

    window: Window
    closed_wall: float
    bin_ms: float
    pieces: tuple[EventPiece, ...] = ()
    speed: float | None = 1.0


def _quantile_probs(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


_QUANTILE_PROBS = _quantile_probs(EVENT_QUANTILES)


def event_wall_summary(
    pieces: Sequence[EventPiece], speed: float | None
) -> tuple[float, np.ndarray] | None:
    """Mean and :data:`EVENT_QUANTILES` quantiles (linear interpolation, as
    ``np.quantile``) of the wall times of the events of ``pieces``; None without events.

    An event at ``t`` of a piece has the wall time ``arrival - (t_end_us - t) / (1e6 *
    speed)``; with ``speed`` None (as fast as possible: sensor time has no wall meaning)
    it is the piece's ``arrival``.
    """
    pieces = [p for p in pieces if len(p.t)]
    if not pieces:
        return None
    if len(pieces) == 1:
        p = pieces[0]
        walls = (
            np.full(len(p.t), p.arrival)
            if speed is None
            else p.arrival - (p.t_end_us - p.t) / (1e6 * speed)
        )
    else:
        counts = [len(p.t) for p in pieces]
        walls = np.repeat(np.array([p.arrival for p in pieces]), counts)
        if speed is not None:
            ends = np.repeat(np.array([p.t_end_us for p in pieces], dtype=np.int64), counts)
            walls -= (ends - np.concatenate([p.t for p in pieces])) / (1e6 * speed)
    mean = float(walls.mean())
    walls.sort()
    pos = _QUANTILE_PROBS * (len(walls) - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, len(walls) - 1)
    frac = pos - lo
    q = walls[lo] + (walls[hi] - walls[lo]) * frac
    return mean, q


@dataclass(frozen=True)
class DisplayFrame:
    """The raw events of one display period ``(t_end_us - period, t_end_us]`` of sensor
    time, full sensor resolution, for the display stage."""

    t_end_us: int
    events: np.ndarray


@dataclass(frozen=True)
class Result:
    """One inferred window on its way to the display."""

    window: Window
    decisions: list[Decision]
    infer_ms: float
    decide_ms: float


MAX_SAMPLES = 100_000
"""Latency samples kept per stage: the latest ones (about 2.5 h of 50 ms bins in windows of
4, or minutes of 5 ms packets), so a live run of any length has bounded memory."""

Samples = collections.deque[float]


def _samples() -> Samples:
    return collections.deque(maxlen=MAX_SAMPLES)


@dataclass
class PipelineStats:
    """Counters and latency samples of a run (milliseconds).

    Latency samples are bounded deques of the latest :data:`MAX_SAMPLES`.

    Stages: ``read`` getting a packet from the source (replay pacing left out; for a
    camera or subscription it includes waiting for data), ``bin`` binning per window,
    ``infer`` one runtime call, ``decide`` the decision layer, ``render`` one overlay
    frame. ``end_to_end`` runs from the moment the ingest stage closed a window (its last
    bin complete) to its decisions. ``event_*`` is event -> decision: per window the
    event-weighted mean latency from its events' wall times to its decisions
    (``event_mean_ms``, weight ``event_weight`` = its event count) and that latency at
    :data:`EVENT_QUANTILES` quantiles of its events (``event_q_ms``); see
    :meth:`event_latency`.
    """

    packets: int = 0
    events: int = 0
    windows: int = 0
    inferred: int = 0
    dropped_windows: int = 0
    dropped_results: int = 0
    display_frames: int = 0
    dropped_display_frames: int = 0
    incomplete_last_window: bool = False
    resets: dict[str, int] = field(default_factory=dict)
    lost_packets: int = 0
    recorded: int = 0
    read_ms: Samples = field(default_factory=_samples)
    bin_ms: Samples = field(default_factory=_samples)
    infer_ms: Samples = field(default_factory=_samples)
    decide_ms: Samples = field(default_factory=_samples)
    render_ms: Samples = field(default_factory=_samples)
    end_to_end_ms: Samples = field(default_factory=_samples)
    event_mean_ms: Samples = field(default_factory=_samples)
    event_weight: Samples = field(default_factory=_samples)
    event_q_ms: collections.deque[np.ndarray] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_SAMPLES)
    )
    wall_s: float = 0.0
    sensor_s: float = 0.0

    def count_reset(self, reason: str) -> None:
        self.resets[reason] = self.resets.get(reason, 0) + 1

    def event_latency(self) -> dict[str, float]:
        """Event -> decision latency, ms, weighted by events: ``mean``, ``p50``, ``p99``
        (NaN when no window had events)."""
        w = np.asarray(self.event_weight, dtype=np.float64)
        if not len(w) or w.sum() <= 0:
            return {"mean": float("nan"), "p50": float("nan"), "p99": float("nan")}
        mean = float(np.dot(np.asarray(self.event_mean_ms, dtype=np.float64), w) / w.sum())
        q = np.concatenate(list(self.event_q_ms))
        qw = np.repeat(w / EVENT_QUANTILES, EVENT_QUANTILES)
        order = np.argsort(q, kind="stable")
        cum = np.cumsum(qw[order])
        cum /= cum[-1]

        def at(p: float) -> float:
            return float(q[order][min(int(np.searchsorted(cum, p)), len(q) - 1)])

        return {"mean": mean, "p50": at(0.5), "p99": at(0.99)}


@dataclass
class PipelineConfig:
    """How to run the pipeline.

    Attributes:
        lossless: Wait instead of dropping (replays as fast as possible); else live.
        queue_windows: Capacity of each queue, in windows.
        decision: Decision-layer settings.
        record: Lossless recording of every source event (AEDAT 4), producer side.
        predictions: JSON-lines file of every decision.
        publish_predictions: ZeroMQ endpoint to publish decisions on (JSON, PUB).
        allow_remote: Allow a non-loopback ``publish_predictions`` endpoint.
        seconds: Stop after this much wall time.
        keep_decisions: Keep ``(t_us, label)`` of every decision in
            :attr:`Pipeline.decisions` (one small tuple per step: for scoring replays).
        display_fps: Display frames per second of sensor time, each showing the raw
            events of its period; independent of bins and inference.
    """

    lossless: bool = False
    queue_windows: int = 4
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    record: Path | None = None
    predictions: Path | None = None
    publish_predictions: str | None = None
    allow_remote: bool = False
    seconds: float | None = None
    keep_decisions: bool = False
    display_fps: float = 30.0


def concat_events(parts: Sequence[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)`` of event arrays; for :data:`EVENT_DTYPE` parts as raw
    records (np.concatenate compares structured dtypes field by field: 8x slower on the
    packets of a display frame)."""
    from smastream.stream.events import EVENT_DTYPE

    if all(p.dtype is EVENT_DTYPE for p in parts):
        raw = np.dtype((np.void, EVENT_DTYPE.itemsize))
        return np.concatenate([p.view(raw) for p in parts]).view(EVENT_DTYPE)
    return np.concatenate(parts)


def decision_record(d: Decision, window_index: int) -> dict[str, Any]:
    """One JSON-lines record of a decision."""
    return {
        "t_us": d.t_bin_end_us,
        "window": window_index,
        "label": d.label,
        "name": d.name,
        "confidence": round(float(d.confidence), 5),
        "raw_label": d.raw_label,
        "quiet": d.quiet,
        "latency_ms": None if d.latency_ms is None else round(d.latency_ms, 3),
    }


class PredictionPublisher:
    """Publishes decisions as JSON on a ZeroMQ PUB socket (topic ``pred``), never pickled."""

    def __init__(self, endpoint: str, allow_remote: bool = False) -> None:
        import zmq

        from smastream.stream.transport import check_bind_endpoint

        check_bind_endpoint(endpoint, allow_remote=allow_remote)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 200)
        self._sock.setsockopt(zmq.SNDHWM, 1000)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise SmastreamError(f"cannot bind {endpoint}: {exc}") from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def send(self, record: dict[str, Any]) -> None:
        import zmq

        try:
            self._sock.send_multipart([b"pred", json.dumps(record).encode()], zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB never blocks; a missing subscriber is not an error

    def close(self) -> None:
        self._sock.close()
        self._ctx.term()


Display = Callable[["DisplayFrame", "Pipeline"], bool]
"""Called for each display frame in the display stage; returns False to stop the pipeline."""


class Pipeline:
    """Runs a source through a runtime; see the module docstring.

    Args:
        source: Where events come from.
        runtime: The stateful engine (its ``info`` gives input size, bin and window).
        config: Run settings.
        bin_us: Override the model's bin width (the model was trained at ``info.bin_us``).
        recorder: Open writer for the lossless recording (the caller closes it).
        lost_packets: Callable returning the transport's lost-packet count (``infer``).
    """

    def __init__(
        self,
        source: EventSource,
        runtime: Runtime,
        config: PipelineConfig | None = None,
        *,
        bin_us: int | None = None,
        recorder: EventWriter | None = None,
        lost_packets: Callable[[], int] | None = None,
    ) -> None:
        self.source = source
        self.runtime = runtime
        self.config = config or PipelineConfig()
        info = runtime.info
        self.bin_us = int(bin_us or info.bin_us)
        self.steps = info.steps_per_window
        crop, out = model_geometry(source.sensor_size, info.input_size)
        self.crop = crop
        """The model's crop of the sensor ``(x, y, w, h)``, None for the whole sensor."""
        gap_windows = max(1, math.ceil(MAX_GAP_US / (self.bin_us * self.steps)))
        self.binner = Binner(
            None,
            self.bin_us,
            self.steps,
            source.sensor_size,
            crop=crop,
            output_size=out,
            max_gap_windows=gap_windows,
        )
        self._pending_pieces: list[EventPiece] = []  # the unfinished window's events
        pacer = getattr(source, "pacer", None)
        self._speed: float | None = pacer.speed if pacer is not None else 1.0
        names = list(info.class_names)
        self.decider = Decider(self.config.decision, len(names), names)
        self.recorder = recorder
        self._lost_packets = lost_packets
        self.stats = PipelineStats()
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.reset_requested = threading.Event()
        drop = not self.config.lossless
        self.windows: WindowQueue[ClosedWindow | Reset] = WindowQueue(
            self.config.queue_windows, drop
        )
        if not self.config.display_fps > 0 or not math.isfinite(self.config.display_fps):
            raise ValueError(
                f"display_fps must be a positive number, got {self.config.display_fps}"
            )
        self.frame_us = max(1, round(1e6 / self.config.display_fps))
        # live: two frames of slack, then the oldest is dropped (display frames only)
        self.display_frames: WindowQueue[DisplayFrame] = WindowQueue(
            self.config.queue_windows if self.config.lossless else 2, drop
        )
        self._display_on = False
        self._frame_edge: int | None = None
        self._frame_events: list[np.ndarray] = []
        self._warm_up()
        self.error: BaseException | None = None
        self.last_result: Result | None = None
        self.decisions: list[tuple[int, int | None]] = []
        self._fps_times: collections.deque[float] = collections.deque(maxlen=30)

    def _warm_up(self) -> None:
        """Run one empty window through the binner's kernels and the runtime (compiles,
        allocates, first-call costs) before the source starts, then reset."""
        from smastream.stream.binning import bin_events
        from smastream.stream.events import empty_events

        probe = empty_events(1)
        bin_events(probe, 0, self.bin_us, 1, self.source.sensor_size)
        copy.deepcopy(self.binner).push(probe)  # the streaming kernel's first call
        self.runtime.step(np.zeros(self.runtime.info.window_shape, dtype=np.float32))
        self.runtime.reset()

    # -- stage 1: ingest ----------------------------------------------------------------
    def _ingest(self) -> None:
        stats = self.stats
        try:
            packets: Iterator[SourcePacket] = iter(self.source.packets())
            pacer = getattr(self.source, "pacer", None)
            while not self.stop.is_set():
                while self.paused.is_set() and not self.stop.is_set():
                    time.sleep(0.02)
                t_read = time.perf_counter()
                waited = pacer.waited_s if pacer is not None else 0.0
                packet = next(packets, None)
                arrival = time.perf_counter()
                if packet is None:
                    if not self.stop.is_set():  # end of the stream: decide the last bins
                        last = self.binner.finish()
                        pieces = [tuple(self._pending_pieces)] if last else []
                        self._pending_pieces = []
                        self._emit_windows(last, pieces, arrival, arrival)
                        if self._display_on and self._frame_events:
                            assert self._frame_edge is not None
                            self._put_frame(self._frame_edge, self._frame_events)
                    break
                if pacer is not None:  # replay pacing is not reading
                    t_read += pacer.waited_s - waited
                stats.read_ms.append((time.perf_counter() - t_read) * 1e3)
                ev = packet.events
                stats.packets += 1
                stats.events += len(ev)
                if self.recorder is not None and len(ev):
                    self.recorder.write(ev)
                    stats.recorded += len(ev)
                start = self.binner.next_window_start_us
                backward = (
                    len(ev) > 0
                    and start is not None
                    and int(ev["t"][0]) <= start - max(BACKWARD_RESET_US, self.binner.window_us)
                )
                if packet.discontinuity or backward:
                    self._put_window(
                        Reset("discontinuity" if packet.discontinuity else "time base")
                    )
                    self.binner.reset()  # time restarts: the old window edge is stale
                    self._pending_pieces = []
                    self._frame_edge, self._frame_events = None, []
                t0 = time.perf_counter()
                windows = self.binner.push(ev) if len(ev) else []
                windows += self.binner.flush(packet.t_end_us)
                pieces = self._split_pieces(ev, packet.t_end_us, arrival, windows)
                self._emit_windows(windows, pieces, t0, time.perf_counter())
                if self._display_on:
                    self._cut_display_frames(ev, packet.t_end_us)
            stats.incomplete_last_window = self.binner.pending_events > 0
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
            self.stop.set()
        finally:
            self.windows.close()
            self.display_frames.close()

    def _put_frame(self, edge: int, parts: list[np.ndarray]) -> None:
        from smastream.stream.events import empty_events

        ev = concat_events(parts) if len(parts) > 1 else (parts[0] if parts else empty_events())
        self.display_frames.put(DisplayFrame(edge, ev), self.stop)
        self.stats.display_frames += 1

    def _cut_display_frames(self, ev: np.ndarray, t_end_us: int) -> None:
        """Hand on a display frame for every display period that sensor time ``t_end_us``
        has completed (a skipped gap starts the frame grid afresh)."""
        period = self.frame_us
        if self._frame_edge is None:
            first = int(ev["t"][0]) if len(ev) else t_end_us - 1
            self._frame_edge = first // period * period + period
        if len(ev):
            self._frame_events.append(ev)
        if t_end_us - self._frame_edge > MAX_GAP_US:  # a gap: the events before it only
            self._put_frame(self._frame_edge, self._frame_events)
            self._frame_events = []
            self._frame_edge = None
            return
        while t_end_us >= self._frame_edge:
            edge = self._frame_edge
            before, rest = [], []
            for part in self._frame_events:
                t = part["t"]  # sorted: most parts end before the edge, no search
                cut = len(t) if int(t[-1]) < edge else int(np.searchsorted(t, edge, side="left"))
                if cut:
                    before.append(part[:cut])
                if cut < len(part):
                    rest.append(part[cut:])
            self._frame_events = rest
            self._put_frame(edge, before)
            self._frame_edge = edge + period

    def _put_window(self, item: ClosedWindow | Reset) -> None:
        self.windows.put(item, self.stop)

    def _emit_windows(
        self,
        windows: list[Window],
        pieces: list[tuple[EventPiece, ...]],
        t0: float,
        t1: float,
    ) -> None:
        """Queue closed windows (a gap skipped before one resets state first), each with
        its events' packets (``pieces[i]`` for ``windows[i]``)."""
        for i, w in enumerate(windows):
            if w.skipped_before:
                self._put_window(Reset("gap"))
            own = pieces[i] if i < len(pieces) else ()
            self._put_window(ClosedWindow(w, t1, (t1 - t0) * 1e3 / len(windows), own, self._speed))
            self.stats.windows += 1

    def _split_pieces(
        self, ev: np.ndarray, t_end_us: int, arrival: float, windows: list[Window]
    ) -> list[tuple[EventPiece, ...]]:
        """The event pieces of each window the packet closed (in order): the unfinished
        window's earlier packets and this packet's events before the window's end; the
        rest waits for the unfinished window. One view per packet and window: no wall
        time per event here (see :func:`event_wall_summary`)."""
        t = ev["t"]
        if not windows:
            if len(t):
                self._pending_pieces.append(EventPiece(t, t_end_us, arrival))
            return []
        out: list[tuple[EventPiece, ...]] = []
        pos = 0
        for w in windows:
            cut = (
                len(t)
                if not len(t) or int(t[-1]) < w.t_end_us
                else int(np.searchsorted(t, w.t_end_us, side="left"))
            )
            if cut > pos:
                self._pending_pieces.append(EventPiece(t[pos:cut], t_end_us, arrival))
            out.append(tuple(self._pending_pieces))
            self._pending_pieces = []
            pos = max(pos, cut)
        if pos < len(t):
            self._pending_pieces.append(EventPiece(t[pos:], t_end_us, arrival))
        return out

    # -- stage 2: inference -------------------------------------------------------------
    def _reset_state(self, reason: str) -> None:
        self.runtime.reset()
        self.decider.reset()
        self.stats.count_reset(reason)

    def _infer(self) -> None:
        stats = self.stats
        lost_seen = 0
        publisher: PredictionPublisher | None = None
        out: Any = None  # a JsonLinesWriter
        index = 0
        try:
            if self.config.publish_predictions:
                publisher = PredictionPublisher(
                    self.config.publish_predictions, self.config.allow_remote
                )
            if self.config.predictions is not None:
                from smastream.stream.formats.jsonl import JsonLinesWriter

                out = JsonLinesWriter(self.config.predictions)  # never a half-written line
            while True:
                item = self.windows.get()
                if item is None:
                    break
                if isinstance(item, Reset):
                    self._reset_state(item.reason)
                    continue
                if self.reset_requested.is_set():
                    self.reset_requested.clear()
                    self._reset_state("request")
                if self._lost_packets is not None:
                    lost = self._lost_packets()
                    if lost > lost_seen:
                        stats.lost_packets = lost
                        lost_seen = lost
                        self._reset_state("lost packets")
                w = item.window
                t0 = time.perf_counter()
                logits = self.runtime.step(w.frames)
                t1 = time.perf_counter()
                decisions = self.decider.decide_window(
                    logits, w.frames, w.t_start_us, w.bin_us, item.closed_wall
                )
                t2 = time.perf_counter()
                decisions = stamp_decided(decisions, t2)
                stats.bin_ms.append(item.bin_ms)
                stats.infer_ms.append((t1 - t0) * 1e3)
                stats.decide_ms.append((t2 - t1) * 1e3)
                stats.end_to_end_ms.append((t2 - item.closed_wall) * 1e3)
                stats.inferred += 1
                if any(d.reset_state for d in decisions):
                    self.runtime.reset()
                    stats.count_reset("idle")
                if self.config.keep_decisions:
                    self.decisions.extend((d.t_bin_end_us, d.label) for d in decisions)
                for d in decisions:
                    rec = decision_record(d, index)
                    if out is not None:
                        out.write(json.dumps(rec) + "\n")
                    if publisher is not None:
                        publisher.send(rec)
                index += 1
                # the latest result, for the display: never waits, never drops an engine step
                self.last_result = Result(w, decisions, (t1 - t0) * 1e3, (t2 - t1) * 1e3)
                # the events' wall times last: they cost the decision no latency
                walls = event_wall_summary(item.pieces, item.speed)
                if walls is not None:
                    stats.event_mean_ms.append((t2 - walls[0]) * 1e3)
                    stats.event_weight.append(float(w.n_events))
                    stats.event_q_ms.append((t2 - walls[1]) * 1e3)
        except BaseException as exc:
            self.error = exc
            self.stop.set()
        finally:
            if out is not None:
                out.close()
            if publisher is not None:
                publisher.close()

    # -- stage 3: display (caller's thread) ---------------------------------------------
    def overlay_stats(self) -> Any:
        """The numbers the overlay shows, from the latest samples."""
        from smastream.stream.overlay import OverlayStats

        s = self.stats

        def last(xs: Samples) -> float:
            return float(np.mean([xs[i] for i in range(-min(10, len(xs)), 0)])) if xs else 0.0

        times = self._fps_times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        stage_ms = {
            "read": last(s.read_ms),
            "bin": last(s.bin_ms),
            "infer": last(s.infer_ms),
            "decide": last(s.decide_ms),
            "render": last(s.render_ms),
        }
        return OverlayStats(
            fps=fps,
            stage_ms=stage_ms,
            dropped_windows=self.windows.dropped,
            dropped_frames=self.display_frames.dropped,
            lost_packets=s.lost_packets,
            paused=self.paused.is_set(),
            source=self.source.name,
        )

    def run(self, display: Display | None = None) -> PipelineStats:
        """Run to the end of the source (or ``seconds``, or a display's stop); returns stats.

        Raises what a stage raised (after stopping the others), e.g. a
        :class:`~smastream.errors.FormatError` from a damaged file.
        """
        start = time.perf_counter()
        threads = [
            _Stage(self._ingest, name="ingest"),
            _Stage(self._infer, name="infer"),
        ]
        self._display_on = display is not None
        frames_done = display is None
        try:
            # started inside the try: a signal while start() waits for a thread must still
            # stop and wait for the ones already running (else they outlive main, inside
            # the runtime's C++ code, and the interpreter's exit aborts the process)
            for t in threads:
                t.start()
            while True:
                if frames_done:  # no display, or every frame shown: wait for the engine
                    if threads[1].done.wait(timeout=0.05):
                        break
                    if display is not None and not display_idle(display, self):
                        break
                else:
                    assert display is not None
                    frame = self.display_frames.get(timeout_s=0.05)
                    if frame is None:
                        frames_done = self.display_frames.finished
                        if not frames_done and not display_idle(display, self):
                            break
                    else:
                        self._fps_times.append(time.perf_counter())
                        if not display(frame, self):
                            break
                seconds = self.config.seconds
                if seconds is not None and time.perf_counter() - start >= seconds:
                    break
        finally:
            self.stop.set()
            self.windows.close()
            self.display_frames.close()
            _wait_finished(threads, timeout_s=10)
            s = self.stats
            s.wall_s = time.perf_counter() - start
            s.dropped_windows = self.windows.dropped
            s.dropped_display_frames = self.display_frames.dropped
            if self.last_result is not None and s.windows:
                s.sensor_s = s.inferred * self.steps * self.bin_us / 1e6
        if self.error is not None:
            raise self.error
        return self.stats


class _Stage(threading.Thread):
    """A pipeline stage's thread, with ``done`` set once its target has returned.

    The main thread waits on ``done``, never on ``Thread.join``: in Python 3.11 a
    ``KeyboardInterrupt`` that lands inside ``join()`` can mark a thread that is still
    running as stopped (the bpo-45274 clean-up releases the thread's own lock), so every
    later ``join()`` returns at once while the engine thread is still inside the
    runtime's C++ code, and the interpreter's exit aborts the process ("terminate called
    without an active exception", death by SIGABRT) instead of exiting 0.
    """

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._stage = target
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self._stage()
        finally:
            self.done.set()


def _wait_finished(threads: Sequence[_Stage], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` in all until every stage's target has returned.

    A stage whose ``start()`` a signal interrupted may still be about to run, or never
    will: it is given a second to show up. A signal during the wait does not cut it
    short (the stages must be out of the runtime before the process may exit): the
    interruption is raised once every stage is done.
    """
    now = time.monotonic()
    deadline, show_up = now + timeout_s, now + min(1.0, timeout_s)
    interrupted = False
    for t in threads:
        while not t.done.is_set():
            now = time.monotonic()
            if now >= deadline or (t.ident is None and now >= show_up):
                break
            try:
                t.done.wait(min(0.05, deadline - now))
            except KeyboardInterrupt:
                interrupted = True
    if interrupted:
        raise KeyboardInterrupt


def score_line(decisions: list[tuple[int, int | None]], labels_path: Path) -> str:
    """How a replay's decisions agree with the recording's label file, in one line."""
    from smastream.stream.decision import OFFSET_COLLAR_MS, stream_metrics
    from smastream.stream.formats.labels import read_labels

    m = stream_metrics(decisions, read_labels(labels_path).windows)
    onsets = [o for o in m.onset_ms if o is not None]
    onset = f"{np.median(onsets):.0f} ms" if onsets else "n/a"
    return (
        f"labels {labels_path.name}: {100 * m.step_accuracy:.1f} % of steps inside gesture "
        f"windows decided right; {m.n_detected}/{len(m.onset_ms)} gestures detected (median "
        f"onset to decision {onset}); {m.n_false_idle}/{m.n_idle_steps} idle steps decided "
        f"({m.n_false_idle - m.n_false_collar}/{m.n_idle_steps - m.n_collar_steps} beyond "
        f"{OFFSET_COLLAR_MS:.0f} ms after a gesture's end)"
    )


def display_idle(display: Display, pipeline: Pipeline) -> bool:
    """Let an interactive display handle keys while no new result arrives."""
    handler = getattr(display, "idle", None)
    return bool(handler(pipeline)) if handler is not None else True


def percentiles(values: Sequence[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` of a list (NaN when empty)."""
    if not values:
        return {f"p{q}": float("nan") for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


def summary_line(stats: PipelineStats) -> str:
    """One line for the end of a run."""
    e2e = percentiles(stats.end_to_end_ms)
    ev = stats.event_latency()
    speed = stats.sensor_s / stats.wall_s if stats.wall_s > 0 else 0.0
    return (
        f"{stats.inferred} windows ({stats.sensor_s:.1f} s of sensor time in "
        f"{stats.wall_s:.1f} s, {speed:.1f}x real time), {stats.events} events; "
        f"dropped windows {stats.dropped_windows + stats.dropped_results}, display frames "
        f"{stats.display_frames} ({stats.dropped_display_frames} dropped), "
        f"lost packets {stats.lost_packets}; window->decision p50 {e2e['p50']:.1f} ms, "
        f"p99 {e2e['p99']:.1f} ms; event->decision mean {ev['mean']:.1f} ms, "
        f"p50 {ev['p50']:.1f} ms, p99 {ev['p99']:.1f} ms"
    )


class OverlayDisplay:
    """The display stage: overlay frames into a window and/or a video, keys handled.

    Each frame shows the events of one display period at full sensor resolution (ON/OFF
    colours), the model's crop as a rectangle, and the latest decision with its bars. The
    video is written at ``fps`` (the pipeline's ``display_fps``): one frame per period of
    sensor time. Keys (window only): ``q`` quit, ``r`` reset state, space pause/resume the
    source. The caller must have checked :func:`~smastream.stream.overlay.has_display`
    before asking for a window: opencv's ``imshow`` without an X server aborts the process.

    ``input_size`` is accepted for older callers and not used.
    """

    title = "smastream"

    def __init__(
        self,
        *,
        window: bool,
        video: Path | None,
        input_size: tuple[int, int] | None = None,
        class_names: Sequence[str] = CLASS_NAMES,
        scale: int | None = None,
        fps: float = 30.0,
    ) -> None:
        from smastream.stream.overlay import short_names_for

        del input_size
        self.short_names = short_names_for(class_names)
        self.scale = scale
        self.window = window
        self.frames = 0
        self.fps = float(fps)
        self.video = video
        self.sink: Any = None

    def _open_sink(self, sensor_size: tuple[int, int]) -> None:
        from smastream.stream.overlay import VideoSink, auto_scale, overlay_size

        w, h = sensor_size
        if self.scale is None:
            self.scale = auto_scale(h, w)
        if self.video is not None and self.sink is None:
            size = overlay_size(h, w, self.scale, len(self.short_names))
            try:
                self.sink = VideoSink(self.video, size, fps=self.fps)
            except KeyboardInterrupt:
                # A signal during OpenCV's open lands once the constructor returns: the
                # writer is dropped before it is stored and finishes a file with no frame
                # (258 bytes that no player opens). Leave no file rather than that one.
                with contextlib.suppress(OSError):
                    Path(self.video).unlink(missing_ok=True)
                raise

    def __call__(self, frame: DisplayFrame, pipeline: Pipeline) -> bool:
        from smastream.stream.overlay import render_overlay, sensor_frame

        t0 = time.perf_counter()
        size = pipeline.source.sensor_size
        self._open_sink(size)
        assert self.scale is not None
        result = pipeline.last_result
        decision = result.decisions[-1] if result is not None and result.decisions else None
        image = render_overlay(
            sensor_frame(frame.events, size),
            decision,
            pipeline.overlay_stats(),
            self.scale,
            self.short_names,
            crop=pipeline.crop,
        )
        pipeline.stats.render_ms.append((time.perf_counter() - t0) * 1e3)
        if self.sink is not None:
            self.sink.write(image)
        self.frames += 1
        if self.window:
            import cv2

            if self.frames == 1:  # no Qt toolbar/status bar: the window shows just the overlay
                cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
            cv2.imshow(self.title, image)
            return self._key(cv2.waitKey(1), pipeline)
        return True

    def idle(self, pipeline: Pipeline) -> bool:
        if not self.window:
            return True
        import cv2

        return self._key(cv2.waitKey(10), pipeline)

    @staticmethod
    def _key(key: int, pipeline: Pipeline) -> bool:
        key &= 0xFF
        if key == ord("q"):
            return False
        if key == ord("r"):
            pipeline.reset_requested.set()
        elif key == ord(" "):
            if pipeline.paused.is_set():
                pipeline.paused.clear()
                pacer = getattr(pipeline.source, "pacer", None)
                if pacer is not None:
                    pacer.reanchor()
            else:
                pipeline.paused.set()
        return True

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        if self.window:
            import cv2

            cv2.destroyAllWindows()
