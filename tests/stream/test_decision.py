"""Decisions: softmax/EMA math, quiet and low-confidence "no gesture", hysteresis, resets,
and the streaming metrics on hand-built cases with exact answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smastream.gestures import CLASS_NAMES
from smastream.stream.decision import (
    NO_GESTURE,
    SINCE_ONSET_EDGES_MS,
    Decider,
    DecisionConfig,
    HysteresisState,
    candidate_label,
    decision_pairs,
    hysteresis_step,
    smooth_step,
    smoothing_alpha,
    softmax,
    stamp_decided,
    stream_metrics,
)
from smastream.stream.formats.labels import GestureWindow

BIN_US = 10_000
BUSY = 1_000  # events per 10 ms bin = 100k ev/s, far above the default quiet threshold


def one_hot_logits(labels: list[int], high: float = 20.0, n: int = 11) -> np.ndarray:
    z = np.zeros((len(labels), n), dtype=np.float32)
    z[np.arange(len(labels)), labels] = high
    return z


def sharp(**kw: object) -> DecisionConfig:
    """No smoothing, so each step's own logits decide."""
    base: dict[str, object] = dict(smooth_ms=0.0, min_confidence=0.5, hold_steps=3)
    base.update(kw)
    return DecisionConfig(**base)


def run(decider: Decider, labels: list[int], counts: int | list[int] = BUSY, t0: int = 0):
    c = np.full(len(labels), counts) if isinstance(counts, int) else np.asarray(counts)
    return decider.update(one_hot_logits(labels), c, t0, BIN_US)


def test_softmax_matches_definition_and_is_stable() -> None:
    z = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 0.0]])
    p = softmax(z)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(p[0], e / e.sum())
    np.testing.assert_allclose(p[1], [0.5, 0.5, 0.0], atol=1e-300)
    assert np.isfinite(p).all()


