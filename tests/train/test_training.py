"""Training loop: CI-sized runs of both protocols, exact resume, config, atomic outputs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from smastream.engine.model import NetState, load_checkpoint
from smastream.errors import FormatError, SmastreamError
from smastream.train.config import (
    TrainConfig,
    config_from_mapping,
    load_toml,
    parse_data_spec,
    parse_scene_weights,
)
from smastream.train.datasets import NO_GESTURE, PAD_TARGET
from smastream.train.loop import (
    EpochResult,
    OnsetClock,
    _atomic_checkpoint,
    _reset_lanes,
    _Stepper,
    amp_dtype,
    build_model,
    class_names_for,
    cpu_has_native_bf16,
    lr_at,
    stream_loss,
    train,
)


def tiny(tmp: Path, cache: Path, **overrides: Any) -> TrainConfig:
    """A network and data small enough for a few seconds of CPU."""
    base: dict[str, Any] = dict(
        out=str(tmp / "run"),
        cache_dir=str(cache),
        preset="edge",
        width=1 / 32,
        input_size=32,
        epochs=2,
        batch_size=2,
        lr=5e-3,
        warmup_steps=1,
        synth_recordings=2,
        synth_val_recordings=1,
        synth_seconds=6.0,
        chunk_steps=8,
        n_frames=4,
        max_batches=2,
        backend="none",
        progress=False,
        device="cpu",
        threads=1,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train-cache")


# ------------------------------------------------------------------------------ pure parts


def test_lr_schedule_warmup_then_cosine_to_zero() -> None:
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(500, 100, 1.0, 10) == pytest.approx(0.0, abs=1e-12)


def test_stream_loss_counts_steps_and_masks_no_gesture_when_asked() -> None:
    logits = torch.zeros(3, 2, 12)
    logits[..., 4] = 5.0
    targets = torch.tensor([[4, NO_GESTURE], [PAD_TARGET, 4], [NO_GESTURE, PAD_TARGET]])
    loss12, n12 = stream_loss(logits, targets, no_gesture_class=True)
    loss11, n11 = stream_loss(logits, targets, no_gesture_class=False)
    assert (n12, n11) == (4, 2)
    p_right = torch.log_softmax(logits[0, 0], -1)
    want11 = -float(p_right[4])
    want12 = -(2 * float(p_right[4]) + 2 * float(p_right[NO_GESTURE])) / 4
    assert float(loss11) == pytest.approx(want11, rel=1e-6)
    assert float(loss12) == pytest.approx(want12, rel=1e-6)
    empty, n0 = stream_loss(logits, torch.full((3, 2), PAD_TARGET), True)
    assert n0 == 0 and float(empty) == 0.0


def test_stream_loss_weights_are_a_weighted_mean_over_counted_steps() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 12)
    targets = torch.tensor([[4, NO_GESTURE], [PAD_TARGET, 4], [2, PAD_TARGET]])
    weights = torch.tensor([[3.0, 1.0], [7.0, 2.0], [1.0, 9.0]])  # PAD weights must not count
    loss, n = stream_loss(logits, targets, True, weights)
    logp = torch.log_softmax(logits, -1)
    terms = [(3.0, -logp[0, 0, 4]), (1.0, -logp[0, 1, NO_GESTURE]), (2.0, -logp[1, 1, 4])]
    terms.append((1.0, -logp[2, 0, 2]))
    want = sum(w * float(c) for w, c in terms) / sum(w for w, _ in terms)
    assert n == 4 and float(loss) == pytest.approx(want, rel=1e-6)
    plain, _ = stream_loss(logits, targets, True)
    ones, _ = stream_loss(logits, targets, True, torch.ones(3, 2))
    assert float(plain) == pytest.approx(float(ones), rel=1e-6)


def test_onset_clock_weights_the_first_steps_of_each_gesture_across_batches() -> None:
    g, ng, pad = 3, NO_GESTURE, PAD_TARGET
    clock = OnsetClock(batch_size=2, steps=3, weight=4.0)
    lane0 = [ng, g, g, g, g, 5, 5]  # gesture 3 from step 1, gesture 5 right after it
    lane1 = [g, g, pad, pad, 7, 7, 7]  # a recording that starts in a gesture, then idle
    first = clock.weights(torch.tensor([lane0[:4], lane1[:4]]).T, torch.tensor([True, True]))
    second = clock.weights(torch.tensor([lane0[4:], lane1[4:]]).T, torch.tensor([False, True]))
    got = torch.cat([first, second]).T.tolist()
    assert got[0] == [1, 4, 4, 4, 1, 4, 4]  # the clock carries the run over the batch edge
    assert got[1] == [4, 4, 1, 1, 4, 4, 4]  # reset: lane 1's new recording starts afresh
    idle = OnsetClock(batch_size=2, steps=3, weight=4.0, idle_weight=2.0)
    w = idle.weights(torch.tensor([lane0, lane1]).T, torch.tensor([True, True])).T.tolist()
    assert w[0] == [2, 4, 4, 4, 1, 4, 4]  # "no gesture" steps weigh idle_weight
    assert w[1] == [4, 4, 1, 1, 4, 4, 4]  # padding stays 1 (the loss does not count it)


def test_reset_lanes_zeroes_only_flagged_lanes() -> None:
    state = NetState({"a": torch.ones(3, 2, 2, requires_grad=True) * 2, "b": torch.ones(3, 4)})
    out = _reset_lanes(state, torch.tensor([False, True, False]))
    assert out["a"][1].abs().sum() == 0 and out["b"][1].abs().sum() == 0
    assert torch.equal(out["a"][0], torch.full((2, 2), 2.0))
    assert torch.equal(out["b"][2], torch.ones(4))
    assert not out["a"].requires_grad  # detached: truncated BPTT


def test_class_names_put_no_gesture_last() -> None:
    names = class_names_for(12)
    assert len(names) == 12 and names[-1] == "no gesture"
    assert class_names_for(11)[-1] == "other"
    with pytest.raises(ValueError, match="13"):
        class_names_for(13)


def test_config_validation_quotes_bad_values() -> None:
    with pytest.raises(ValueError, match="'wavy'"):
        TrainConfig(protocol="wavy")
    with pytest.raises(ValueError, match="causal"):
        TrainConfig(protocol="stream", temporal="paper")
    with pytest.raises(ValueError, match="mse"):
        TrainConfig(protocol="stream", loss="mse")
    with pytest.raises(ValueError, match=r"idle_weight must be a number >= 1, got 0\.5"):
        TrainConfig(idle_weight=0.5)
    with pytest.raises(ValueError, match=r"head_tau must be a number >= 1, got 0\.9"):
        TrainConfig(head_tau=0.9)
    assert build_model(TrainConfig(width=1 / 32, input_size=32, head_tau=4)).config.head_tau == 4
    with pytest.raises(ValueError, match=r"head_slow_tau must be a number >= 1, got 0\.5"):
        TrainConfig(head_slow_tau=0.5)
    slow = build_model(TrainConfig(width=1 / 32, input_size=32, head_slow_tau=8))
    assert slow.config.head_slow_tau == 8
    with pytest.raises(ValueError, match="'scratch=lots' is not NAME=FACTOR"):
        TrainConfig(synth_scene_weights="scratch=lots")
    with pytest.raises(ValueError, match="'wave=2' is not NAME=FACTOR"):
        TrainConfig(synth_scene_weights="scratch=2, wave=2")
    with pytest.raises(ValueError, match="a scene repeats"):
        TrainConfig(synth_scene_weights="scratch=2,scratch=3")
    assert parse_scene_weights(" scratch=3, reach_object=0.5") == (
        ("scratch", 3.0),
        ("reach_object", 0.5),
    )
    assert parse_scene_weights(None) == parse_scene_weights("") == ()
    with pytest.raises(ValueError, match="unknown training config keys \\['epoch'\\]"):
        config_from_mapping({"epoch": 3})
    assert parse_data_spec("dvsgesture:/x/y") == ("dvsgesture", "/x/y")
    assert parse_data_spec("synthetic") == ("synthetic", None)
    assert parse_data_spec("some/folder") == ("folder", "some/folder")
    assert TrainConfig(protocol="clip").resolved_loss == "mse"
    assert TrainConfig(protocol="clip").n_outputs == 11
    assert TrainConfig().n_outputs == 12


def test_flags_override_toml_override_defaults(tmp_path: Path) -> None:
    from smastream.commands import train as cmd

    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 7\nlr = 0.01\nprotocol = "clip"\n[train]\nbatch_size = 3\n')
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    cfg = cmd.config_from_args(parser.parse_args(["--config", str(toml), "--lr", "0.5"]))
    assert (cfg.epochs, cfg.lr, cfg.protocol, cfg.batch_size) == (7, 0.5, "clip", 3)
    assert cfg.seed == TrainConfig().seed
    args = parser.parse_args(["--no-azo", "--epochs", "2"])
    assert cmd.config_from_args(args).azo is False
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(SmastreamError, match=r"bad\.toml"):
        load_toml(bad)
    with pytest.raises(SmastreamError, match="batch_size"):
        cmd.config_from_args(parser.parse_args(["--batch-size", "0"]))


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    cfg = TrainConfig(width=1 / 32, input_size=32)
    model = build_model(cfg)
    path = tmp_path / "last.pt"
    _atomic_checkpoint(path, model, {"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        _atomic_checkpoint(path, model, {"epoch": 2, "bad": lambda: 0})
    assert path.read_bytes() == before  # the complete old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_amp_dtype_is_fp16_on_cuda_bf16_on_a_native_bf16_cpu_else_float32() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype(False, cpu) is None and amp_dtype(False, cuda) is None
    assert amp_dtype(True, cuda) is torch.float16
    assert amp_dtype(True, cpu) is (torch.bfloat16 if cpu_has_native_bf16() else None)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_autocast_lowers_the_convolutions_only_and_still_learns() -> None:
    """On a CPU with native bf16, ``amp`` runs the convolutions in bf16 while the membranes,
    the carried state and the loss stay float32; and a few steps on one batch lower the
    loss about as much as float32 does."""
    torch.manual_seed(0)
    shape = (8, 2, 2, 32, 32)
    frames = (torch.rand(shape) < 0.2).float() * torch.randint(1, 4, shape).float()
    targets = torch.tensor([3, 7]).expand(8, 2)  # one class per lane
    drops = {}
    for amp in (False, True):
        torch.manual_seed(1)
        cfg = TrainConfig(width=1 / 32, input_size=32, lr=3e-2, warmup_steps=1, amp=amp)
        model = build_model(cfg).train()
        stepper = _Stepper(cfg, list(model.parameters()), torch.device("cpu"), total=25)
        assert stepper.amp_dtype is (torch.bfloat16 if amp else None)
        assert not stepper.use_amp  # no loss scaling for bf16
        conv_dtypes: list[torch.dtype] = []
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        hook = conv.register_forward_hook(lambda m, i, o, seen=conv_dtypes: seen.append(o.dtype))
        losses = []
        for _ in range(25):
            with stepper.autocast():
                logits, state = model.sequence(frames, None)
            loss, _ = stream_loss(logits, targets, True)
            assert loss.dtype == torch.float32
            assert all(v.dtype == torch.float32 for v in state.values())
            stepper(loss)
            losses.append(float(loss.detach()))
        hook.remove()
        assert set(conv_dtypes) == {torch.bfloat16 if amp else torch.float32}
        assert all(math.isfinite(v) for v in losses)
        drops[amp] = 1 - np.mean(losses[-5:]) / np.mean(losses[:5])
    assert drops[False] > 0.25, drops  # the batch is learnt ...
    assert drops[True] > 0.5 * drops[False], drops  # ... and about as well in bf16


# ------------------------------------------------------------------------------ runs


def test_stream_training_writes_run_folder(tmp_path: Path, cache: Path) -> None:
    cfg = tiny(tmp_path, cache)
    result = train(cfg)
    out = Path(cfg.out)
    assert len(result.history) == 2 and len(result.losses) == 4
    assert all(math.isfinite(v) for v in result.losses)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [0, 1]
    assert lines[-1]["val_accuracy"] is not None and lines[-1]["step"] == 4
    for name in ("config.json", "last.pt", "best.pt", "loss.png", "accuracy.png", "confusion.png"):
        assert (out / name).is_file(), name
    model, extra = load_checkpoint(out / "last.pt")
    assert model.config.num_classes == 12 and model.config.temporal == "causal"
    assert extra["class_names"][-1] == "no gesture"
    assert extra["bin_us"] == cfg.bin_us and extra["epoch"] == 1
    assert json.loads((out / "config.json").read_text())["protocol"] == "stream"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_clip_training_runs_paper_temporal(tmp_path: Path, cache: Path) -> None:
    cfg = tiny(tmp_path, cache, protocol="clip", epochs=1, batch_size=1)
    result = train(cfg)
    # the generator's 6 s recordings hold one or two labelled windows: 1-2 batches of 1
    assert 1 <= len(result.losses) == result.history[-1].batches <= 2
    assert all(math.isfinite(v) for v in result.losses)
    model, extra = load_checkpoint(Path(cfg.out) / "last.pt")
    assert model.config.temporal == "paper" and model.config.time_steps == 4
    assert model.config.num_classes == 11
    assert extra["protocol"] == "clip"


@pytest.mark.parametrize("protocol", ["stream", "clip"])
def test_resume_gives_the_same_next_losses(tmp_path: Path, cache: Path, protocol: str) -> None:
    bs = 1 if protocol == "clip" else 2
    full = train(tiny(tmp_path / "a", cache, protocol=protocol, epochs=3, batch_size=bs))

    def interrupt(result: EpochResult) -> None:
        if result.epoch == 1:  # after epoch 2's checkpoint: like Ctrl-C
            raise KeyboardInterrupt

    cfg_b = tiny(tmp_path / "b", cache, protocol=protocol, epochs=3, batch_size=bs)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_b, on_epoch=interrupt)
    resumed = train(cfg_b, resume=True)
    n = full.history[0].batches  # 2 (max_batches), 1 where the clips are too few
    assert n >= 1 and len(full.losses) == 3 * n
    assert resumed.losses == full.losses[2 * n :]  # exactly: same data order, RNG, optimizer
    assert [h.epoch for h in resumed.history] == [0, 1, 2]
    a = load_checkpoint(Path(tmp_path / "a" / "run" / "last.pt"))[0].state_dict()
    b = load_checkpoint(Path(tmp_path / "b" / "run" / "last.pt"))[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bare_resume_flag_continues_the_run_as_planned(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``smastream train --out RUN --resume`` keeps the checkpoint's epochs and batches per
    epoch (it once took the defaults: 12 epochs of every batch); a flag given overrides."""
    from smastream.commands import train as cmd

    cfg = tiny(tmp_path, cache, epochs=2, max_batches=2)

    def interrupt(result: EpochResult) -> None:
        raise KeyboardInterrupt  # after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_epoch=interrupt)
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    argv = ["--out", cfg.out, "--resume", "--cache-dir", str(cache), "--no-progress", "--json"]
    assert cmd.run(parser.parse_args(argv)) == 0
    summary = json.loads(capsys.readouterr().out)
    metrics = Path(cfg.out) / "metrics.jsonl"
    assert [json.loads(line)["batches"] for line in metrics.read_text().splitlines()] == [2, 2]
    assert summary["last"]["batches"] == 2
    assert cmd.run(parser.parse_args([*argv, "--epochs", "3"])) == 0
    assert len(metrics.read_text().splitlines()) == 3


