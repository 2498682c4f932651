"""Evaluation: exact numbers on a hand-built case; checkpoint and ONNX agree end to end."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from smastream.errors import SmastreamError
from smastream.stream.decision import DecisionConfig, stream_metrics
from smastream.stream.formats.labels import GestureWindow
from smastream.train.config import TrainConfig
from smastream.train.evaluate import (
    TUNING_GRID,
    TUNING_SEEDS,
    EvalModel,
    EvalOptions,
    decide_stream,
    evaluate,
    evaluate_stream_recording,
    percentile_or_none,
    summarize,
)
from smastream.train.loop import class_names_for, train

NAMES = class_names_for(12)
NG = 11  # the "no gesture" output
# Decisions = each step's own argmax: no smoothing, no hysteresis, no quiet test.
RAW = DecisionConfig(
    smooth_ms=0, min_confidence=0.5, quiet_events_per_s=0, hold_steps=1, switch_margin=0,
    idle_reset_s=None,
)  # fmt: skip


class ScriptedRuntime:
    """A deterministic runtime that plays back per-step classes, one window per call."""

    def __init__(self, classes: list[int], n_classes: int = 12) -> None:
        self.classes = classes
        self.n_classes = n_classes
        self.pos = 0
        self.resets = 0
        self.windows: list[npt.NDArray[np.float32]] = []

    def reset(self) -> None:
        self.resets += 1

    def step(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.windows.append(frames.copy())
        out = np.zeros((frames.shape[0], self.n_classes), dtype=np.float32)
        for i in range(frames.shape[0]):
            k = self.pos + i
            out[i, self.classes[k] if k < len(self.classes) else NG] = 10.0
        self.pos += frames.shape[0]
        return out


def _frames(n: int, events: float = 1.0) -> npt.NDArray[np.float32]:
    f = np.zeros((n, 2, 4, 4), dtype=np.float32)
    f[:, 1, 0, 0] = events
    return f


def test_hand_built_stream_case_exact_numbers() -> None:
    # 10 bins of 1 ms; S = 4 (the last window is padded with 2 empty bins).
    classes = [NG, NG, NG, NG, 2, 2, 2, 2, NG, 5]
    rt = ScriptedRuntime(classes)
    pairs, resets = decide_stream(rt, _frames(10), 0, 1000, 4, NAMES, RAW)
    assert [t for t, _ in pairs] == [1000 * (i + 1) for i in range(10)]
    assert [lab for _, lab in pairs] == [None] * 4 + [2] * 4 + [None, 5]  # class 11 -> None
    assert len(rt.windows) == 3 and rt.windows[-1][2:].sum() == 0  # padding is empty
    assert resets == 0 and rt.resets == 1  # reset once at the start only

    window = GestureWindow(3500, 8000, 2)  # steps ending 4000..8000 are inside
    model = EvalModel(Path("scripted"), ScriptedRuntime(classes), NAMES, (4, 4), 1000, 4, 4, None)
    targets = np.array([NG, NG, NG, 2, 2, 2, 2, 2, NG, NG])
    res = evaluate_stream_recording(model, "r", _frames(10), targets, [window], 0, RAW)
    m = res.metrics
    assert (m.n_window_steps, m.n_correct_steps) == (5, 4)
    assert m.onset_ms == (1.5,)  # first correct decision at 5000 us, window starts at 3500
    assert (m.n_idle_steps, m.n_false_idle) == (5, 1)
    assert res.confusion[2, 2] == 4 and res.confusion[2, NG] == 1
    assert res.confusion[NG, 5] == 1 and res.confusion[NG, NG] == 4
    s = summarize([res], class_names=NAMES)
    assert s["stream_accuracy"] == 0.8
    assert s["onset_to_decision_ms_p50"] == 1.5 and s["onset_to_decision_ms_p90"] == 1.5
    assert s["false_idle_decisions"] == 1 and s["false_idle_rate"] == 0.2
    assert s["false_idle_per_min"] == pytest.approx(1 / (5 * 1e-3 / 60))
    row = s["per_class"][2]
    assert (row["windows"], row["window_steps"], row["stream_accuracy"]) == (1, 5, 0.8)
    assert s["per_class"][5]["windows"] == 0 and s["per_class"][5]["stream_accuracy"] is None
    assert s["clip_accuracy"] is None
    json.dumps(s)  # every value is plain JSON


def test_same_numbers_as_stream_metrics_directly() -> None:
    rng = np.random.default_rng(0)
    classes = [int(c) for c in rng.integers(0, 12, size=37)]
    windows = [GestureWindow(2000, 9000, 1), GestureWindow(15000, 30000, 4)]
    pairs, _ = decide_stream(ScriptedRuntime(classes), _frames(37), 0, 1000, 4, NAMES, RAW)
    want = stream_metrics([(t, None if c == NG else c) for t, c in zip(
        [1000 * (i + 1) for i in range(37)], classes, strict=True)], windows)  # fmt: skip
    assert stream_metrics(pairs, windows) == want


def test_idle_timeout_resets_the_runtime() -> None:
    quiet = DecisionConfig(
        smooth_ms=0, quiet_events_per_s=1e12, hold_steps=1, idle_reset_s=0.003
    )  # always quiet: a reset is asked after 3 ms, once per quiet spell
    rt = ScriptedRuntime([NG] * 12)
    pairs, resets = decide_stream(rt, _frames(12), 0, 1000, 4, NAMES, quiet)
    assert resets == 1 and rt.resets == 2
    assert all(lab is None for _, lab in pairs)


def test_percentiles_count_missed_windows_as_infinitely_late() -> None:
    assert percentile_or_none([100.0, 200.0, math.inf], 50) == 200.0
    assert percentile_or_none([100.0, 200.0, math.inf], 90) is None
    assert percentile_or_none([100.0, 300.0], 50) == 200.0
    assert percentile_or_none([], 50) is None


def test_clip_summary_exact() -> None:
    s = summarize([], clip_labels=[0, 1, 1, 3], clip_preds=[0, 1, 0, 2])
    assert s["clip_accuracy"] == 0.5 and s["clips"] == 4
    assert s["clip_confusion"][1][0] == 1 and s["clip_confusion"][3][2] == 1
    assert s["per_class"][1]["clip_accuracy"] == 0.5
    assert s["per_class"][3]["clip_accuracy"] == 0.0
    assert s["stream_accuracy"] is None


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny stream-protocol checkpoint and its ONNX export."""
    tmp = tmp_path_factory.mktemp("eval")
    cfg = TrainConfig(
        out=str(tmp / "run"), cache_dir=str(tmp / "cache"), width=1 / 32, input_size=32,
        epochs=1, batch_size=2, synth_recordings=2, synth_val_recordings=1, synth_seconds=6.0,
        chunk_steps=8, max_batches=2, backend="onnx", progress=False, device="cpu", threads=1,
    )  # fmt: skip
    result = train(cfg)
    onnx_path = Path(cfg.out) / "model.onnx"
    assert onnx_path in result.exported and onnx_path.with_suffix(".json").is_file()
    val = sorted((tmp / "cache" / "synthetic").glob("synth-seed11000-*.aedat4"))
    assert len(val) == 1
    return result.last_checkpoint, val[0]


