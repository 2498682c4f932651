"""From per-step logits to stable decisions: smoothing, "no gesture", hysteresis, idle reset.

The engine returns logits ``[S, n_classes]`` for each window of ``S`` bins. For every step
(bin) the decider

1. turns the logits into probabilities (:func:`softmax`) and smooths them with an
   exponential moving average whose time constant is ``smooth_ms`` (:func:`smooth_step`,
   ``alpha = 1 - exp(-bin_us / (1000 * smooth_ms))``, so the smoothing does not depend on
   the bin width). The event rate ``events_in_bin / bin_s`` is smoothed the same way;
2. calls the scene *quiet* when the smoothed event rate is below ``quiet_events_per_s``:
   the label is "no gesture" at once, whatever the logits say;
3. otherwise proposes the top class, or "no gesture" when its smoothed probability is below
   ``min_confidence`` (:func:`candidate_label`);
4. switches the shown label to the proposal only after it has been proposed for
   ``hold_steps`` consecutive steps and, between two classes, beats the current class by
   ``switch_margin`` (:func:`hysteresis_step`). With ``hold_steps >= 2`` a one-step blip
   never changes the label, and falling back to "no gesture" on low confidence is held the
   same way. The default is 1: the smoothing already damps blips, and every held step is
   a step late at each gesture's onset (see :class:`DecisionConfig`);
5. after ``idle_reset_s`` of continuous quiet (sensor time), sets ``reset_state`` on that
   one step, once per quiet spell: the caller resets the engine's membrane state. The
   decider clears its own smoothing and hysteresis at the same time.

Smoothing keeps running through quiet steps (the network keeps running too), so the
probabilities shown are always the model's.

Timing: :class:`Decision` carries ``window_closed_wall`` (passed to :meth:`Decider.update`)
and ``decided_wall`` (stamped by the caller with :func:`stamp_decided`); the decider never
reads a clock.

The streaming metrics at the end (:func:`stream_metrics`) score a run of decisions
against labelled gesture windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from smastream.gestures import CLASS_NAMES, NO_GESTURE, NUM_CLASSES, no_gesture_index
from smastream.stream.formats.labels import GestureWindow

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DecisionConfig:
    """Settings of :class:`Decider`.

    Attributes:
        smooth_ms: Time constant of the exponential moving average over per-step
            probabilities and event rate, in ms. 0 turns smoothing off.
        min_confidence: Smoothed probability the top class needs; below it the proposal
            is "no gesture". 0..1.
        quiet_events_per_s: Smoothed event rate below which the scene is quiet and the
            label is "no gesture" at once. 0 turns the quiet test off.
        hold_steps: Consecutive steps a new proposal (class or "no gesture") must win
            before the label switches to it. 1 switches at once.
        switch_margin: Between two classes, the new one's smoothed probability must
            exceed the current one's by at least this much for a step to count. 0..1.
        idle_reset_s: Continuous quiet, in seconds of sensor time, after which the
            decision asks the caller to reset the engine state. ``None`` never asks.

    The defaults (150 ms, threshold 0.2, hold 1, margin 0, quiet below 1000 events/s in
    the model's input) were chosen for per-bin decisions with the shipped demo model on
    the 24 tuning recordings of the extended generator (seeds 12000-12023, in no training,
    evaluation or demo set; ``python -m smastream.train.evaluate --max-false-idle 0.03``:
    the most accurate point that shows a gesture on at most 3 % of the idle steps beyond
    200 ms after a gesture's end and of the no-gesture scenes' steps): 82.0 % of in-window
    steps correct, median onset 328 ms, 1.1 % of idle steps beyond the collar (3.8 % of all
    idle steps) and 1.9 % of scene steps with a gesture, against 81.0 %, 306 ms, 1.4 %
    (3.3 %), 2.5 % for the previous 100 ms / 0.3 / gate at 2000 (README, "Demo model").
    After 2 s below the quiet gate the decision asks for a reset of the engine state.
    """

    smooth_ms: float = 150.0
    min_confidence: float = 0.2
    quiet_events_per_s: float = 1000.0
    hold_steps: int = 1
    switch_margin: float = 0.0
    idle_reset_s: float | None = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.smooth_ms) and self.smooth_ms >= 0):
            raise ValueError(f"smooth_ms={self.smooth_ms!r}: must be a finite number >= 0")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence={self.min_confidence!r}: must be in 0..1")
        if not (math.isfinite(self.quiet_events_per_s) and self.quiet_events_per_s >= 0):
            raise ValueError(
                f"quiet_events_per_s={self.quiet_events_per_s!r}: must be a finite number >= 0"
            )
        if isinstance(self.hold_steps, bool) or not isinstance(self.hold_steps, int):
            raise ValueError(f"hold_steps={self.hold_steps!r}: must be an integer >= 1")
        if self.hold_steps < 1:
            raise ValueError(f"hold_steps={self.hold_steps!r}: must be an integer >= 1")
        if not 0.0 <= self.switch_margin <= 1.0:
            raise ValueError(f"switch_margin={self.switch_margin!r}: must be in 0..1")
        if self.idle_reset_s is not None and not (
            math.isfinite(self.idle_reset_s) and self.idle_reset_s > 0
        ):
            raise ValueError(f"idle_reset_s={self.idle_reset_s!r}: must be > 0 seconds or None")


@dataclass(frozen=True, eq=False)
class Decision:
    """The decision for one step (bin).

    Attributes:
        t_bin_end_us: Sensor time of the end of the bin, µs.
        label: Decided class 0..n-1, or ``None`` for "no gesture".
        name: Class name, or ``"no gesture"``.
        confidence: Smoothed probability of ``label``; for "no gesture", of the top class.
        probs: ``[n_classes]`` smoothed probabilities (read-only).
        raw_label: Argmax of this step's own logits, before smoothing and hysteresis.
        quiet: The smoothed event rate was below ``quiet_events_per_s``.
        reset_state: The caller should reset the engine state now (idle timeout).
        events_per_s: Smoothed event rate, events per second.
        window_closed_wall: ``time.perf_counter()`` when the window closed (caller's).
        decided_wall: ``time.perf_counter()`` when the decision was made (caller's, see
            :func:`stamp_decided`).
    """

    t_bin_end_us: int
    label: int | None
    name: str
    confidence: float
    probs: FloatArray
    raw_label: int
    quiet: bool
    reset_state: bool
    events_per_s: float = 0.0
    window_closed_wall: float | None = None
    decided_wall: float | None = None

    @property
    def latency_ms(self) -> float | None:
        """``decided_wall - window_closed_wall`` in ms, or ``None`` if either is missing."""
        if self.window_closed_wall is None or self.decided_wall is None:
            return None
        return (self.decided_wall - self.window_closed_wall) * 1e3


class HysteresisState(NamedTuple):
    """State of :func:`hysteresis_step`.

    Attributes:
        label: The label shown now (``None`` = no gesture).
        pending: The proposal waiting to replace it, if any.
        steps: Consecutive steps ``pending`` has been proposed.
    """

    label: int | None = None
    pending: int | None = None
    steps: int = 0


def softmax(logits: npt.ArrayLike) -> FloatArray:
    """Numerically stable softmax over the last axis, in float64.

    Shapes:
        logits: ``[..., C]``; returns ``[..., C]`` summing to 1 over the last axis.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def smoothing_alpha(smooth_ms: float, bin_us: int) -> float:
    """EMA weight of the new step: ``1 - exp(-bin_us / (1000 * smooth_ms))``; 1 if
    ``smooth_ms`` is 0 (no smoothing)."""
    if smooth_ms <= 0:
        return 1.0
    return 1.0 - math.exp(-bin_us / (1000.0 * smooth_ms))


def smooth_step(prev: FloatArray | None, probs: FloatArray, alpha: float) -> FloatArray:
    """One EMA step: ``prev + alpha * (probs - prev)``; the first step (``prev`` is
    ``None``) returns ``probs`` unchanged.

    Shapes:
        prev, probs: ``[C]`` (or any equal shapes); returns the same shape.
    """
    if prev is None:
        return np.array(probs, dtype=np.float64)
    return prev + alpha * (probs - prev)


def candidate_label(probs: FloatArray, min_confidence: float) -> int | None:
    """The top class, or ``None`` when its probability is below ``min_confidence``."""
    top = int(np.argmax(probs))
    return top if probs[top] >= min_confidence else None


def hysteresis_step(
    state: HysteresisState, probs: FloatArray, cfg: DecisionConfig, quiet: bool = False
) -> HysteresisState:
    """Advance the shown label by one step.

    A quiet step shows "no gesture" at once. Otherwise the proposal is
    :func:`candidate_label`; it replaces the shown label after ``cfg.hold_steps``
    consecutive steps. Between two classes a step only counts when the proposal beats the
    shown class by ``cfg.switch_margin``; a step that does not count clears the pending
    proposal.

    Shapes:
        probs: ``[C]`` smoothed probabilities.
    """
    if quiet:
        return HysteresisState(None, None, 0)
    cand = candidate_label(probs, cfg.min_confidence)
    if cand == state.label:
        return HysteresisState(state.label, None, 0)
    if (
        cand is not None
        and state.label is not None
        and probs[cand] - probs[state.label] < cfg.switch_margin
    ):
        return HysteresisState(state.label, None, 0)
    count = state.steps + 1 if state.pending == cand and state.steps > 0 else 1
    if count >= cfg.hold_steps:
        return HysteresisState(cand, None, 0)
    return HysteresisState(state.label, cand, count)


def stamp_decided(decisions: Iterable[Decision], decided_wall: float) -> list[Decision]:
    """Copies of ``decisions`` with ``decided_wall`` set (pass ``time.perf_counter()``)."""
    return [dataclasses.replace(d, decided_wall=decided_wall) for d in decisions]


def events_per_bin(frames: npt.ArrayLike) -> npt.NDArray[np.generic]:
    """Events in each bin of ``frames [S, 2, H, W]`` (their sums): what the quiet gate of
    :meth:`Decider.decide_window` reads."""
    f = np.asarray(frames)
    return f.reshape(f.shape[0], -1).sum(axis=1)


class Decider:
    """Stateful shell over the pure steps above: holds the smoothed probabilities, the
    smoothed event rate, the hysteresis state and the start of the current quiet spell.

    Args:
        config: The settings.
        n_classes: Number of classes in the logits.
        class_names: Names for :attr:`Decision.name`; defaults to the DVS128 Gesture names
            when ``n_classes`` is 11, else ``"class <i>"``.
    """

    def __init__(
        self,
        config: DecisionConfig | None = None,
        n_classes: int = NUM_CLASSES,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if n_classes < 2:
            raise ValueError(f"n_classes={n_classes!r}: need at least 2 classes")
        if class_names is None:
            class_names = (
                CLASS_NAMES
                if n_classes == NUM_CLASSES
                else [f"class {i}" for i in range(n_classes)]
            )
        if len(class_names) != n_classes:
            raise ValueError(f"{len(class_names)} class names given for n_classes={n_classes}")
        self.config = config if config is not None else DecisionConfig()
        self.n_classes = n_classes
        self.class_names = tuple(class_names)
        self.no_gesture = no_gesture_index(self.class_names)
        """The model's "no gesture" output (decided as label None), if it has one."""
        self.probs: FloatArray | None = None
        self.rate: float | None = None
        self.hysteresis = HysteresisState()
        self.quiet_since_us: int | None = None
        self.idle_signalled = False
        self.resets = 0
        """How many times the state was cleared (by :meth:`reset` or the idle timeout)."""

    def reset(self) -> None:
        """Forget smoothing, hysteresis and the quiet spell (user request, source
        discontinuity; the caller resets the engine at the same time)."""
        self._clear_smoothing()
        self.quiet_since_us = None
        self.idle_signalled = False

    def _clear_smoothing(self) -> None:
        self.probs = None
        self.rate = None
        self.hysteresis = HysteresisState()
        self.resets += 1

    def decide_window(
        self,
        logits: npt.ArrayLike,
        frames: npt.NDArray[np.float32],
        t_window_start_us: int,
        bin_us: int,
        window_closed_wall: float | None = None,
    ) -> list[Decision]:
        """The one logits -> decisions path of the live pipeline and ``evaluate``: the
        events per bin are the frames' sums (``frames [S, 2, H, W]``), then
        :meth:`update`; the "no gesture" output is decided as label ``None``."""
        return self.update(
            logits, events_per_bin(frames), t_window_start_us, bin_us, window_closed_wall
        )

    def update(
        self,
        logits: npt.ArrayLike,
        events_per_bin: npt.ArrayLike,
        t_window_start_us: int,
        bin_us: int,
        window_closed_wall: float | None = None,
    ) -> list[Decision]:
        """Decide every step of one window.

        Args:
            logits: ``[S, n_classes]`` engine output, one row per bin.
            events_per_bin: ``[S]`` events counted in each bin (before any downsampling
                drops; what the sensor saw).
            t_window_start_us: Sensor time of the start of the first bin, µs.
            bin_us: Bin width, µs.
            window_closed_wall: ``time.perf_counter()`` when the window closed, copied
                into every decision.

        Returns:
            ``S`` decisions; bin ``i`` ends at ``t_window_start_us + (i + 1) * bin_us``.

        Raises:
            ValueError: wrong shapes, ``bin_us <= 0``, negative counts or non-finite logits.
        """
        z = np.asarray(logits, dtype=np.float64)
        counts = np.asarray(events_per_bin)
        if z.ndim != 2 or z.shape[1] != self.n_classes:
            raise ValueError(f"logits shape {z.shape}: expected [S, {self.n_classes}]")
        if counts.shape != (z.shape[0],):
            raise ValueError(
                f"events_per_bin shape {counts.shape}: expected [{z.shape[0]}] (one per step)"
            )
        if int(bin_us) <= 0:
            raise ValueError(f"bin_us={bin_us!r}: must be > 0")
        bad = np.flatnonzero(~np.isfinite(z).all(axis=1))
        if bad.size:
            raise ValueError(f"non-finite logits at steps {bad.tolist()} of this window")
        if counts.size and counts.min() < 0:
            raise ValueError(f"negative event count in events_per_bin: {counts.min()}")

        cfg = self.config
        bin_us = int(bin_us)
        alpha = smoothing_alpha(cfg.smooth_ms, bin_us)
        step_probs = softmax(z)
        raw = np.argmax(z, axis=1)
        rates = counts.astype(np.float64) * (1e6 / bin_us)
        idle_us = None if cfg.idle_reset_s is None else cfg.idle_reset_s * 1e6
        out: list[Decision] = []
        for i in range(z.shape[0]):
            t_end = int(t_window_start_us) + (i + 1) * bin_us
            self.probs = smooth_step(self.probs, step_probs[i], alpha)
            rate = float(rates[i])
            self.rate = rate if self.rate is None else self.rate + alpha * (rate - self.rate)
            quiet = self.rate < cfg.quiet_events_per_s
            self.hysteresis = hysteresis_step(self.hysteresis, self.probs, cfg, quiet)
            reset_state = False
            if not quiet:
                self.quiet_since_us = None
                self.idle_signalled = False
            else:
                if self.quiet_since_us is None:
                    self.quiet_since_us = t_end - bin_us
                reset_state = (
                    idle_us is not None
                    and not self.idle_signalled
                    and t_end - self.quiet_since_us >= idle_us
                )
            probs = self.probs.copy()
            probs.setflags(write=False)
            shown = self.hysteresis.label
            label = None if shown == self.no_gesture else shown
            top = int(np.argmax(probs))
            out.append(
                Decision(
                    t_bin_end_us=t_end,
                    label=label,
                    name=NO_GESTURE if label is None else self.class_names[label],
                    confidence=float(probs[top if shown is None else shown]),
                    probs=probs,
                    raw_label=int(raw[i]),
                    quiet=bool(quiet),
                    reset_state=reset_state,
                    events_per_s=float(self.rate),
                    window_closed_wall=window_closed_wall,
                )
            )
            if reset_state:
                self.idle_signalled = True
                self._clear_smoothing()
        return out


# --------------------------------------------------------------------------------------
# Streaming metrics


SINCE_ONSET_EDGES_MS: tuple[float, ...] = (0, 100, 200, 300, 400, 600, 1000, 2000, math.inf)
"""Spans of time since a gesture's onset (ms) over which :attr:`StreamMetrics.since_onset`
counts steps: a decision at ``d`` ms is in span ``k`` when ``edges[k] < d <= edges[k+1]``."""


OFFSET_COLLAR_MS = 200.0
"""Idle steps this soon after a gesture's end (ms) are also counted on their own
(:attr:`StreamMetrics.n_collar_steps`): a label that lingers a step or two after the arm
comes to rest is the decision's lag, not a gesture shown when nobody gestures. The length
is the 200 ms collar of the event-based metrics of sound event detection (sed_eval, DCASE),
where annotated offsets are as soft as a gesture's."""


@dataclass(frozen=True)
class StreamMetrics:
    """How a run of decisions scores against labelled gesture windows.

    A decision at time ``t`` (the end of the evidence it used, e.g.
    :attr:`Decision.t_bin_end_us`) is *inside* a window when ``start_us < t <= end_us``.
    A step inside several overlapping windows is counted once, and is correct when its
    label matches any of them.

    Attributes:
        n_steps: All decisions.
        n_window_steps: Decisions inside at least one window.
        n_correct_steps: Of those, the ones whose label matches a window they are in.
        step_accuracy: ``n_correct_steps / n_window_steps`` (NaN when no step is inside).
        onset_ms: Per window, in the order given: ms from the window start to the first
            decision of the first run of ``stable_steps`` consecutive correct decisions
            inside the window; ``None`` when there is no such run.
        n_detected: Windows whose onset is not ``None``.
        mean_onset_ms: Mean of the onsets found (NaN when none).
        n_idle_steps: Decisions outside every window.
        n_false_idle: Of those, the ones whose label is not ``None``.
        n_collar_steps: Idle steps within the collar (``offset_collar_ms`` of
            :func:`stream_metrics`, :data:`OFFSET_COLLAR_MS`) after a window's end.
        n_false_collar: Of those, the ones whose label is not ``None``.
        since_onset: Per span of :data:`SINCE_ONSET_EDGES_MS` (time from the window
            start to the decision), ``(steps, correct steps)`` summed over the windows:
            where in a gesture the in-window accuracy is won or lost.
    """

    n_steps: int
    n_window_steps: int
    n_correct_steps: int
    step_accuracy: float
    onset_ms: tuple[float | None, ...]
    n_detected: int
    mean_onset_ms: float
    n_idle_steps: int
    n_false_idle: int
    since_onset: tuple[tuple[int, int], ...] = ()
    n_collar_steps: int = 0
    n_false_collar: int = 0

    @property
    def false_idle_rate(self) -> float:
        """``n_false_idle / n_idle_steps`` (NaN when there is no idle step)."""
        return self.n_false_idle / self.n_idle_steps if self.n_idle_steps else math.nan

    @property
    def false_idle_rate_beyond_collar(self) -> float:
        """The false idle rate over the idle steps outside the collars (NaN when none)."""
        return rate_beyond_collar(
            self.n_idle_steps, self.n_false_idle, self.n_collar_steps, self.n_false_collar
        )


def rate_beyond_collar(idle: int, false_idle: int, collar: int, false_collar: int) -> float:
    """``(false_idle - false_collar) / (idle - collar)``: the false idle rate outside the
    collars, from the counts of :class:`StreamMetrics` (one recording's or summed); NaN
    when every idle step is in a collar."""
    n = idle - collar
    return (false_idle - false_collar) / n if n > 0 else math.nan


def decision_pairs(decisions: Iterable[Decision]) -> list[tuple[int, int | None]]:
    """``(t_bin_end_us, label)`` for each decision, the input of :func:`stream_metrics`."""
    return [(d.t_bin_end_us, d.label) for d in decisions]


def stream_metrics(
    decisions: Sequence[tuple[int, int | None]],
    windows: Iterable[GestureWindow],
    stable_steps: int = 1,
    offset_collar_ms: float = OFFSET_COLLAR_MS,
) -> StreamMetrics:
    """Score decisions ``(t_us, label or None)`` against gesture windows.

    See :class:`StreamMetrics` for the definitions (inside = ``start_us < t <= end_us``;
    overlapping windows: a step is correct if it matches any window it is in; an idle step
    at ``t`` is in a window's collar when ``end_us < t <= end_us + offset_collar_ms``).

    Args:
        decisions: ``(t_us, label)`` pairs in non-decreasing ``t``.
        windows: Labelled windows (e.g. :attr:`Labels.windows`).
        stable_steps: Length of the run of correct decisions that counts as the onset.
        offset_collar_ms: Length of the collar after each window's end.

    Raises:
        ValueError: ``stable_steps < 1``, a negative collar or times that go backwards.
    """
    if stable_steps < 1:
        raise ValueError(f"stable_steps={stable_steps!r}: must be >= 1")
    if not (math.isfinite(offset_collar_ms) and offset_collar_ms >= 0):
        raise ValueError(f"offset_collar_ms={offset_collar_ms!r}: must be a finite number >= 0")
    wins = list(windows)
    n = len(decisions)
    t = np.fromiter((int(d[0]) for d in decisions), dtype=np.int64, count=n)
    lab = np.fromiter(
        (-1 if d[1] is None else int(d[1]) for d in decisions), dtype=np.int64, count=n
    )
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0])
        raise ValueError(f"decision times go backwards at index {i + 1}: {t[i]} then {t[i + 1]}")
    inside = np.zeros(n, dtype=bool)
    collar = np.zeros(n, dtype=bool)
    correct = np.zeros(n, dtype=bool)
    onsets: list[float | None] = []
    edges = np.asarray(SINCE_ONSET_EDGES_MS, dtype=np.float64)
    span_steps = np.zeros(edges.size - 1, dtype=np.int64)
    span_ok = np.zeros(edges.size - 1, dtype=np.int64)
    for w in wins:
        i0 = int(np.searchsorted(t, w.start_us, side="right"))
        i1 = int(np.searchsorted(t, w.end_us, side="right"))
        inside[i0:i1] = True
        collar[i1 : int(np.searchsorted(t, w.end_us + offset_collar_ms * 1e3, side="right"))] = True
        ok = lab[i0:i1] == w.label
        correct[i0:i1] |= ok
        span = np.searchsorted(edges, (t[i0:i1] - w.start_us) / 1e3, side="left") - 1
        np.add.at(span_steps, span, 1)
        np.add.at(span_ok, span, ok.astype(np.int64))
        onset: float | None = None
        if ok.size >= stable_steps:
            runs = np.convolve(ok.astype(np.int64), np.ones(stable_steps, np.int64), "valid")
            hits = np.flatnonzero(runs == stable_steps)
            if hits.size:
                onset = (int(t[i0 + hits[0]]) - w.start_us) / 1e3
        onsets.append(onset)
    found = [o for o in onsets if o is not None]
    n_in = int(inside.sum())
    n_ok = int(correct.sum())
    idle = ~inside
    return StreamMetrics(
        n_steps=n,
        n_window_steps=n_in,
        n_correct_steps=n_ok,
        step_accuracy=n_ok / n_in if n_in else math.nan,
        onset_ms=tuple(onsets),
        n_detected=len(found),
        mean_onset_ms=float(np.mean(found)) if found else math.nan,
        n_idle_steps=int(idle.sum()),
        n_false_idle=int((idle & (lab >= 0)).sum()),
        since_onset=tuple(zip(span_steps.tolist(), span_ok.tolist(), strict=True)),
        n_collar_steps=int((idle & collar).sum()),
        n_false_collar=int((idle & collar & (lab >= 0)).sum()),
    )
