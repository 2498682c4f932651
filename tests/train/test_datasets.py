"""Training datasets: clip and stream protocols, targets, lanes, cache, recording scans."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from smastream.errors import FormatError
from smastream.stream.binning import bin_events, equal_count_frames
from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.formats import open_events, open_writer
from smastream.stream.formats.labels import GestureWindow, read_labels, write_labels
from smastream.stream.synthetic import SynthConfig, generate
from smastream.train.datasets import (
    NO_GESTURE,
    PAD_TARGET,
    ClipConfig,
    ClipDataset,
    Recording,
    StreamBatcher,
    StreamConfig,
    StreamDataset,
    check_label_span,
    find_labelled_recordings,
    make_synthetic_recordings,
    scan_recordings,
    step_targets,
)
from tests.conftest import random_events

SENSOR = (32, 24)
G = GestureWindow


def write_recording(
    path: Path, events: Events, windows: list[GestureWindow] | None, size=SENSOR
) -> Recording:
    """An AEDAT 3.1 file (the DVS Gesture format) and, if given, its label file."""
    with open_writer(path, size, format="aedat3.1") as w:
        w.write(events)
    labels = path.with_name(path.stem + "_labels.csv")
    if windows is not None:
        write_labels(labels, windows)
    return Recording(path, labels)


def read_all(path: Path) -> Events:
    with open_events(path) as r:
        parts = list(r)
    return np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)


def busy_events(rng, t_start: int, t_end: int, n: int, size=SENSOR) -> Events:
    """``n`` sorted events spread over ``[t_start, t_end]`` (first and last at the ends)."""
    ev = random_events(rng, n, size)
    t = np.sort(rng.integers(t_start, t_end + 1, n))
    t[0], t[-1] = t_start, t_end
    ev["t"] = t
    return ev


@pytest.fixture
def layout(tmp_path, rng):
    """Two recordings with a gap, overlapping windows of different classes and a repeat."""
    ev_a = busy_events(rng, 1_000, 400_000, 6_000)
    quiet = (ev_a["t"] > 150_000) & (ev_a["t"] < 230_000)  # a silent stretch: empty bins
    ev_a = ev_a[~quiet]
    win_a = [G(20_000, 90_000, 3), G(80_000, 140_000, 5), G(250_000, 330_000, 3)]
    ev_b = busy_events(rng, 7_000, 260_000, 3_000)
    win_b = [G(30_000, 100_000, 9), G(120_000, 250_000, 0)]
    folder = tmp_path / "recs"
    folder.mkdir()
    a = write_recording(folder / "a.aedat", ev_a, win_a)
    b = write_recording(folder / "b.aedat", ev_b, win_b)
    return [a, b]


# --------------------------------------------------------------------------- clip


def test_clip_frames_equal_equal_count_frames(layout, tmp_path):
    cfg = ClipConfig(n_frames=5, downsample=3, crop=(2, 1, 29, 22))
    ds = ClipDataset(layout, tmp_path / "cache", cfg, progress=False, chunk_events=700)
    assert len(ds) == 5
    k = cropped = 0
    for r, rec in enumerate(layout):
        ev = read_all(rec.events)
        for w, win in enumerate(read_labels(rec.labels)):
            sel = ev[(ev["t"] >= win.start_us) & (ev["t"] < win.end_us)]
            want = equal_count_frames(sel, 5, SENSOR, crop=(2, 1, 29, 22), downsample=3)
            frames, label = ds[k]
            assert ds.index[k] == (r, w)
            assert label == win.label
            assert frames.dtype == torch.float32 and tuple(frames.shape) == want.shape
            np.testing.assert_array_equal(frames.numpy(), want)
            inside = (sel["x"] >= 2) & (sel["x"] < 31) & (sel["y"] >= 1) & (sel["y"] < 23)
            assert frames.sum() == np.count_nonzero(inside) > 0
            cropped += len(sel) - int(np.count_nonzero(inside))
            k += 1
    assert ds.report.cropped == cropped > 0
    # the overlapping pair of recording a and its repeated class are reported, not fixed
    assert [(n, a.label, b.label) for n, a, b in ds.report.overlapping_windows] == [("a", 3, 5)]
    assert ds.report.repeated_classes == {"a": {3: 2}}
    np.testing.assert_array_equal(ds.labels, [3, 5, 3, 9, 0])


def test_clip_dataset_pickles_for_workers(layout, tmp_path):
    ds = ClipDataset(layout, tmp_path / "cache", ClipConfig(n_frames=3), progress=False)
    before = ds[2][0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[2][0].numpy(), before.numpy())
    with pytest.raises(IndexError):
        ds[len(ds)]


# --------------------------------------------------------------------------- targets


def test_step_targets_hand_layout():
    windows = [
        G(10, 30, 2),  # bins 1, 2
        G(50, 75, 4),  # overlaps the next one
        G(70, 90, 6),  # starts later: wins where both hold
        G(102, 109, 0),  # 7 us of bin 10: majority yes, bin end (109) no
        G(130, 134, 3),  # same class twice, overlapping: union is 7 us of bin 13
        G(132, 137, 3),
    ]
    end = step_targets(windows, 0, 10, 14, "end")
    n = NO_GESTURE
    np.testing.assert_array_equal(end, [n, 2, 2, n, n, 4, 4, 6, 6, n, n, n, n, n])
    maj = step_targets(windows, 0, 10, 14, "majority")
    np.testing.assert_array_equal(maj, [n, 2, 2, n, n, 4, 4, 6, 6, n, 0, n, n, 3])
    # overlap where both cover the whole bin: the later start wins, whatever the row order
    both = [G(0, 100, 5), G(20, 100, 1)]
    assert step_targets(both, 0, 10, 10, "majority")[5] == 1
    assert step_targets(both[::-1], 0, 10, 10, "end")[5] == 1
    # t0 shifts the bins
    np.testing.assert_array_equal(step_targets([G(1_000, 1_020, 7)], 995, 10, 3), [7, 7, n])
    with pytest.raises(ValueError, match="target_rule"):
        step_targets(windows, 0, 10, 5, "middle")


# --------------------------------------------------------------------------- stream


def test_stream_lanes_concatenate_to_whole_recording_binning(layout, tmp_path, rng):
    extra = busy_events(rng, 3_000, 90_000, 800)
    layout = [*layout, write_recording(tmp_path / "recs" / "c.aedat", extra, [G(5_000, 60_000, 1)])]
    cfg = StreamConfig(bin_us=7_000, chunk_steps=5, downsample=2, target_rule="end")
    ds = StreamDataset(layout, tmp_path / "cache", cfg, progress=False, chunk_events=500)
    batcher = StreamBatcher(ds, 2, shuffle=True, seed=3)
    got: dict[int, list] = {}
    lane_rec = [-1, -1]
    n_batches = 0
    for batch in batcher:
        n_batches += 1
        s, b = batch.targets.shape
        assert (s, b) == (5, 2) and batch.frames.shape[:2] == (5, 2)
        for lane in range(2):
            r, c = int(batch.recording[lane]), int(batch.chunk[lane])
            assert bool(batch.reset[lane]) == (c <= 0)
            if r < 0:
                assert not batch.mask[:, lane].any()
                continue
            if c > 0:
                assert lane_rec[lane] == r  # a lane continues its recording
            lane_rec[lane] = r
            got.setdefault(r, []).append(
                (c, batch.frames[:, lane].numpy(), batch.targets[:, lane].numpy(),
                 batch.mask[:, lane].numpy())
            )  # fmt: skip
    assert n_batches == len(batcher)
    assert sorted(got) == [0, 1, 2]
    for r, rec in enumerate(layout):
        chunks = got[r]
        assert [c for c, *_ in chunks] == list(range(ds.chunks_per_recording[r]))
        frames = np.concatenate([f for _, f, _, _ in chunks])
        targets = np.concatenate([t for _, _, t, _ in chunks])
        mask = np.concatenate([m for *_, m in chunks])
        ev = read_all(rec.events)
        t0 = int(ev["t"][0]) // 7_000 * 7_000
        n_bins = (int(ev["t"].max()) - t0) // 7_000 + 1
        assert ds.bins_per_recording[r] == n_bins and ds.t0_us[r] == t0
        assert mask.sum() == n_bins and mask[:n_bins].all()
        want = bin_events(ev, t0, 7_000, n_bins, SENSOR, downsample=2)
        np.testing.assert_array_equal(frames[:n_bins], want)
        assert not frames[n_bins:].any()
        windows = read_labels(rec.labels).windows
        np.testing.assert_array_equal(targets[:n_bins], step_targets(windows, t0, 7_000, n_bins))
        assert (targets[n_bins:] == PAD_TARGET).all()
    # the silent stretch of recording a gives empty bins with the right targets
    a_frames = np.concatenate([f for _, f, _, _ in got[0]])
    assert (a_frames.sum(axis=(1, 2, 3)) == 0).any()
    # items in recording order, same arrays as the lanes
    item = ds[1]
    assert (item.recording, item.chunk) == (0, 1)
    np.testing.assert_array_equal(item.frames.numpy(), got[0][1][1])


def test_batcher_plan_shards_and_epochs(layout, tmp_path, rng):
    recs = list(layout)
    for k in range(3):
        ev = busy_events(rng, 0, 30_000 * (k + 1), 200)
        recs.append(write_recording(tmp_path / "recs" / f"x{k}.aedat", ev, []))
    ds = StreamDataset(recs, tmp_path / "cache", StreamConfig(bin_us=10_000, chunk_steps=4),
                       progress=False)  # fmt: skip
    shards = [StreamBatcher(ds, 2, rank=k, world_size=2, seed=1) for k in range(2)]
    orders = [s.order() for s in shards]
    assert sorted(orders[0] + orders[1]) == list(range(len(recs)))
    one = StreamBatcher(ds, 3, seed=1)
    first = one.order()
    one.set_epoch(1)
    assert sorted(one.order()) == sorted(first)
    plan = one.plan()
    seen = [(r, c) for lanes in plan for r, c in lanes if r >= 0]
    assert sorted(seen) == sorted(ds.index)  # every chunk exactly once
    assert StreamBatcher(ds, 2, shuffle=False).order() == list(range(len(recs)))
    with pytest.raises(ValueError, match="batch_size"):
        StreamBatcher(ds, 0)


# --------------------------------------------------------------------------- cache


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir())


def test_cache_hit_is_identical_and_param_change_misses(layout, tmp_path):
    cache = tmp_path / "cache"
    cfg = StreamConfig(bin_us=9_000, chunk_steps=4)
    first = StreamDataset(layout, cache, cfg, progress=False)
    assert (first.report.cache_hits, first.report.cache_misses) == (0, 2)
    again = StreamDataset(layout, cache, cfg, progress=False)
    assert (again.report.cache_hits, again.report.cache_misses) == (2, 0)
    for i in range(len(first)):
        a, b = first[i], again[i]
        np.testing.assert_array_equal(a.frames.numpy(), b.frames.numpy())
        np.testing.assert_array_equal(a.targets.numpy(), b.targets.numpy())
    # chunk_steps is applied when loading: still a hit
    rechunked = StreamDataset(layout, cache, StreamConfig(bin_us=9_000, chunk_steps=7),
                              progress=False)  # fmt: skip
    assert rechunked.report.cache_hits == 2
    # any binning parameter, the target rule or the protocol misses
    for changed in (StreamConfig(bin_us=8_000), StreamConfig(bin_us=9_000, downsample=2),
                    StreamConfig(bin_us=9_000, target_rule="majority")):  # fmt: skip
        assert StreamDataset(layout, cache, changed, progress=False).report.cache_misses == 2
    assert ClipDataset(layout, cache, progress=False).report.cache_misses == 2
    assert ClipDataset(layout, cache, progress=False).report.cache_hits == 2
    assert ClipDataset(layout, cache, ClipConfig(n_frames=8), progress=False).report.cache_misses
    # a changed recording (new mtime) misses
    os.utime(layout[0].events, ns=(1, 1))
    assert StreamDataset(layout, cache, cfg, progress=False).report.cache_misses == 1
    assert not [n for n in entries(cache) if n.startswith(".")]


def test_interrupted_cache_write_leaves_no_complete_entry(layout, tmp_path):
    cache = tmp_path / "cache"
    # a recording truncated in the middle of a packet: preprocessing fails part way
    data = layout[0].events.read_bytes()
    layout[0].events.write_bytes(data[: len(data) * 2 // 3 + 5])
    with pytest.raises(FormatError) as err:
        StreamDataset(layout[:1], cache, StreamConfig(bin_us=5_000), progress=False,
                      chunk_events=300)  # fmt: skip
    assert "a.aedat" in str(err.value) and "\n" not in str(err.value)
    assert entries(cache) == []  # neither a final entry nor a temporary one
    with pytest.raises(FormatError):
        ClipDataset(layout[:1], cache, progress=False, chunk_events=300)
    assert entries(cache) == []


def test_preparation_in_processes_equals_preparation_in_one(layout, tmp_path):
    cfg = StreamConfig(bin_us=9_000, chunk_steps=4)
    serial = StreamDataset(layout, tmp_path / "one", cfg, progress=False)
    parallel = StreamDataset(layout, tmp_path / "two", cfg, progress=False, workers=2)
    assert parallel.report.cache_misses == 2 and len(parallel) == len(serial)
    for i in range(len(serial)):
        np.testing.assert_array_equal(parallel[i].frames.numpy(), serial[i].frames.numpy())
        np.testing.assert_array_equal(parallel[i].targets.numpy(), serial[i].targets.numpy())
    clips = ClipDataset(layout, tmp_path / "two", ClipConfig(n_frames=4), progress=False,
                        workers=2)  # fmt: skip
    ref = ClipDataset(layout, tmp_path / "one", ClipConfig(n_frames=4), progress=False)
    assert clips.labels.tolist() == ref.labels.tolist()
    np.testing.assert_array_equal(clips[len(clips) - 1][0].numpy(), ref[len(ref) - 1][0].numpy())
    opts = {"gesture_s": (0.4, 0.6), "gap_s": (0.2, 0.3), "format": "aedat3.1"}
    one = make_synthetic_recordings(tmp_path / "s1", [3, 4, 5], 1.5, (24, 24), **opts)
    many = make_synthetic_recordings(tmp_path / "s2", [3, 4, 5], 1.5, (24, 24), workers=3, **opts)
    for a, b in zip(one, many, strict=True):
        assert a.events.name == b.events.name
        np.testing.assert_array_equal(read_all(a.events), read_all(b.events))  # header: a date
        assert a.labels.read_text() == b.labels.read_text()


def test_an_error_in_a_preparing_process_names_the_file(layout, tmp_path):
    cache = tmp_path / "cache"
    data = layout[0].events.read_bytes()
    layout[0].events.write_bytes(data[: len(data) * 2 // 3 + 5])
    with pytest.raises(FormatError) as err:
        StreamDataset(layout, cache, StreamConfig(bin_us=5_000), progress=False,
                      chunk_events=300, workers=2)  # fmt: skip
    assert "a.aedat" in str(err.value) and "\n" not in str(err.value)
    assert err.value.path == str(layout[0].events) and err.value.offset > 0
    assert not [n for n in entries(cache) if n.startswith(("a-", "."))]  # nothing half-made
    again = pickle.loads(pickle.dumps(err.value))
    assert type(again) is FormatError
    assert (str(again), again.offset) == (str(err.value), err.value.offset)


def test_leftovers_of_a_killed_run_are_never_used(layout, tmp_path):
    cache = tmp_path / "cache"
    ds = StreamDataset(layout[:1], cache, StreamConfig(bin_us=5_000), progress=False)
    (entry,) = cache.iterdir()
    # a temporary folder of a process that died (a complete-looking copy inside)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    from smastream.train.datasets import _host_tag

    stale = cache / f".tmp-{_host_tag()}-{int(dead.stdout)}-deadbeef"
    stale.mkdir()
    for f in entry.iterdir():
        (stale / f.name).write_bytes(f.read_bytes())
    # an entry whose frames file is short (e.g. a disk filled up) is not complete
    with open(entry / "frames.f32", "r+b") as f:
        f.truncate(100)
    again = StreamDataset(layout[:1], cache, StreamConfig(bin_us=5_000), progress=False)
    assert again.report.cache_misses == 1
    assert entries(cache) == [entry.name]
    np.testing.assert_array_equal(again[0].frames.numpy(), ds[0].frames.numpy())
    meta = json.loads((entry / "meta.json").read_text())
    assert (entry / "frames.f32").stat().st_size == 4 * int(np.prod(meta["shape"]))


# --------------------------------------------------------------------------- scans


def test_missing_label_file_is_reported(layout, tmp_path, rng, caplog):
    folder = layout[0].events.parent
    write_recording(folder / "nolabels.aedat", busy_events(rng, 0, 10_000, 50), None)
    (folder / "README.txt").write_text("not a recording")
    scan = scan_recordings(folder)
    assert [r.name for r in scan.recordings] == ["a", "b"]
    assert [p.name for p in scan.unlabelled] == ["nolabels.aedat"]
    assert [p.name for p in scan.other_files] == ["README.txt"]
    with caplog.at_level(logging.WARNING, logger="smastream.train.datasets"):
        found = find_labelled_recordings(folder)
    assert found == scan.recordings
    assert "nolabels.aedat" in caplog.text and "1 event file" in caplog.text


@pytest.mark.parametrize(
    ("window", "where"), [(G(500, 9_000, 1), "starts before"), (G(8_000, 12_002, 1), "ends after")]
)
def test_label_window_outside_recording_is_one_line_error(tmp_path, rng, window, where):
    ev = busy_events(rng, 1_000, 12_000, 300)
    rec = write_recording(tmp_path / "short.aedat", ev, [G(2_000, 3_000, 0), window])
    with pytest.raises(FormatError) as err:
        find_labelled_recordings(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "short.aedat" in msg and where in msg
    # inside the span (end 12_001 means up to t = 12_000, the last event): fine
    write_labels(rec.labels, [G(1_000, 12_001, 2)])
    check_label_span(rec)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_recordings_flow_through_files(tmp_path, caplog):
    opts = {"gesture_s": (0.4, 0.6), "gap_s": (0.2, 0.3)}
    with pytest.raises(ValueError, match="reserved"):
        make_synthetic_recordings(tmp_path, [3, 7], 1.0, (24, 24))
    recs = make_synthetic_recordings(tmp_path, [3, 4], 2.0, (24, 24), format="aedat3.1", **opts)
    assert len(recs) == 2 and all(r.events.is_file() and r.labels.is_file() for r in recs)
    assert find_labelled_recordings(tmp_path) == recs  # labels inside the span
    ev, windows = generate(SynthConfig(sensor_size=(24, 24), seconds=2.0, seed=3, **opts))
    got = read_all(recs[0].events)
    np.testing.assert_array_equal(got, ev)
    assert read_labels(recs[0].labels).windows == windows
    # same options: reused, not rewritten; other options: another file
    mtime = recs[0].events.stat().st_mtime_ns
    again = make_synthetic_recordings(tmp_path, [3], 2.0, (24, 24), format="aedat3.1", **opts)
    assert again[0] == recs[0] and recs[0].events.stat().st_mtime_ns == mtime
    other = make_synthetic_recordings(tmp_path, [3], 1.0, (24, 24), format="aedat3.1", **opts)
    assert other[0].events != recs[0].events
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]
    ds = ClipDataset(recs, tmp_path / "cache", ClipConfig(n_frames=4), progress=False)
    assert len(ds) == sum(len(read_labels(r.labels)) for r in recs) > 0


# --------------------------------------------------------------------------- augmentation


def test_augment_events_is_seeded_inside_the_sensor_and_not_flipped(rng) -> None:
    from smastream.train.augment import AugmentSpec, augment_events

    size = (128, 128)
    ev = busy_events(rng, 10_000, 2_000_000, 40_000, size)
    ev["x"] = rng.integers(0, 40, len(ev))  # everything on the left third of the image
    a, sa = augment_events(ev.copy(), size, 5)
    b, sb = augment_events(ev.copy(), size, 5)
    c, sc = augment_events(ev.copy(), size, 6)
    assert sa == sb and np.array_equal(a, b)
    assert not np.array_equal(a, c)
    for out, s in ((a, sa), (c, sc)):
        assert out.dtype == EVENT_DTYPE and len(out) > 0.5 * len(ev)
        assert np.all(np.diff(out["t"]) >= 0) and out["t"][0] >= ev["t"][0]
        assert out["x"].max() < size[0] and out["y"].max() < size[1]
        assert set(np.unique(out["p"])) <= {0, 1}
        assert 0.8 <= s <= 1.25
        span = (out["t"][-1] - ev["t"][0]) / (ev["t"][-1] - ev["t"][0])
        assert abs(span - s) < 0.01  # the time scale it reports is the one applied
        # no left-right flip: the bulk stays left (noise is at most 5 %, shift 10 px)
        assert np.mean(out["x"] < 64) > 0.9
    # the global legacy generator is left as it was
    np.random.seed(123)  # noqa: NPY002
    before = np.random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    augment_events(ev.copy(), size, 7, AugmentSpec())
    assert np.random.random() == before  # noqa: NPY002


def test_augmented_stream_dataset_scales_labels_and_keeps_plain_cache(tmp_path, rng) -> None:
    import dataclasses
    import json as _json

    ev = busy_events(rng, 0, 4_000_000, 30_000, (32, 24))
    windows = [G(1_000_000, 2_000_000, 4), G(2_500_000, 3_500_000, 7)]
    rec = write_recording(tmp_path / "a.aedat", ev, windows)
    cfg = StreamConfig(bin_us=50_000, chunk_steps=8, sensor_size=SENSOR)
    plain = StreamDataset([rec], tmp_path / "cache", cfg, progress=False)
    aug = StreamDataset(
        [rec], tmp_path / "cache", dataclasses.replace(cfg, augment_seed=3), progress=False
    )
    again = StreamDataset(
        [rec], tmp_path / "cache", dataclasses.replace(cfg, augment_seed=3), progress=False
    )
    assert again.report.cache_hits == 1  # one cache entry per seed
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 2
    meta = [_json.loads((tmp_path / "cache" / e / "meta.json").read_text()) for e in entries]
    note = next(m["augment"] for m in meta if "augment" in m)
    scale = note["time_scale"]
    assert note["events_out"] != note["events_in"]
    # the label windows moved with the time scale: class 4 starts near 1 s * scale
    t = aug.targets(0)
    first4 = int(np.argmax(t == 4)) * 50_000
    assert abs(first4 - 1_000_000 * scale) <= 50_000
    assert abs(aug.bins_per_recording[0] - plain.bins_per_recording[0] * scale) <= 2
    assert not np.array_equal(np.asarray(plain._frames[0])[:40], np.asarray(aug._frames[0])[:40])
    # the un-augmented entry's key is the one older code computed (no augment fields)
    from smastream.train.datasets import _params

    assert "augment_seed" not in _params(cfg) and "augment_version" in _params(
        dataclasses.replace(cfg, augment_seed=3)
    )