def test_checkpoint_and_onnx_give_the_same_metrics(trained: tuple[Path, Path]) -> None:
    ckpt, recording = trained
    onnx_path = ckpt.parent / "model.onnx"
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["class_names"][-1] == "no gesture" and len(meta["class_names"]) == 12
    opts = EvalOptions(decision=RAW)
    a = evaluate(ckpt, str(recording), opts)
    b = evaluate(onnx_path, str(recording), opts)
    for key in ("stream_accuracy", "clip_accuracy", "false_idle_decisions", "windows",
                "onset_to_decision_ms_p50", "stream_confusion", "clip_confusion"):  # fmt: skip
        assert a[key] == b[key], key
    assert a["windows"] >= 1 and a["clips"] == a["windows"]
    assert sum(map(sum, a["stream_confusion"])) == a["window_steps"] + a["idle_steps"]


def test_export_keeps_no_path_of_the_training_machine(trained: tuple[Path, Path]) -> None:
    ckpt, _ = trained
    onnx_path = ckpt.parent / "model.onnx"
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    kept = meta["checkpoint_extra"]["train_config"]
    assert kept["protocol"] == "stream" and kept["synth_recordings"] == 2
    assert not {"out", "cache_dir", "device", "threads"} & set(kept)
    tmp = str(ckpt.parent.parent)
    assert tmp not in onnx_path.with_suffix(".json").read_text()
    assert tmp.encode() not in onnx_path.read_bytes()