def test_smoothing_exact_on_hand_built_case() -> None:
    # smooth_ms such that alpha is exactly 0.5 for a 10 ms bin
    smooth_ms = -BIN_US / 1000.0 / math.log(0.5)
    alpha = smoothing_alpha(smooth_ms, BIN_US)
    assert alpha == pytest.approx(0.5, abs=1e-15)
    assert smoothing_alpha(0.0, BIN_US) == 1.0
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.0, 1.0, 0.0])
    s1 = smooth_step(None, a, alpha)
    s2 = smooth_step(s1, b, alpha)
    s3 = smooth_step(s2, b, alpha)
    np.testing.assert_allclose(s1, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(s2, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(s3, [0.25, 0.75, 0.0])

    # the decider applies the same EMA to softmax(logits)
    cfg = DecisionConfig(smooth_ms=smooth_ms, min_confidence=0.0, hold_steps=1)
    d = Decider(cfg, n_classes=3, class_names=["a", "b", "c"])
    z = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    out = d.update(z, [BUSY, BUSY], 0, BIN_US)
    p = softmax(z)
    np.testing.assert_allclose(out[0].probs, p[0])
    np.testing.assert_allclose(out[1].probs, 0.5 * p[0] + 0.5 * p[1])
    assert [o.t_bin_end_us for o in out] == [BIN_US, 2 * BIN_US]
    assert [o.raw_label for o in out] == [0, 1]
    assert not out[0].probs.flags.writeable


def test_hysteresis_single_step_blip_does_not_switch() -> None:
    d = Decider(sharp())
    out = run(d, [4, 4, 4, 4, 7, 4, 4, 7, 7, 4])
    labels = [o.label for o in out]
    # None until 4 has won 3 steps; blips of 7 (one and two steps) never show
    assert labels == [None, None, 4, 4, 4, 4, 4, 4, 4, 4]
    assert out[4].raw_label == 7
    out = run(d, [7, 7, 7], t0=10 * BIN_US)
    assert [o.label for o in out] == [4, 4, 7]
    assert out[-1].name == CLASS_NAMES[7]


def test_hysteresis_margin_blocks_near_ties() -> None:
    cfg = sharp(hold_steps=1, switch_margin=0.2, min_confidence=0.0)
    s = HysteresisState(label=0)
    near = np.array([0.45, 0.55])
    assert hysteresis_step(s, near, cfg).label == 0
    clear = np.array([0.3, 0.7])
    assert hysteresis_step(s, clear, cfg).label == 1


def test_hysteresis_pending_resets_when_proposal_changes() -> None:
    cfg = sharp(hold_steps=2, min_confidence=0.0)
    p = [np.eye(3)[i] for i in range(3)]
    s = HysteresisState(label=0)
    s = hysteresis_step(s, p[1], cfg)
    assert s == HysteresisState(0, 1, 1)
    s = hysteresis_step(s, p[2], cfg)
    assert s == HysteresisState(0, 2, 1)
    s = hysteresis_step(s, p[2], cfg)
    assert s == HysteresisState(2, None, 0)


def test_low_confidence_is_no_gesture_and_leaving_is_hysteretic() -> None:
    d = Decider(sharp(min_confidence=0.6))
    out = run(d, [2, 2, 2])
    assert out[-1].label == 2
    # flat logits: top probability 1/11 < 0.6
    flat = np.zeros((4, 11), np.float32)
    out = d.update(flat, np.full(4, BUSY), 3 * BIN_US, BIN_US)
    assert [o.label for o in out] == [2, 2, None, None]
    assert out[-1].name == NO_GESTURE
    assert out[-1].confidence == pytest.approx(1 / 11)
    assert candidate_label(np.full(11, 1 / 11), 0.6) is None
    assert candidate_label(np.eye(11)[5], 0.6) == 5


def test_quiet_is_no_gesture_at_once_whatever_the_logits() -> None:
    cfg = sharp(quiet_events_per_s=5_000.0)  # 50 events per 10 ms bin
    d = Decider(cfg)
    out = run(d, [3, 3, 3, 3, 3], counts=[BUSY, BUSY, BUSY, 49, BUSY])
    assert [o.label for o in out] == [None, None, 3, None, None]
    assert [o.quiet for o in out] == [False, False, False, True, False]
    assert out[3].events_per_s == pytest.approx(4_900.0)
    # exactly at the threshold is not quiet
    out = run(d, [3, 3, 3], counts=50, t0=5 * BIN_US)
    assert not any(o.quiet for o in out)


def test_quiet_rate_is_smoothed() -> None:
    smooth_ms = -BIN_US / 1000.0 / math.log(0.5)  # alpha = 0.5
    cfg = DecisionConfig(smooth_ms=smooth_ms, quiet_events_per_s=30_000.0, hold_steps=1)
    d = Decider(cfg)
    out = run(d, [1, 1, 1, 1], counts=[1000, 0, 0, 0])  # 100k, 50k, 25k, 12.5k ev/s
    assert [o.events_per_s for o in out] == pytest.approx([1e5, 5e4, 2.5e4, 1.25e4])
    assert [o.quiet for o in out] == [False, False, True, True]


def test_reset_clears_smoothing_and_hysteresis() -> None:
    cfg = DecisionConfig(smooth_ms=50.0, hold_steps=2, min_confidence=0.3)
    d = Decider(cfg)
    run(d, [5] * 20)
    assert d.hysteresis.label == 5 and d.probs is not None
    d.reset()
    assert d.probs is None and d.hysteresis == HysteresisState()
    out = run(d, [6, 6], t0=20 * BIN_US)
    # without the reset the smoothed 5 would still dominate; after it 6 wins at once
    np.testing.assert_allclose(out[0].probs, softmax(one_hot_logits([6]))[0])
    assert [o.label for o in out] == [None, 6]


def test_idle_timeout_signals_reset_once_per_quiet_spell() -> None:
    cfg = sharp(idle_reset_s=0.05, hold_steps=1, quiet_events_per_s=5_000.0)  # 5 bins of 10 ms
    d = Decider(cfg)
    run(d, [1, 1])
    out = run(d, [1] * 12, counts=0, t0=2 * BIN_US)
    flags = [o.reset_state for o in out]
    assert flags == [False] * 4 + [True] + [False] * 7
    assert out[4].t_bin_end_us - 2 * BIN_US == 50_000
    # activity, then quiet again: a new spell signals again
    run(d, [1], t0=14 * BIN_US)
    out = run(d, [1] * 5, counts=0, t0=15 * BIN_US)
    assert [o.reset_state for o in out] == [False] * 4 + [True]
    never = Decider(sharp(idle_reset_s=None))
    assert not any(o.reset_state for o in run(never, [1] * 500, counts=0))


def test_timing_fields_are_passed_in_not_read() -> None:
    d = Decider(sharp())
    out = d.update(one_hot_logits([1, 1]), [BUSY, BUSY], 0, BIN_US, window_closed_wall=10.0)
    assert all(o.window_closed_wall == 10.0 and o.latency_ms is None for o in out)
    stamped = stamp_decided(out, 10.0025)
    assert [s.latency_ms for s in stamped] == pytest.approx([2.5, 2.5])
    assert out[0].decided_wall is None  # originals untouched


def test_update_rejects_bad_input() -> None:
    d = Decider(sharp())
    with pytest.raises(ValueError, match=r"expected \[S, 11\]"):
        d.update(np.zeros((3, 10)), [1, 1, 1], 0, BIN_US)
    with pytest.raises(ValueError, match="one per step"):
        d.update(np.zeros((3, 11)), [1, 1], 0, BIN_US)
    with pytest.raises(ValueError, match="bin_us=0"):
        d.update(np.zeros((3, 11)), [1, 1, 1], 0, 0)
    bad = np.zeros((3, 11))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"steps \[1\]"):
        d.update(bad, [1, 1, 1], 0, BIN_US)
    with pytest.raises(ValueError, match="hold_steps=0"):
        DecisionConfig(hold_steps=0)
    with pytest.raises(ValueError, match=r"min_confidence=1\.5"):
        DecisionConfig(min_confidence=1.5)
    with pytest.raises(ValueError, match="idle_reset_s=0"):
        DecisionConfig(idle_reset_s=0)


# ------------------------------------------------------------------ streaming metrics


def test_stream_metrics_exact_hand_built_case() -> None:
    n = None
    # steps every 10 (units: µs, kept small for readability)
    decisions = [
        (10, n),  # idle, correct silence
        (20, 3),  # idle, false
        (30, n),  # in A (start 25): wrong
        (40, 1),  # in A: correct  -> A onset (40-25)/1000 ms with stable_steps=1
        (50, 1),  # in A: correct
        (60, 2),  # in A and B (B: 55..80): correct via B
        (70, 1),  # in A and B: correct via A
        (80, 2),  # A ends at 70 -> only B (t <= 80): correct
        (90, n),  # idle
        (100, 4),  # in C (95..120): wrong
        (110, n),  # in C: wrong
        (130, 4),  # idle, false
    ]
    windows = [
        GestureWindow(25, 70, 1),
        GestureWindow(55, 80, 2),
        GestureWindow(95, 120, 5),
    ]
    m = stream_metrics(decisions, windows)
    assert m.n_steps == 12
    assert m.n_window_steps == 8
    assert m.n_correct_steps == 5
    assert m.step_accuracy == 5 / 8
    # B: first correct step inside B is t=60
    assert m.onset_ms == (15 / 1000, 5 / 1000, None)
    assert m.n_detected == 2
    assert m.mean_onset_ms == pytest.approx(10 / 1000)
    assert m.n_idle_steps == 4
    assert m.n_false_idle == 2
    assert m.false_idle_rate == 0.5

    # stable onset: A needs two consecutive 1s inside A (40, 50) -> 40; B needs two
    # consecutive 2s inside B (60, 70, 80 -> 2, 1, 2): none
    m2 = stream_metrics(decisions, windows, stable_steps=2)
    assert m2.onset_ms == (15 / 1000, None, None)
    assert m2.step_accuracy == m.step_accuracy


def test_stream_metrics_boundaries_and_empty() -> None:
    w = [GestureWindow(100, 200, 0)]
    # t == start is outside (the bin ending at start holds no window events); t == end inside
    m = stream_metrics([(100, 0), (200, 0), (201, 0)], w)
    assert (m.n_window_steps, m.n_correct_steps, m.n_idle_steps, m.n_false_idle) == (1, 1, 2, 2)
    assert m.onset_ms == (0.1,)
    empty = stream_metrics([], w)
    assert math.isnan(empty.step_accuracy) and empty.onset_ms == (None,)
    assert math.isnan(empty.false_idle_rate) and math.isnan(empty.mean_onset_ms)
    with pytest.raises(ValueError, match="backwards at index 1"):
        stream_metrics([(20, 0), (10, 0)], w)
    with pytest.raises(ValueError, match="stable_steps=0"):
        stream_metrics([], w, stable_steps=0)


def test_stream_metrics_counts_the_collar_after_each_gesture_s_end() -> None:
    # A gesture of class 3 from 1.0 to 2.0 s and one of class 5 from 2.1 to 2.5 s, a
    # decision every 50 ms from 0.05 to 3.0 s: class 3 shown until 2.1 s (two steps past its
    # end), class 5 until 2.6 s, and one stray gesture at 2.9 s.
    w = [GestureWindow(1_000_000, 2_000_000, 3), GestureWindow(2_100_000, 2_500_000, 5)]
    t = np.arange(50_000, 3_000_001, 50_000)
    lab = [3 if 1e6 < x <= 2.1e6 else 5 if 2.1e6 < x <= 2.6e6 else None for x in t]
    lab[-3] = 7  # t = 2.9 s
    m = stream_metrics(list(zip(t.tolist(), lab, strict=True)), w)
    # idle: 0.05..1.0 s (20 steps), 2.05 and 2.1 (2), 2.55..3.0 (10) = 32; collars (200 ms):
    # 2.05, 2.1 after the first window (2.1 and 2.15 are in the second one), 2.55..2.7.
    assert (m.n_idle_steps, m.n_false_idle) == (32, 5)
    assert (m.n_collar_steps, m.n_false_collar) == (6, 4)
    assert m.false_idle_rate_beyond_collar == 1 / 26
    m0 = stream_metrics(list(zip(t.tolist(), lab, strict=True)), w, offset_collar_ms=0)
    assert (m0.n_collar_steps, m0.n_false_collar) == (0, 0)
    assert m0.false_idle_rate_beyond_collar == m0.false_idle_rate == 5 / 32
    assert math.isnan(stream_metrics([], w).false_idle_rate_beyond_collar)
    with pytest.raises(ValueError, match="offset_collar_ms=-1"):
        stream_metrics([], w, offset_collar_ms=-1)


def test_stream_metrics_counts_steps_by_time_since_onset() -> None:
    # One 2.5 s window of class 3 from t = 1 s, a decision every 50 ms; correct only from
    # 300 ms on (bins ending at 350, 400, ... ms), so the spans up to 300 ms have 0 correct.
    start = 1_000_000
    w = [GestureWindow(start, start + 2_500_000, 3)]
    t = np.arange(start - 200_000, start + 2_700_000, 50_000) + 50_000
    decisions = [(int(x), 3 if x - start > 300_000 else None) for x in t]
    m = stream_metrics(decisions, w)
    assert len(m.since_onset) == len(SINCE_ONSET_EDGES_MS) - 1
    steps = [a for a, _ in m.since_onset]
    ok = [b for _, b in m.since_onset]
    # spans (0,100] (100,200] (200,300] (300,400] (400,600] (600,1000] (1000,2000] (2000,inf)
    assert steps == [2, 2, 2, 2, 4, 8, 20, 10]
    assert ok == [0, 0, 0, 2, 4, 8, 20, 10]
    assert sum(steps) == m.n_window_steps and sum(ok) == m.n_correct_steps
    assert stream_metrics([], w).since_onset == ((0, 0),) * (len(SINCE_ONSET_EDGES_MS) - 1)


def test_decider_output_feeds_stream_metrics() -> None:
    d = Decider(sharp(hold_steps=2))
    out = run(d, [7] * 10)  # bins end at 10k..100k µs
    m = stream_metrics(decision_pairs(out), [GestureWindow(0, 100_000, 7)])
    assert m.n_window_steps == 10 and m.n_correct_steps == 9
    assert m.onset_ms == (20.0,)


def test_the_no_gesture_output_is_decided_as_no_label_in_the_one_window_path() -> None:
    """Decider.decide_window is what the pipeline and evaluate both call: the 12th output
    ("no gesture", defined once in smastream.gestures) becomes label None."""
    from smastream.gestures import NO_GESTURE_INDEX, STREAM_CLASS_NAMES

    cfg = DecisionConfig(smooth_ms=0, hold_steps=1, quiet_events_per_s=0, switch_margin=0)
    d = Decider(cfg, 12, STREAM_CLASS_NAMES)
    assert d.no_gesture == NO_GESTURE_INDEX == 11
    frames = np.ones((2, 2, 4, 4), np.float32)
    logits = np.zeros((2, 12))
    logits[0, 11] = 20.0
    logits[1, 3] = 40.0
    out = d.decide_window(logits, frames, 0, 50_000)
    assert [o.label for o in out] == [None, 3]
    assert out[0].name == NO_GESTURE and out[0].confidence > 0.99
    assert out[1].events_per_s == pytest.approx(32 / 0.05)  # the frames' sum per bin