def test_resume_without_checkpoint_is_one_line_error(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(SmastreamError, match="no checkpoint to resume"):
        train(tiny(tmp_path, cache), resume=True)


def _copy_labelled(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    rec = sorted(src.glob("synth-seed*.aedat4"))[0]
    (dst / rec.name).write_bytes(rec.read_bytes())
    labels = rec.with_name(rec.stem + "_labels.csv")
    (dst / labels.name).write_text(labels.read_text())
    return dst / rec.name


def test_bad_data_gives_one_line_error_naming_the_file(tmp_path: Path, cache: Path) -> None:
    train(tiny(tmp_path / "warm", cache, epochs=1, max_batches=1))  # makes the recordings
    synth = cache / "synthetic"
    # a label window past the end of the recording
    folder = tmp_path / "late"
    rec = _copy_labelled(synth, folder)
    labels = rec.with_name(rec.stem + "_labels.csv")
    labels.write_text(labels.read_text() + "3,5900000,99000000\n")
    with pytest.raises(SmastreamError, match=labels.name.split("_labels")[0]) as err:
        train(tiny(tmp_path / "r1", cache, data=str(folder)))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r1" / "run" / "last.pt").exists()
    # a corrupt event file
    folder = tmp_path / "corrupt"
    rec = _copy_labelled(synth, folder)
    data = rec.read_bytes()
    rec.write_bytes(data[: len(data) // 3] + b"\x00garbage" * 64)
    with pytest.raises(SmastreamError, match=rec.name) as err2:
        train(tiny(tmp_path / "r2", cache, data=str(folder)))
    assert "\n" not in str(err2.value)
    assert not (tmp_path / "r2" / "run" / "last.pt").exists()


def test_train_command_runs_and_reports(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from smastream.commands import train as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    argv = [
        "--out", str(tmp_path / "cli"), "--cache-dir", str(cache), "--width", "0.03125",
        "--input-size", "32", "--epochs", "1", "--batch-size", "2", "--synth-recordings", "2",
        "--synth-val-recordings", "1", "--synth-seconds", "6", "--chunk-steps", "8",
        "--max-batches", "1", "--backend", "none", "--no-progress", "--device", "cpu", "--json",
    ]  # fmt: skip
    assert cmd.run(parser.parse_args(argv)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1 and summary["last"]["batches"] == 1
    with pytest.raises(SmastreamError, match="synth_seconds"):
        cmd.run(parser.parse_args([*argv[:-1], "--synth-seconds", "-1"]))


def test_missing_folder_is_one_line_error(tmp_path: Path, cache: Path) -> None:
    with pytest.raises((SmastreamError, FormatError), match="nowhere"):
        train(tiny(tmp_path, cache, data=str(tmp_path / "nowhere")))


def test_seeded_init_is_deterministic() -> None:
    torch.manual_seed(1)
    a = build_model(TrainConfig(width=1 / 32, input_size=32)).state_dict()
    torch.manual_seed(1)
    b = build_model(TrainConfig(width=1 / 32, input_size=32)).state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_geometry_matches_the_live_mapping() -> None:
    from smastream.stream.pipeline import model_geometry
    from smastream.train.data import geometry_for

    assert geometry_for((128, 128), (64, 64)) == {
        "crop": None, "downsample": 2, "output_size": None,
    }  # fmt: skip
    crop, out = model_geometry((346, 260), (64, 64))
    assert geometry_for((346, 260), (64, 64)) == {
        "crop": crop, "downsample": 1, "output_size": out,
    }  # fmt: skip


def test_demo_seeds_are_refused(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(ValueError, match="reserved for the demo"):
        train(tiny(tmp_path, cache, synth_seed=7))


def test_init_starts_from_given_weights_and_refuses_other_shapes(
    tmp_path: Path, cache: Path
) -> None:
    torch.manual_seed(99)
    donor = build_model(tiny(tmp_path, cache))
    weights = tmp_path / "w.pt"
    torch.save(donor.state_dict(), weights)
    cfg = tiny(tmp_path, cache, init=str(weights), epochs=1, max_batches=1, lr=1e-9)
    result = train(cfg)
    for name, value in donor.state_dict().items():  # lr ~0: still the donor's weights
        if value.is_floating_point() and "running" not in name:
            assert torch.allclose(result.model.state_dict()[name], value, atol=1e-5), name
    wider = tiny(tmp_path / "w", cache, init=str(weights), width=1 / 16)
    with pytest.raises(SmastreamError, match=r"w\.pt: weights do not fit") as err:
        train(wider)
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(FormatError, match=r"bad\.pt"):
        train(tiny(tmp_path / "b", cache, init=str(bad)))
    with pytest.raises(SmastreamError, match="no weights file"):
        train(tiny(tmp_path / "m", cache, init=str(tmp_path / "missing.pt")))


def test_demo_weights_load_into_the_demo_config() -> None:
    from smastream.train.loop import load_initial_weights

    demo = Path(__file__).resolve().parents[2] / "engine" / "models" / "demo.pt"
    model = build_model(TrainConfig(width=0.1875))
    load_initial_weights(model, demo)
    sd = torch.load(demo, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_augmented_training_plays_a_copy_per_epoch(tmp_path: Path, cache: Path) -> None:
    from smastream.train.loop import augment_seeds

    cfg = tiny(tmp_path, cache, augment_copies=2, epochs=3, max_batches=1)
    assert cfg.resolved_augment and augment_seeds(cfg) == [cfg.seed * 1000, cfg.seed * 1000 + 1]
    assert not tiny(tmp_path, cache, protocol="clip").resolved_augment
    assert augment_seeds(tiny(tmp_path, cache, augment=False)) == [None]
    a = train(cfg).losses
    b = train(tiny(tmp_path / "again", cache, augment_copies=2, epochs=3, max_batches=1)).losses
    assert a == b  # seeded
    seeds = set()
    for meta in cache.glob("*-stream-*/meta.json"):
        note = json.loads(meta.read_text()).get("augment")
        if note is not None:
            seeds.add(note["seed"])
            assert note["events_out"] != note["events_in"]
    assert {cfg.seed * 1000, cfg.seed * 1000 + 1} <= seeds  # both copies were binned


def test_stream_refuses_a_clip_loss_instead_of_ignoring_it() -> None:
    # the stream protocol trains per-step cross-entropy; --loss tet/mse used to be ignored
    for loss in ("tet", "mse"):
        with pytest.raises(ValueError, match="stream trains per-step cross-entropy"):
            TrainConfig(protocol="stream", loss=loss)
    assert TrainConfig(protocol="stream", loss="ce").resolved_loss == "ce"


def test_clip_training_with_an_onnx_backend_skips_the_export_and_succeeds(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny(tmp_path, cache, protocol="clip", epochs=1, batch_size=1, backend="onnx")
    result = train(cfg)  # used to end with a SmastreamError after the checkpoints
    assert result.exported == [] and (Path(cfg.out) / "best.pt").is_file()
    assert "export skipped: a temporal='paper' network" in capsys.readouterr().err