def test_evaluate_command_json(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from smastream.commands import evaluate as cmd

    ckpt, recording = trained
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    png = tmp_path / "confusion.png"
    args = parser.parse_args(
        [str(ckpt.parent / "model.onnx"), "--data", str(recording), "--json",
         "--confusion-png", str(png)]
    )  # fmt: skip
    assert cmd.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("clip_accuracy", "stream_accuracy", "onset_to_decision_ms_p50",
                "onset_to_decision_ms_p90", "false_idle_decisions", "per_class"):  # fmt: skip
        assert key in out
    assert png.is_file() and png.stat().st_size > 0


def test_errors_name_the_file(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, recording = trained
    with pytest.raises(SmastreamError, match=r"nothing\.onnx"):
        evaluate(tmp_path / "nothing.onnx", str(recording))
    with pytest.raises(SmastreamError, match=r"missing\.aedat4"):
        evaluate(ckpt, str(tmp_path / "missing.aedat4"))
    rec = tmp_path / recording.name
    rec.write_bytes(recording.read_bytes())
    labels = rec.with_name(rec.stem + "_labels.csv")
    labels.write_text("class,startTime_usec,endTime_usec\n3,1000000,99000000\n")
    with pytest.raises(SmastreamError, match=rec.stem) as err:
        evaluate(ckpt, str(rec))
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(SmastreamError, match=r"bad\.onnx"):
        evaluate(bad, str(recording))


def test_clip_of_frames_that_do_not_fill_whole_calls_is_a_one_line_error(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export at S = 3 cannot run the checkpoint's 16-frame clips in whole calls:
    ``smastream evaluate`` says so on one line, naming the model, before any work."""
    from smastream.cli import main

    ckpt, recording = trained
    s3 = tmp_path / "s3.onnx"
    assert main(["export", str(ckpt), "--out", str(s3), "--steps-per-window", "3"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(s3), "--data", str(recording)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(s3) in err and "16 frames" in err and "S=3" in err and "--no-clip" in err
    # the way out it names works: streaming alone runs at S = 3
    assert main(["evaluate", str(s3), "--data", str(recording), "--no-clip", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps_per_window"] == 3


def test_shipped_demo_model_holds_its_measured_level_on_the_held_out_demo_recording() -> None:
    """The README's evaluation command on the demo recording (seed 7, never used in training:
    seeds 5000-5095, validation 15000-15001, tuning 12000-12023).

    A regression guard at the level the shipped model measured with its decision defaults
    (86.9 % of in-window steps, 10 of 10 gestures, onset p50 348 ms, a gesture on 7.3 % of
    idle steps and 10.6 % of the no-gesture scenes' steps: reaching for an object, 26 %),
    not issue 6's targets (>= 90 %) nor issue 13's 3 % in no-gesture scenes, which this
    recording misses (README, "Demo model")."""
    repo = Path(__file__).resolve().parents[2]
    out = evaluate(
        repo / "engine" / "models" / "demo.onnx",
        str(repo / "recordings" / "demo.aedat4"),
        EvalOptions(clip=False),
    )
    assert out["windows"] == 10 and out["windows_detected"] == 10
    assert out["stream_accuracy"] >= 0.84
    assert out["onset_to_decision_ms_p50"] <= 360
    assert out["false_idle_rate"] <= 0.08  # nobody gestures: "no gesture" is shown
    assert out["scene_gesture_rate"] <= 0.13  # the demo's _scenes.csv is read
    assert out["decision"] == vars(DecisionConfig())  # the live defaults


def test_decision_defaults_are_the_point_tuned_in_the_model_card() -> None:
    """``DecisionConfig``'s defaults are what the tuner chose for the shipped model, as its
    card (``engine/models/demo.json``) records, under the rule the tuner runs today."""
    repo = Path(__file__).resolve().parents[2]
    tuning = json.loads((repo / "engine" / "models" / "demo.json").read_text())[
        "decision_defaults_tuning"
    ]
    chosen = tuning["chosen"]
    assert set(chosen) == set(TUNING_GRID)
    assert {k: getattr(DecisionConfig(), k) for k in chosen} == chosen
    assert tuning["grid"] == {k: list(v) for k, v in TUNING_GRID.items()}
    assert "beyond 200 ms after a gesture's end" in tuning["rule"]
    assert tuning["data"].startswith(f"{len(TUNING_SEEDS)} synthetic recordings")


def test_synthetic_evaluation_data_is_in_no_training_or_validation_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smastream.stream.formats.labels import read_scenes, scenes_path_for
    from smastream.stream.synthetic import DEMO_SEEDS
    from smastream.train import data
    from smastream.train.data import SYNTH_TEST_SEEDS, VAL_SEED_OFFSET
    from smastream.train.evaluate import TUNING_SEEDS, _recordings_for

    cfg = TrainConfig()
    train_seeds = range(cfg.synth_seed, cfg.synth_seed + 10_000)  # any --synth-recordings
    val_seeds = range(cfg.synth_seed + VAL_SEED_OFFSET, cfg.synth_seed + VAL_SEED_OFFSET + 100)
    taken = set(train_seeds) | set(val_seeds) | set(DEMO_SEEDS) | set(TUNING_SEEDS)
    assert not set(SYNTH_TEST_SEEDS) & taken
    assert len(SYNTH_TEST_SEEDS) * 40 >= 600  # at least 10 minutes held out
    # Generating all of them takes minutes on 2 cores: the first two show the plumbing.
    monkeypatch.setattr(data, "SYNTH_TEST_SEEDS", SYNTH_TEST_SEEDS[:2])
    recs = _recordings_for("synthetic", tmp_path)
    assert [r.events.name.split("-")[1] for r in recs] == [f"seed{s}" for s in SYNTH_TEST_SEEDS[:2]]
    assert all(r.labels.is_file() for r in recs)
    scenes = read_scenes(scenes_path_for(recs[0].events))  # what happens between gestures
    assert scenes and {s.name for s in scenes} > {"idle"}


def _cli(argv: list[str]) -> tuple[int, str]:
    """``smastream ARGV`` in a subprocess: (exit code, stderr)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "smastream", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "engine/models/demo.onnx", "--data", "recordings/demo.aedat4",
          "--stable-steps", "0"], "--stable-steps must be >= 1, got 0"),
        (["evaluate", "engine/models/demo.onnx", "--data", "recordings/demo.aedat4",
          "--max-recordings", "-2"], "--max-recordings must be >= 1, got -2"),
        (["train", "--data", "synthetic", "--epochs", "0", "--out", "unused-run"], "epochs"),
    ],
)  # fmt: skip
def test_bad_command_values_are_one_line_config_errors(argv: list[str], message: str) -> None:
    rc, err = _cli(argv)
    assert rc != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_config_error_is_a_smastream_error() -> None:
    from smastream.errors import ConfigError

    assert issubclass(ConfigError, SmastreamError)
    with pytest.raises(ConfigError, match="epochs"):
        from smastream.commands.train import add_arguments, config_from_args

        parser = argparse.ArgumentParser()
        add_arguments(parser)
        config_from_args(parser.parse_args(["--data", "synthetic", "--epochs", "0"]))


