"""The synthetic gesture generator: determinism, schedule, sensor model, streaming, CLI."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from smastream.commands import synth as synth_cmd
from smastream.gestures import NUM_CLASSES
from smastream.stream.events import EVENT_DTYPE, Events, sensor_size, validate_events
from smastream.stream.formats import open_events
from smastream.stream.formats.labels import GestureWindow, labels_path_for, read_labels
from smastream.stream.synthetic import (
    SCENES,
    SHOULDER_X,
    SHOULDER_Y,
    SynthConfig,
    SyntheticGestures,
    generate,
)

# Short recordings: 3 gestures of ~1 s on a small sensor keep every test well under a second
# once numba has compiled (cached on disk after the first run).
SMALL = SynthConfig(
    sensor_size=(64, 48),
    seconds=4.5,
    seed=11,
    gesture_s=(0.9, 1.1),
    gap_s=(0.3, 0.4),
    noise_hz=0.1,
    n_hot_pixels=1,
    no_gesture_share=0.0,  # gestures and still gaps only (scenes: test_scenes_*)
)


@pytest.fixture(scope="module")
def small() -> tuple[Events, list[GestureWindow]]:
    return generate(SMALL)


def _inside(events: Events, windows: list[GestureWindow], after_us: int = 200_000) -> np.ndarray:
    """Events inside a window or up to ``after_us`` after it (pixel latency: an event can
    come a few ms, in dark pixels tens of ms, after the change that caused it)."""
    inside = np.zeros(len(events), dtype=bool)
    for w in windows:
        inside |= (events["t"] >= w.start_us) & (events["t"] < w.end_us + after_us)
    return inside


# -- configuration and schedule -------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seconds", 0.0),
        ("sensor_size", (8, 100)),
        ("gesture_s", (3.0, 2.0)),
        ("gap_s", (-1.0, 1.0)),
        ("threshold_on", 0.0),
        ("refractory_us", 0),
        ("noise_hz", -0.1),
        ("n_hot_pixels", -1),
        ("render_hz", 10.0),
    ],
)
def test_bad_config_is_rejected_quoting_the_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SynthConfig(**{field: value})


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ((("scratching", 2.0),), "unknown scene 'scratching'"),
        ((("scratch", -1.0),), "scratch factor must be >= 0"),
        ((("scratch", math.inf),), "scratch factor must be >= 0"),
        (tuple((name, 0.0) for name in SCENES), "every scene's weight is 0"),
    ],
)
def test_bad_scene_weights_are_rejected(
    weights: tuple[tuple[str, float], ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SynthConfig(scene_weights=weights)


def _scene_names(cfg: SynthConfig) -> list[str]:
    return [s.name for s in SyntheticGestures(cfg).scenes if s.name != "idle"]


def test_scene_weights_change_the_mix_and_ones_change_nothing() -> None:
    base = SynthConfig(seconds=600.0, seed=3)
    standard = _scene_names(base)
    assert len(set(standard)) >= 8  # the standard mix draws most scenes
    ones = SynthConfig(seconds=600.0, seed=3, scene_weights=tuple((n, 1.0) for n in SCENES))
    assert _scene_names(ones) == standard  # factors of 1: the very same draws
    only = SynthConfig(
        seconds=600.0,
        seed=3,
        scene_weights=tuple((n, 0.0) for n in SCENES if n not in ("scratch", "reach_object")),
    )
    drawn = _scene_names(only)
    assert drawn and set(drawn) == {"scratch", "reach_object"}
    more = _scene_names(SynthConfig(seconds=600.0, seed=3, scene_weights=(("scratch", 4.0),)))
    assert more.count("scratch") > 2 * standard.count("scratch")


def test_schedule_has_every_class_in_shuffled_rounds_with_gaps() -> None:
    cfg = SynthConfig(
        seconds=120.0, seed=5, gesture_s=(2.0, 6.0), gap_s=(0.5, 1.5), t0_us=777,
        no_gesture_share=0.0,  # no scenes: gestures separated by still gaps only
    )  # fmt: skip
    labels = SyntheticGestures(cfg).labels
    assert {w.label for w in labels} == set(range(NUM_CLASSES))
    first_round = [w.label for w in labels[:NUM_CLASSES]]
    assert sorted(first_round) == list(range(NUM_CLASSES))
    assert first_round != list(range(NUM_CLASSES))
    assert labels[0].start_us >= 777 + 500_000
    assert labels[-1].end_us <= 777 + cfg.duration_us
    for w in labels:
        assert 2_000_000 <= w.duration_us <= 6_000_000
        assert (w.start_us - 777) % 1000 == 0 and w.duration_us % 1000 == 0
    for a, b in itertools.pairwise(labels):
        assert 500_000 <= b.start_us - a.end_us <= 1_500_000


def test_seeds_change_order_and_person_not_the_sensor_size_schedule() -> None:
    a = SyntheticGestures(SynthConfig(seconds=60.0, seed=1))
    b = SyntheticGestures(SynthConfig(seconds=60.0, seed=2))
    c = SyntheticGestures(SynthConfig(sensor_size=(346, 260), seconds=60.0, seed=1))
    assert [w.label for w in a.labels] != [w.label for w in b.labels]
    assert a.labels == c.labels  # the schedule depends on the seed only
    caps_a, caps_b = a.capsules_at([0]), b.capsules_at([0])
    assert not np.allclose(caps_a, caps_b)  # person placed and sized differently


def _hand_angle(gen: SyntheticGestures, window: GestureWindow, right: bool) -> np.ndarray:
    """Unwrapped angle of a hand around its shoulder during the steady part of a gesture."""
    t = np.arange(window.start_us + 400_000, window.end_us - 400_000, 5_000) - gen.config.t0_us
    caps = gen.capsules_at(t)
    hand = caps[:, 8 if right else 11, 0:2]
    unit = gen._person.unit_px
    neck = np.array([gen._person.neck_x, gen._person.neck_y])
    shoulder = neck + unit * np.array([-SHOULDER_X if right else SHOULDER_X, SHOULDER_Y])
    d = hand - shoulder
    return np.unwrap(np.arctan2(d[:, 1], d[:, 0]))


def test_gestures_move_the_named_arm_in_the_named_sense() -> None:
    gen = SyntheticGestures(SynthConfig(seconds=120.0, seed=3))
    neck_x = gen._person.neck_x
    seen = set()
    for w in gen.labels:
        t = np.arange(w.start_us, w.end_us, 10_000)
        caps = gen.capsules_at(t)
        travel_r = np.abs(np.diff(caps[:, 8, 0:2], axis=0)).sum()
        travel_l = np.abs(np.diff(caps[:, 11, 0:2], axis=0)).sum()
        if w.label in (1, 3, 4):  # the subject's right arm only, on the image's left
            assert travel_r > 20 * travel_l
            assert caps[:, 8, 0].mean() < neck_x
        if w.label in (2, 5, 6):
            assert travel_l > 20 * travel_r
            assert caps[:, 11, 0].mean() > neck_x
        if w.label in (3, 4, 5, 6):  # clockwise in the image (y down) = angle increasing
            angle = _hand_angle(gen, w, right=w.label in (3, 4))
            turns = (angle[-1] - angle[0]) / (2 * math.pi)
            assert (turns > 0.5) if w.label in (3, 5) else (turns < -0.5), (w, turns)
        if w.label in (0, 7, 8):  # both hands move
            assert min(travel_r, travel_l) > 0.3 * max(travel_r, travel_l)
        seen.add(w.label)
    assert seen >= {0, 1, 2, 3, 4, 5, 6, 7, 8}


def test_person_is_still_between_gestures() -> None:
    gen = SyntheticGestures(SynthConfig(seconds=20.0, seed=4, no_gesture_share=0.0))
    labels = gen.labels
    gaps = [(0, labels[0].start_us)] + [
        (a.end_us, b.start_us) for a, b in itertools.pairwise(labels)
    ]
    for a, b in gaps:
        caps = gen.capsules_at(np.linspace(a, b - 1, 50).astype(np.int64))
        assert np.array_equal(caps, np.broadcast_to(caps[0], caps.shape))


# -- events ---------------------------------------------------------------------------


def test_same_seed_same_events_other_seed_other_events(
    small: tuple[Events, list[GestureWindow]],
) -> None:
    events, labels = small
    again, labels_again = generate(SMALL)
    assert labels_again == labels
    assert again.dtype == EVENT_DTYPE
    assert np.array_equal(again, events)
    other, other_labels = generate(SynthConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    assert other_labels != labels
    assert len(other) != len(events) or not np.array_equal(other, events)


@pytest.mark.parametrize("sensor", ["37x50", "dvs128", "davis346"])
def test_events_are_sorted_and_on_the_sensor(sensor: str) -> None:
    size = sensor_size(sensor)
    cfg = SynthConfig(
        sensor_size=size, seconds=1.6, seed=2, gesture_s=(1.0, 1.0), gap_s=(0.3, 0.3),
        no_gesture_share=0.0,
    )  # fmt: skip
    events, labels = generate(cfg)
    assert len(labels) == 1
    report = validate_events(events, size)
    assert report.ok, str(report)
    assert len(events) > 1000
    assert int(events["t"][0]) >= 0 and int(events["t"][-1]) < cfg.duration_us


def test_events_concentrate_in_gestures_with_both_polarities(
    small: tuple[Events, list[GestureWindow]],
) -> None:
    events, labels = small
    assert len(labels) == 3
    inside = _inside(events, labels)
    t_in = sum(w.duration_us for w in labels) / 1e6
    rate_in = inside.sum() / t_in
    rate_out = (~inside).sum() / (SMALL.seconds - t_in)
    # The calibrated sensor is sparse (real-dvs128 spec): 5x, not the 10x of a dense one.
    assert rate_in > 5 * rate_out, (rate_in, rate_out)
    on = events["p"][inside].mean()
    assert 0.3 < on < 0.7
    # Every gesture, not just some, produces events.
    for w in labels:
        n = np.count_nonzero((events["t"] >= w.start_us) & (events["t"] < w.end_us))
        assert n / (w.duration_us / 1e6) > 5 * rate_out


def test_idle_sensor_without_noise_is_silent_and_noise_rate_is_as_configured() -> None:
    base = dict(
        sensor_size=(64, 48), seconds=3.0, seed=6, gesture_s=(1.0, 1.0), no_gesture_share=0.0
    )
    quiet, labels = generate(SynthConfig(**base, noise_hz=0.0, n_hot_pixels=0))
    assert len(labels) == 1
    assert np.count_nonzero(~_inside(quiet, labels)) == 0
    assert np.count_nonzero(_inside(quiet, labels)) > 300  # one 1 s gesture, sparse sensor

    noisy, _ = generate(SynthConfig(**base, noise_hz=5.0, n_hot_pixels=2, hot_pixel_hz=(400, 400)))
    gap = noisy[~_inside(noisy, labels)]
    gap_s = 3.0 - labels[0].duration_us / 1e6
    pixel = gap["y"].astype(np.int64) * 64 + gap["x"]
    counts = np.bincount(pixel, minlength=64 * 48)
    hot = np.argsort(counts)[-2:]
    hot_rate = counts[hot] / gap_s
    assert np.all((hot_rate > 250) & (hot_rate < 450)), hot_rate  # 400 Hz less refractory
    rest = np.delete(counts, hot).sum() / gap_s / (64 * 48 - 2)
    assert 4.0 < rest < 6.0, rest


@pytest.mark.parametrize("refractory_us", [250, 3000])
def test_refractory_period_holds_for_every_pixel_hot_ones_included(refractory_us: int) -> None:
    cfg = SynthConfig(
        **{**SMALL.__dict__, "refractory_us": refractory_us, "noise_hz": 2.0,
           "n_hot_pixels": 3, "hot_pixel_hz": (2000.0, 2000.0)}
    )  # fmt: skip
    events, labels = generate(cfg)
    w = cfg.sensor_size[0]
    pixel = events["y"].astype(np.int64) * w + events["x"]
    order = np.lexsort((events["t"], pixel))
    same = pixel[order][1:] == pixel[order][:-1]
    dt = np.diff(events["t"][order])[same]
    assert dt.min() >= refractory_us
    if refractory_us == 3000:  # held-back events fire later, inside the gestures still
        assert np.count_nonzero(_inside(events, labels)) > 1000


@pytest.mark.parametrize("packet_us", [1000, 7777, 10_000_000])
def test_packets_concatenate_to_generate(
    packet_us: int, small: tuple[Events, list[GestureWindow]]
) -> None:
    events, _ = small
    t0 = 1_000_000_000
    gen = SyntheticGestures(SynthConfig(**{**SMALL.__dict__, "t0_us": t0}))
    packets = list(gen.packets(packet_us=packet_us))
    assert len(packets) == math.ceil(SMALL.duration_us / packet_us)
    for k, p in enumerate(packets):
        assert p.dtype == EVENT_DTYPE
        if len(p):
            assert t0 + k * packet_us <= p["t"][0] and p["t"][-1] < t0 + (k + 1) * packet_us
    joined = np.concatenate(packets)
    assert np.array_equal(joined["t"] - t0, events["t"])
    assert np.array_equal(joined[["x", "y", "p"]], events[["x", "y", "p"]])
    assert gen.labels[0].start_us == t0 + generate(SMALL)[1][0].start_us


def test_packets_rejects_a_bad_size() -> None:
    with pytest.raises(ValueError, match="packet_us"):
        next(SyntheticGestures(SMALL).packets(packet_us=0))


# -- the command ----------------------------------------------------------------------


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    synth_cmd.add_arguments(parser)
    return synth_cmd.run(parser.parse_args(argv))


_SMALL_ARGS = [
    "--sensor", "64x48", "--seconds", "4.5", "--seed", "11",
    "--gesture-s", "0.9", "1.1", "--gap-s", "0.3", "0.4", "--noise-hz", "0.1",
    "--hot-pixels", "1", "--no-gesture-share", "0", "--no-progress",
]  # fmt: skip

_FORMATS = ["aedat3.1"]
if importlib.util.find_spec("smastream.stream.formats.aedat4") is not None:
    _FORMATS.append("aedat4")


@pytest.mark.parametrize("fmt", _FORMATS)
def test_cli_writes_events_and_labels_that_read_back(
    fmt: str, tmp_path: Path, small: tuple[Events, list[GestureWindow]]
) -> None:
    events, labels = small
    out = tmp_path / ("rec.aedat4" if fmt == "aedat4" else "rec.aedat")
    assert _run_cli([str(out), "--format", fmt, *_SMALL_ARGS]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([out.name, "rec_labels.csv", "rec_scenes.csv"])
    assert read_labels(labels_path_for(out)).windows == labels
    from smastream.stream.formats.labels import read_scenes, scenes_path_for

    assert read_scenes(scenes_path_for(out)) == SyntheticGestures(SMALL).scenes
    with open_events(out) as reader:
        assert reader.sensor_size == (64, 48)
        back = np.concatenate(list(reader))
    assert np.array_equal(back, events)


def test_cli_interrupted_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_packets = SyntheticGestures.packets

    def interrupted(self: SyntheticGestures, packet_us: int = 1000) -> Iterator[Events]:
        for k, p in enumerate(real_packets(self, packet_us)):
            if k == 3:
                raise KeyboardInterrupt
            yield p

    monkeypatch.setattr(SyntheticGestures, "packets", interrupted)
    out = tmp_path / "rec.aedat"
    with pytest.raises(KeyboardInterrupt):
        _run_cli([str(out), "--format", "aedat3.1", *_SMALL_ARGS])
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_option_is_a_one_line_error(tmp_path: Path) -> None:
    from smastream.errors import SmastreamError

    with pytest.raises(SmastreamError, match="refractory_us"):
        _run_cli([str(tmp_path / "x.aedat"), "--refractory-us", "0", "--format", "aedat3.1"])
    with pytest.raises(SystemExit):
        _run_cli([str(tmp_path / "x.aedat"), "--sensor", "banana"])
    assert list(tmp_path.iterdir()) == []
