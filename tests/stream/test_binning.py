"""Binning: fixed-edge bins, geometry, the streaming Binner, equal-count frames."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smastream.stream.binning import (
    CHANNEL_OFF,
    CHANNEL_ON,
    BinCounts,
    Binner,
    bin_events,
    equal_count_bounds,
    equal_count_frames,
    frame_geometry,
)
from smastream.stream.events import EVENT_DTYPE, make_events
from tests.conftest import random_events


def reference_frames(
    ev: np.ndarray,
    t0: int,
    bin_us: int,
    n_bins: int,
    size: tuple[int, int],
    crop: tuple[int, int, int, int] | None = None,
    out_size: tuple[int, int] | None = None,
    factor: int = 1,
) -> np.ndarray:
    """Independent, slow oracle with numpy: float centre mapping, np.add.at."""
    x0, y0, cw, ch = crop if crop is not None else (0, 0, *size)
    t = ev["t"].astype(np.int64)
    x = ev["x"].astype(np.int64)
    y = ev["y"].astype(np.int64)
    keep = (t >= t0) & (t < t0 + n_bins * bin_us)
    keep &= (x >= x0) & (x < x0 + cw) & (y >= y0) & (y < y0 + ch)
    u, v = x[keep] - x0, y[keep] - y0
    if out_size is None:
        ow, oh = -(-cw // factor), -(-ch // factor)
        ox, oy = u // factor, v // factor
    else:
        ow, oh = out_size
        ox = np.floor((u + 0.5) * ow / cw).astype(np.int64)
        oy = np.floor((v + 0.5) * oh / ch).astype(np.int64)
    frames = np.zeros((n_bins, 2, oh, ow), np.float32)
    b = (t[keep] - t0) // bin_us
    np.add.at(frames, (b, (ev["p"][keep] != 0).astype(np.int64), oy, ox), 1)
    return frames


# --------------------------------------------------------------------------- bin_events


def test_conservation_and_counts(rng: np.random.Generator) -> None:
    ev = random_events(rng, 20_000, (128, 128), t0=5_000)
    t0 = 7_000
    bin_us, n_bins = 1_000, 50
    counts = BinCounts()
    frames = bin_events(ev, t0, bin_us, n_bins, (128, 128), counts=counts)
    in_time = int(np.count_nonzero((ev["t"] >= t0) & (ev["t"] < t0 + bin_us * n_bins)))
    assert 0 < in_time < len(ev)
    assert frames.dtype == np.float32 and frames.shape == (n_bins, 2, 128, 128)
    assert frames.sum() == in_time == counts.binned
    assert counts.before == np.count_nonzero(ev["t"] < t0)
    assert counts.after == np.count_nonzero(ev["t"] >= t0 + bin_us * n_bins)
    assert counts.total == len(ev)
    # each bin holds exactly the events whose timestamps fall between its edges
    edges = t0 + bin_us * np.arange(n_bins + 1)
    per_bin = np.diff(np.searchsorted(ev["t"], edges))
    np.testing.assert_array_equal(frames.sum(axis=(1, 2, 3)), per_bin)


def test_channels_off_is_0_on_is_1() -> None:
    ev = make_events([0, 1, 2], [1, 2, 3], [0, 0, 0], [0, 1, 1])
    frames = bin_events(ev, 0, 10, 1, (4, 1))
    assert CHANNEL_OFF == 0 and CHANNEL_ON == 1
    assert frames[0, CHANNEL_OFF, 0].tolist() == [0, 1, 0, 0]
    assert frames[0, CHANNEL_ON, 0].tolist() == [0, 0, 1, 1]
    # any non-zero polarity byte is ON, as in spikingjelly (p != 0)
    raw = ev.copy()
    raw["p"] = [0, 2, 255]
    np.testing.assert_array_equal(bin_events(raw, 0, 10, 1, (4, 1)), frames)


@pytest.mark.parametrize(
    ("crop", "out_size", "factor"),
    [
        (None, None, 1),
        ((10, 5, 50, 40), None, 1),
        (None, None, 3),
        ((3, 7, 61, 45), None, 4),
        (None, (48, 32), 1),
        ((20, 0, 100, 90), (64, 64), 1),
        (None, (200, 150), 1),  # upsampling: still one target pixel per source pixel
    ],
)
def test_matches_reference_unsorted(
    rng: np.random.Generator,
    crop: tuple[int, int, int, int] | None,
    out_size: tuple[int, int] | None,
    factor: int,
) -> None:
    size = (128, 96)
    ev = random_events(rng, 5_000, size)
    ev = ev[rng.permutation(len(ev))]  # unsorted input is binned the same
    t0 = int(ev["t"].min()) + 3
    counts = BinCounts()
    ours = bin_events(
        ev, t0, 700, 40, size, crop=crop, output_size=out_size, downsample=factor, counts=counts
    )
    ref = reference_frames(ev, t0, 700, 40, size, crop, out_size, factor)
    np.testing.assert_array_equal(ours, ref)
    assert counts.total == len(ev)
    assert counts.binned == ref.sum()


def test_crop_downsample_resize_conserve(rng: np.random.Generator) -> None:
    size = (346, 260)
    ev = random_events(rng, 30_000, size)
    n = len(ev)
    t0, n_bins = int(ev["t"][0]), 4
    bin_us = int(ev["t"][-1] - t0) // n_bins + 1
    for kw in ({"downsample": 4}, {"output_size": (64, 64)}, {"output_size": (7, 300)}):
        frames = bin_events(ev, t0, bin_us, n_bins, size, **kw)
        assert frames.sum() == n, kw
    geom = frame_geometry(size, downsample=4)
    assert geom.output_size == (87, 65)  # ceil(346/4), ceil(260/4): partial edge blocks kept
    # crop: counted, not binned
    counts = BinCounts()
    crop = (100, 50, 128, 128)
    frames = bin_events(ev, t0, bin_us, n_bins, size, crop=crop, counts=counts)
    inside = (ev["x"] >= 100) & (ev["x"] < 228) & (ev["y"] >= 50) & (ev["y"] < 178)
    assert frames.shape == (n_bins, 2, 128, 128)
    assert frames.sum() == counts.binned == np.count_nonzero(inside)
    assert counts.cropped == n - np.count_nonzero(inside)


def test_resize_equals_downsample_when_divisible(rng: np.random.Generator) -> None:
    ev = random_events(rng, 10_000, (128, 128))
    t0 = int(ev["t"][0])
    a = bin_events(ev, t0, 5_000, 20, (128, 128), downsample=4)
    b = bin_events(ev, t0, 5_000, 20, (128, 128), output_size=(32, 32))
    np.testing.assert_array_equal(a, b)
    # and area resize is sum-pooling of the full-resolution frame over each source block
    full = bin_events(ev, t0, 5_000, 20, (128, 128))
    np.testing.assert_array_equal(a, full.reshape(20, 2, 32, 4, 32, 4).sum(axis=(3, 5)))


def test_outside_sensor_counted() -> None:
    ev = make_events([0, 1, 2, 3], [0, 4, 1, 65535], [0, 0, 3, 0], [1, 1, 0, 0])
    counts = BinCounts()
    frames = bin_events(ev, 0, 10, 1, (4, 3), counts=counts)
    assert frames.sum() == 1
    assert counts.outside_sensor == 3 and counts.binned == 1


def test_input_not_mutated_and_readonly_ok(rng: np.random.Generator) -> None:
    ev = random_events(rng, 2_000)
    raw = ev.tobytes()
    ro = np.frombuffer(raw, dtype=EVENT_DTYPE)  # read-only, as decoded from the wire
    a = bin_events(ro, 0, 1_000, 30, (128, 128), output_size=(50, 50))
    b = Binner(0, 1_000, 3, (128, 128), output_size=(50, 50))
    windows = b.push(ro) + b.flush(30_000)
    equal_count_frames(ro, 5, (128, 128), downsample=2)
    assert ro.tobytes() == raw and ev.tobytes() == raw
    np.testing.assert_array_equal(np.concatenate([w.frames for w in windows]), a)


def test_other_dtypes_are_converted(rng: np.random.Generator) -> None:
    ev = random_events(rng, 3_000)
    dv_like = np.zeros(len(ev), dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")])
    for f in "txyp":
        dv_like[f] = ev[f]
    a = bin_events(ev, 0, 2_000, 20, (128, 128))
    np.testing.assert_array_equal(bin_events(dv_like, 0, 2_000, 20, (128, 128)), a)
    np.testing.assert_array_equal(bin_events(ev[::-1][::-1], 0, 2_000, 20, (128, 128)), a)


def test_out_accumulates(rng: np.random.Generator) -> None:
    ev = random_events(rng, 4_000)
    whole = bin_events(ev, 0, 1_000, 50, (128, 128))
    out = np.zeros_like(whole)
    for part in np.array_split(ev, 7):
        assert bin_events(part, 0, 1_000, 50, (128, 128), out=out) is out
    np.testing.assert_array_equal(out, whole)
    with pytest.raises(ValueError, match="float32 array of shape"):
        bin_events(ev, 0, 1_000, 50, (128, 128), out=np.zeros((50, 2, 128, 128)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bin_us": 0}, "bin_us must be an integer >= 1, got 0"),
        ({"n_bins": -1}, "n_bins must be an integer >= 0, got -1"),
        ({"crop": (100, 0, 50, 10)}, r"crop \(100, 0, 50, 10\) reaches past the 128x128"),
        ({"downsample": 0}, "downsample must be an integer >= 1, got 0"),
        ({"downsample": 2, "output_size": (8, 8)}, "either downsample"),
        ({"output_size": (0, 8)}, "output_size width must be an integer >= 1, got 0"),
        ({"sensor_size": "bogus"}, "unknown sensor 'bogus'"),
    ],
)
def test_bad_arguments_quote_value(kwargs: dict, message: str) -> None:
    args = {"t0_us": 0, "bin_us": 10, "n_bins": 2, "sensor_size": (128, 128), **kwargs}
    with pytest.raises(ValueError, match=message):
        bin_events(make_events([1], [1], [1], [1]), **args)


def test_not_events_raises_type_error() -> None:
    with pytest.raises(TypeError, match="fields t, x, y, p"):
        bin_events(np.zeros(3), 0, 10, 1, (4, 4))


# --------------------------------------------------------------------------- tonic parity


@pytest.mark.parametrize("exact_multiple", [False, True])
def test_tonic_to_frame_parity(rng: np.random.Generator, exact_multiple: bool) -> None:
    tonic_transforms = pytest.importorskip("tonic.transforms")
    size = (40, 30)
    window = 2_500
    ev = random_events(rng, 6_000, size, t0=1_000_000)
    if exact_multiple:
        # tonic 1.7 then drops the last event (it sits on the end edge); so do we
        ev["t"][-1] = ev["t"][0] + window * ((ev["t"][-1] - ev["t"][0]) // window + 1)
    theirs = tonic_transforms.ToFrame(sensor_size=(*size, 2), time_window=window)(ev.copy())
    t0 = int(ev["t"][0])  # tonic's first edge is the first event's time
    counts = BinCounts()
    ours = bin_events(ev, t0, window, theirs.shape[0], size, counts=counts)
    assert theirs.shape == ours.shape  # [T, P, H, W]
    np.testing.assert_array_equal(ours, theirs.astype(np.float32))
    # tonic leaves out the incomplete last slice; so does binning T bins, counting them
    assert counts.after == np.count_nonzero(ev["t"] >= t0 + window * ours.shape[0])
    if exact_multiple:
        assert counts.after == 1


def test_tonic_channel_order() -> None:
    tonic_transforms = pytest.importorskip("tonic.transforms")
    ev = make_events([0, 5], [1, 2], [0, 0], [1, 0])
    theirs = tonic_transforms.ToFrame(sensor_size=(3, 1, 2), time_window=10)(ev.copy())
    assert theirs[0, CHANNEL_ON, 0, 1] == 1 and theirs[0, CHANNEL_OFF, 0, 2] == 1


# --------------------------------------------------------------------------- Binner


def _stream(rng: np.random.Generator, n: int, gap_at: int | None = None) -> np.ndarray:
    ev = random_events(rng, n, (32, 24), t0=10_123, mean_dt_us=40.0)
    if gap_at is not None:
        ev["t"][gap_at:] += 50_000
    return ev


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 600),
    cuts=st.lists(st.floats(0, 1), max_size=12),
    bin_us=st.sampled_from([100, 333, 1_000]),
    steps=st.integers(1, 5),
    gap=st.booleans(),
)
def test_binner_packetisation_invariant(
    seed: int, n: int, cuts: list[float], bin_us: int, steps: int, gap: bool
) -> None:
    rng = np.random.default_rng(seed)
    ev = _stream(rng, n, gap_at=n // 2 if gap else None)
    split = sorted({int(c * n) for c in cuts})
    b = Binner(None, bin_us, steps, (32, 24), output_size=(10, 7), max_gap_windows=None)
    windows = []
    for packet in np.split(ev, split):
        windows += b.push(packet)
    if n == 0:
        assert windows == [] and b.next_window_start_us is None
        return
    t_last = int(ev["t"][-1])
    windows += b.flush(t_last + b.window_us)  # completes the window holding t_last
    t0 = int(ev["t"][0]) // bin_us * bin_us
    whole = bin_events(ev, t0, bin_us, len(windows) * steps, (32, 24), output_size=(10, 7))
    np.testing.assert_array_equal(np.concatenate([w.frames for w in windows]), whole)
    assert whole.sum() == n == b.stats.binned == sum(w.n_events for w in windows)
    assert [w.t_start_us for w in windows] == [t0 + k * b.window_us for k in range(len(windows))]
    assert windows[-1].t_end_us > t_last >= windows[-1].t_start_us
    assert b.stats.late == b.stats.out_of_order == 0


def test_binner_t0_rounding_and_window_fields() -> None:
    b = Binner(None, 1_000, 4, (8, 8))
    assert b.push(make_events([12_345, 15_999], [0, 1], [0, 0], [1, 0])) == []
    assert b.next_window_start_us == 12_000 and b.pending_events == 2
    (w,) = b.push(make_events([16_000], [2], [0], [1]))
    assert (w.t_start_us, w.t_end_us, w.bin_us, w.n_bins, w.n_events) == (
        12_000,
        16_000,
        1_000,
        4,
        2,
    )
    assert w.frames.shape == (4, 2, 8, 8)
    assert w.frames[0, 1, 0, 0] == 1 and w.frames[3, 0, 0, 1] == 1


def test_binner_gap_emits_empty_windows() -> None:
    b = Binner(0, 100, 2, (4, 4))
    windows = b.push(make_events([10, 1_050], [0, 1], [0, 0], [0, 1]))
    # windows of 200 us: [0,200) has 1 event, then 4 empty ones, [1000,1200) unfinished
    assert [w.n_events for w in windows] == [1, 0, 0, 0, 0]
    assert [w.t_start_us for w in windows] == [0, 200, 400, 600, 800]
    assert all(not w.frames.any() for w in windows[1:])
    assert b.stats.empty_windows == 4 and b.pending_events == 1


def test_binner_flush_silent_sensor() -> None:
    b = Binner(5_000, 1_000, 3, (4, 4), downsample=2)
    assert b.flush(7_999) == []  # first window ends at 8000
    windows = b.flush(14_500)
    assert [w.t_start_us for w in windows] == [5_000, 8_000, 11_000]
    assert all(w.frames.shape == (3, 2, 2, 2) and w.n_events == 0 for w in windows)
    assert b.next_window_start_us == 14_000 and b.stats.empty_windows == 3
    assert [w.t_start_us for w in b.flush(20_000)] == [14_000, 17_000]
    # without t0, a flush before any event anchors the edges at now (rounded to bin_us)
    c = Binner(None, 1_000, 2, (4, 4))
    assert c.flush(3_456) == [] and c.next_window_start_us == 3_000
    assert [w.t_start_us for w in c.flush(7_000)] == [3_000, 5_000]


def test_binner_late_events_counted_not_fatal() -> None:
    b = Binner(0, 100, 2, (4, 4))
    b.push(make_events([10, 20], [0, 0], [0, 0], [1, 1]))
    assert len(b.flush(400)) == 2
    assert b.push(make_events([30, 390, 410], [1, 1, 1], [1, 1, 1], [0, 0, 0])) == []
    assert b.stats.late == 2 and b.pending_events == 1 and b.stats.binned == 3


def test_binner_out_of_order_packet_counted() -> None:
    b = Binner(0, 100, 1, (4, 4))
    # an unsorted packet: the packet is cut where a binary search puts t >= 100, so 50
    # still lands in window [0, 100) but 250, ahead of that window, is dropped and counted
    windows = b.push(make_events([10, 250, 50, 260], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]))
    s = b.stats
    assert (s.binned, s.out_of_order, s.late) == (3, 1, 0)
    assert [w.n_events for w in windows] == [2, 0] and b.pending_events == 1


def test_binner_long_gap_skipped_and_flagged() -> None:
    b = Binner(0, 100, 2, (4, 4), max_gap_windows=3)
    windows = b.push(make_events([10, 10_050], [0, 0], [0, 0], [1, 1]))
    assert len(windows) == 1 and b.stats.skipped_windows == 49
    windows = b.flush(10_200)
    assert windows[0].t_start_us == 10_000 and windows[0].skipped_before == 49
    assert windows[0].n_events == 1


def test_binner_windows_are_independent_arrays() -> None:
    b = Binner(0, 100, 1, (4, 4))
    w1, w2 = b.push(make_events([10, 110, 210], [0, 0, 0], [0, 0, 0], [1, 1, 1]))
    w1.frames[:] = 99
    assert w2.frames.sum() == 1
    (w3,) = b.flush(300)
    assert w3.frames.sum() == 1


def test_binner_reset_counts_discarded() -> None:
    b = Binner(0, 100, 4, (4, 4))
    b.push(make_events([10, 20, 30], [0, 0, 0], [0, 0, 0], [1, 1, 1]))
    b.reset()
    assert b.stats.discarded == 3 and b.pending_events == 0 and b.next_window_start_us is None
    b.push(make_events([1_234], [0], [0], [1]))
    assert b.next_window_start_us == 1_200


def test_binner_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="steps_per_window must be an integer >= 1, got 0"):
        Binner(0, 100, 0, (4, 4))
    with pytest.raises(ValueError, match="max_gap_windows must be an integer >= 0, got -1"):
        Binner(0, 100, 1, (4, 4), max_gap_windows=-1)


# --------------------------------------------------------------------------- equal count


def test_equal_count_bounds_follow_spikingjelly() -> None:
    assert equal_count_bounds(10, 3).tolist() == [0, 3, 6, 10]  # remainder to the last
    assert equal_count_bounds(12, 4).tolist() == [0, 3, 6, 9, 12]
    assert equal_count_bounds(2, 4).tolist() == [0, 0, 0, 0, 2]  # fewer events than frames
    assert equal_count_bounds(0, 2).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="n_frames must be an integer >= 1, got 0"):
        equal_count_bounds(5, 0)


def test_equal_count_frames(rng: np.random.Generator) -> None:
    ev = random_events(rng, 10_007, (128, 128))
    counts = BinCounts()
    frames = equal_count_frames(ev, 16, (128, 128), downsample=2, counts=counts)
    assert frames.shape == (16, 2, 64, 64)
    sums = frames.sum(axis=(1, 2, 3))
    assert sums[:-1].tolist() == [10_007 // 16] * 15 and sums[-1] == 10_007 - 15 * (10_007 // 16)
    assert counts.binned == 10_007
    # frame j is exactly the binning of events[j*d:(j+1)*d] (the same spatial mapping)
    bounds = equal_count_bounds(len(ev), 16)
    for j in (0, 7, 15):
        chunk = ev[bounds[j] : bounds[j + 1]]
        one = bin_events(chunk, int(chunk["t"][0]), 1 << 40, 1, (128, 128), downsample=2)
        np.testing.assert_array_equal(frames[j], one[0])


# --------------------------------------------------------------------------- real data


def _load_aedat4(path: Path) -> tuple[list[np.ndarray], tuple[int, int]]:
    if importlib.util.find_spec("smastream.stream.formats.aedat4") is not None:
        from smastream.stream.formats import open_events

        with open_events(path, chunk_events=10_000) as reader:
            packets = [p.copy() for p in reader]
            size = reader.sensor_size or (346, 260)
        return packets, size
    dv = pytest.importorskip("dv_processing")
    rec = dv.io.MonoCameraRecording(str(path))
    size = tuple(rec.getEventResolution())
    packets = []
    while rec.isRunning():
        batch = rec.getNextEventBatch()
        if batch is not None:
            a = batch.numpy()  # fields timestamp, x, y, polarity
            packets.append(make_events(a["timestamp"], a["x"], a["y"], a["polarity"]))
    return packets, (int(size[0]), int(size[1]))


def test_real_davis346_to_64x64(real_data: Path) -> None:
    packets, size = _load_aedat4(real_data / "aestream" / "davis.aedat4")
    assert size == (346, 260)
    ev = np.concatenate(packets)
    assert len(ev) == 117_667
    bin_us, steps = 5_000, 4
    b = Binner(None, bin_us, steps, size, output_size=(64, 64))
    windows = []
    for p in packets:
        windows += b.push(p)
    windows += b.flush(int(ev["t"][-1]) + b.window_us)
    frames = np.concatenate([w.frames for w in windows])
    assert frames.shape[1:] == (2, 64, 64)
    assert frames.sum() == len(ev) == b.stats.binned  # every event is on the sensor and in time
    t0 = int(ev["t"][0]) // bin_us * bin_us
    whole = bin_events(ev, t0, bin_us, frames.shape[0], size, output_size=(64, 64))
    np.testing.assert_array_equal(frames, whole)
    assert frames[:, CHANNEL_ON].sum() == np.count_nonzero(ev["p"])  # ON 72,363 per SOURCES.md


def test_finish_hands_on_the_unfinished_window_only_when_it_holds_events() -> None:
    """End of stream (issue 11 item 8): the last partial window is decided, an empty one
    is not; the binner then starts afresh."""
    from smastream.stream.binning import Binner
    from smastream.stream.events import empty_events

    ev = empty_events(3)
    ev["t"] = [1_000, 60_000, 130_000]
    ev["x"], ev["y"], ev["p"] = 5, 6, 1
    b = Binner(None, 50_000, 4, "dvs128")
    assert b.push(ev) == []  # 0.13 s: less than one 200 ms window
    (last,) = b.finish()
    assert last.t_start_us == 0 and last.n_events == 3
    assert last.frames.reshape(4, -1).sum(axis=1).tolist() == [1, 1, 1, 0]
    assert b.finish() == [] and b.next_window_start_us is None