def test_scene_steps_are_counted_per_scene_and_summarised() -> None:
    from smastream.stream.formats.labels import SceneSegment
    from smastream.train.evaluate import format_table

    # 12 bins of 1 ms, S = 1: a gesture window (2, 4] ms, a walk (4, 8] ms, idle (8, 12].
    classes = [NG, NG, 2, 2, NG, 3, NG, NG, NG, NG, 5, NG]
    model = EvalModel(Path("scripted"), ScriptedRuntime(classes), NAMES, (4, 4), 1000, 1, 4, None)
    targets = np.array([NG, NG, 2, 2] + [NG] * 8)
    scenes = [SceneSegment(4000, 8000, "walk"), SceneSegment(8000, 12000, "idle")]
    window = GestureWindow(2000, 4000, 2)
    res = evaluate_stream_recording(model, "r", _frames(12), targets, [window], 0, RAW, 1, scenes)
    assert res.scene_steps == {"walk": [4, 1], "idle": [4, 1]}  # class 3 at 6 ms, 5 at 11 ms
    out = summarize([res, res], class_names=NAMES)
    assert out["scenes"]["walk"] == {"steps": 8, "gesture_steps": 2, "gesture_rate": 0.25}
    assert out["scene_steps"] == 8 and out["scene_gesture_rate"] == 0.25  # idle not counted
    table = format_table(out)
    assert "a gesture on 25.0 % of 8 steps (walk 25.0 %)" in table
    no_scenes = evaluate_stream_recording(
        EvalModel(Path("s"), ScriptedRuntime(classes), NAMES, (4, 4), 1000, 1, 4, None),
        "r", _frames(12), targets, [window], 0, RAW,
    )  # fmt: skip
    assert no_scenes.scene_steps == {} and "scenes" not in summarize([no_scenes])


REAL_LABELS = Path(__file__).resolve().parents[2].parent / "shared/data/real/aestream"


def test_dvsgesture_timing_covers_the_real_trial_and_synthetic_long_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--data synthetic-long``: gestures and gaps as long as in a real DVS Gesture trial
    (the real label file), on its own held-out seeds."""
    import smastream.train.data as data
    from smastream.stream.formats.labels import read_labels
    from smastream.train.evaluate import SYNTH_LONG, TUNING_SEEDS, _recordings_for

    real = read_labels(REAL_LABELS / "user01_natural_labels.csv")
    durations = [(w.end_us - w.start_us) / 1e6 for w in real]
    gaps = [(b.start_us - a.end_us) / 1e6 for a, b in itertools.pairwise(real)]
    lo, hi = data.DVSGESTURE_TIMING["gesture_s"]
    assert lo <= min(durations) and max(durations) <= hi, durations
    lo, hi = data.DVSGESTURE_TIMING["gap_s"]
    assert lo <= min(gaps) and max(gaps) <= hi, gaps
    seeds = set(data.SYNTH_LONG_SEEDS)
    assert not seeds & set(data.SYNTH_TEST_SEEDS) and not seeds & set(TUNING_SEEDS)

    monkeypatch.setattr(data, "SYNTH_LONG_SEEDS", (22_000,))
    monkeypatch.setattr(data, "SYNTH_LONG_SECONDS", 30.0)  # the real one is 120 s
    (rec,) = _recordings_for(SYNTH_LONG, tmp_path)
    assert "seed22000" in rec.events.name
    windows = read_labels(rec.labels)
    assert windows
    got = [(w.end_us - w.start_us) / 1e6 for w in windows]
    assert all(6.0 <= d <= 11.0 for d in got), got


def test_decision_tuner_scores_as_evaluate_does_and_bounds_the_scenes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tuner picks by its rule from what ``evaluate`` measures at every grid point (one
    decision path): the most accurate point that shows a gesture on at most the bound of
    the idle steps beyond the collars *and* of the no-gesture scenes' steps. A small grid,
    two tuning recordings (a bound the scenes decide: some points keep the idle rate under
    it, not the scenes')."""
    import itertools

    import smastream.train.evaluate as ev

    grid = {
        "smooth_ms": (25.0, 100.0),
        "hold_steps": (1, 3),
        "min_confidence": (0.3, 0.7),
        "switch_margin": (0.1,),
        "quiet_events_per_s": (0.0,),  # no idle resets, which the tuner does not replay
    }
    monkeypatch.setattr(ev, "TUNING_GRID", grid)
    model = Path(__file__).resolve().parents[2] / "engine" / "models" / "demo.onnx"
    seeds = (12_000, 12_001)
    ev.tune_decision_defaults(model, seeds=seeds, cache_dir=tmp_path)  # makes the recordings
    measured = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        point["hold_steps"] = int(point["hold_steps"])
        m = evaluate(
            model,
            str(tmp_path / "synthetic"),
            EvalOptions(clip=False, decision=DecisionConfig(**point), cache_dir=str(tmp_path)),
        )
        measured.append((point, m))
    # a bound between the idle and the scene rate of the most accurate point whose scenes
    # are worse than its idle steps: the idle rate alone would let that point through
    split = [m for _, m in measured if m["scene_gesture_rate"] > m["false_idle_rate_beyond_collar"]]
    assert split, "no point on this grid shows more gestures in scenes than when still"
    top = max(split, key=lambda m: m["stream_accuracy"])
    bound = (top["false_idle_rate_beyond_collar"] + top["scene_gesture_rate"]) / 2
    out = ev.tune_decision_defaults(
        model, seeds=seeds, cache_dir=tmp_path, min_accuracy=1.0, max_false_idle=bound
    )
    assert "no-gesture scenes" in out["rule"]
    (got,) = [m for p, m in measured if p == out["chosen"]]
    assert "beyond 200 ms after a gesture's end" in out["rule"]
    for key in (
        "stream_accuracy",
        "false_idle_rate",
        "false_idle_rate_beyond_collar",
        "scene_gesture_rate",
    ):
        assert out["result_chosen"][key] == pytest.approx(got[key], abs=1e-12), key
    assert out["result_chosen"]["onset_to_decision_ms_p50"] == got["onset_to_decision_ms_p50"]

    def worst(m: dict[str, float]) -> float:
        return max(m["false_idle_rate_beyond_collar"], m["scene_gesture_rate"])

    within = [m for _, m in measured if worst(m) <= bound]
    if within:  # the most accurate point within both bounds
        assert got["stream_accuracy"] == max(m["stream_accuracy"] for m in within)
        assert worst(got) <= bound
    else:  # none: the lowest of the two rates
        assert worst(got) == min(worst(m) for _, m in measured)
    assert got is not top
