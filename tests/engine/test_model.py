"""The SMA-SNN network (spec §2, §5): sizes, state, step/sequence agreement, causality,
dropout, checkpoints, and a tiny model that learns."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import torch
from torch import nn

from smastream.engine.lif import LIF, SplitLIF
from smastream.engine.model import (
    SMASNN,
    NetState,
    SMASNNConfig,
    config_from_dict,
    config_to_dict,
    count_macs,
    count_parameters,
    edge_config,
    load_checkpoint,
    mean_readout,
    mse_onehot_loss,
    paper_config,
    preset_config,
    save_checkpoint,
    tet_loss,
)
from smastream.errors import FormatError
from tests.engine.test_azo import full_select_azo


def _recalibrate_bn(model: SMASNN, frames: torch.Tensor) -> SMASNN:
    """BN statistics from one training-mode pass (no grad, no dropout effect on BN), then
    eval. Gives unit-variance currents, so spikes reach every layer of an untrained net."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    with torch.no_grad():
        model.train().sequence(frames)
    return model.eval()


def _excite_head(model: SMASNN, gain: float = 10.0) -> SMASNN:
    """Scale the hidden FCs of an untrained head so that its sparse inputs make it fire
    (the head has no BN; at default init its neurons stay silent and the logits constant)."""
    with torch.no_grad():
        for fc in model.head.hidden:
            fc.weight.mul_(gain)
    return model


def _frames(t: int, b: int, config: SMASNNConfig, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = config.input_size
    return torch.poisson(torch.full((t, b, 2, h, w), 0.7), generator=g)


class _SpikeRecorder:
    """Collects every LIF module's spikes, step by step, through forward hooks."""

    def __init__(self, model: nn.Module) -> None:
        self.spikes: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.handles = [
            mod.register_forward_hook(self._hook(name))
            for name, mod in model.named_modules()
            if isinstance(mod, LIF)
        ]

    def _hook(self, name: str) -> Callable[[nn.Module, object, tuple[torch.Tensor, ...]], None]:
        def hook(_mod: nn.Module, _inp: object, out: tuple[torch.Tensor, ...]) -> None:
            self.spikes[name].append(out[0].detach().clone())

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


# -- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize("temporal", ["paper", "causal"])
def test_paper_preset_size(temporal: str) -> None:
    model = SMASNN(paper_config(temporal=temporal))
    total = count_parameters(model)
    sma = sum(count_parameters(b.sma) for b in model.blocks if b.sma is not None)
    assert abs(total - 22.45e6) <= 0.02e6, total
    assert abs(sma - 6.99e6) <= 0.02e6, sma


def test_paper_preset_multiply_adds() -> None:
    macs = count_macs(paper_config())
    assert abs(sum(macs.values()) - 12.4e9) < 0.1e9
    sma_convs = sum(v for k, v in macs.items() if ".sma.conv" in k)
    assert abs(sma_convs - 11.3e9) < 0.1e9


@pytest.mark.parametrize("width", [0.125, 0.25])
def test_analytic_macs_match_a_hook_count(width: float) -> None:
    model = SMASNN(edge_config(width=width)).eval()
    counted = 0

    def hook(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal counted
        per_sample = out[0].numel()
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            counted += per_sample * mod.in_channels // mod.groups * k
        elif isinstance(mod, nn.Linear):
            counted += per_sample * mod.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.step(torch.zeros(1, 2, *model.config.input_size), model.initial_state(1))
    for h in handles:
        h.remove()
    assert counted == sum(count_macs(model.config).values())


# -- state -------------------------------------------------------------------------------


def test_state_is_named_full_shape_and_ordered() -> None:
    model = SMASNN(edge_config())
    state = model.initial_state(3)
    assert isinstance(state, NetState)
    names = state.names()
    assert names[:6] == (
        "block1_v",
        "block2_sma_u1",
        "block2_sma_u3",
        "block2_sma_u5",
        "block2_sma_u7",
        "block2_sma_ring",
    )
    assert names[-2:] == ("head_fc1_v", "head_fc2_v")
    assert names == model.state_names()
    assert len(names) == len(set(names)) == 5 + 2 * 5 + 2
    for name, shape in model.state_spec():
        assert state[name].shape == (3, *shape)
        assert state[name].dtype == torch.float32
        assert not state[name].any()
    assert state["block1_v"].shape == (3, 12, 64, 64)  # 64 channels x 3/16
    assert state["block3_sma_ring"].shape == (3, 15)


def test_step_and_sequence_reject_bad_input() -> None:
    model = SMASNN(edge_config()).eval()
    state = model.initial_state(1)
    with pytest.raises(ValueError, match="frames"):
        model.step(torch.zeros(1, 2, 32, 32), state)
    with pytest.raises(ValueError, match="missing"):
        model.step(torch.zeros(1, 2, 64, 64), {k: v for k, v in state.items() if k != "block1_v"})
    with pytest.raises(ValueError, match="wrong shapes"):
        model.step(torch.zeros(2, 2, 64, 64), state)
    with pytest.raises(TypeError, match="float"):
        model.sequence(torch.zeros(2, 1, 2, 64, 64, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="eval"):
        model.train().step(torch.zeros(1, 2, 64, 64), state)
    paper_mode = SMASNN(edge_config(temporal="paper")).eval()
    with pytest.raises(ValueError, match="causal"):
        paper_mode.step(torch.zeros(1, 2, 64, 64), paper_mode.initial_state(1))


def test_presets_name_the_temporal_attention() -> None:
    paper = preset_config("paper")
    streaming = preset_config("paper-causal")
    assert (paper.preset, paper.temporal) == ("paper", "paper")
    assert (streaming.preset, streaming.temporal) == ("paper-causal", "causal")
    assert dataclasses.replace(streaming, preset="paper", temporal="paper") == paper
    assert preset_config("edge").temporal == "causal"
    assert preset_config("paper", temporal="causal").temporal == "causal"  # training's override


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SMASNNConfig(input_size=(100, 100))
    with pytest.raises(ValueError, match="temporal"):
        SMASNNConfig(temporal="bidirectional")
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="unknown"):
        config_from_dict({**config_to_dict(SMASNNConfig()), "extra_field": 1})
    with pytest.raises(ValueError, match="head_tau must be >= 1"):
        SMASNNConfig(head_tau=0.5)
    with pytest.raises(ValueError, match=r"head_slow_tau must be >= 1 or None, got 0\.5"):
        SMASNNConfig(head_slow_tau=0.5)
    with pytest.raises(ValueError, match=r"head_slow_tau needs .* >= 2 neurons, got \(16, 1\)"):
        SMASNNConfig(head_hidden=(16, 1), head_slow_tau=8.0)
    with pytest.raises(ValueError, match=r"missing \['tau'\]"):
        config_from_dict({k: v for k, v in config_to_dict(SMASNNConfig()).items() if k != "tau"})


def test_head_tau_is_the_head_s_own_and_older_configs_load_with_the_paper_s() -> None:
    model = SMASNN(edge_config(head_tau=4.0))
    assert [cast(LIF, lif).tau for lif in model.head.lifs] == [4.0, 4.0]
    assert {b.lif.tau for b in model._blocks()} == {2.0}  # the conv blocks keep tau
    saved = config_to_dict(edge_config())
    del saved["head_tau"], saved["head_slow_tau"]  # a file written before the fields existed
    assert config_from_dict(saved) == edge_config()


def test_head_slow_tau_splits_each_hidden_head_layer_in_half() -> None:
    model = SMASNN(edge_config(head_slow_tau=8.0))
    lifs = [cast(SplitLIF, lif) for lif in model.head.lifs]
    assert [type(lif) for lif in lifs] == [SplitLIF, SplitLIF]
    assert [(lif.split, lif.fast.tau, lif.slow.tau) for lif in lifs] == [
        (n // 2, 2.0, 8.0) for n in model.config.head_hidden
    ]
    config = edge_config(head_slow_tau=8.0)
    assert config_from_dict(config_to_dict(config)) == config


# -- step / sequence agreement -----------------------------------------------------------


def _agreement(model: SMASNN, t: int, batch: int) -> None:
    cfg = model.config
    _recalibrate_bn(_excite_head(model), _frames(t, batch, cfg, 0))
    x1, x2 = _frames(t, batch, cfg, 1), _frames(t, batch, cfg, 2)
    with torch.no_grad():
        rec = _SpikeRecorder(model)
        y1, s1 = model.sequence(x1)
        y2, s2 = model.sequence(x2, s1)
        seq_spikes = {k: torch.stack(v) for k, v in rec.spikes.items()}  # [2T, B, ...]
        rec.close()
        rec = _SpikeRecorder(model)
        state = model.initial_state(batch)
        logits = []
        for frame in torch.cat([x1, x2]):
            y, state = model.step(frame, state)
            logits.append(y)
        step_spikes = {k: torch.stack(v) for k, v in rec.spikes.items()}
        rec.close()
    stepped = torch.stack(logits)
    assert (stepped - torch.cat([y1, y2])).abs().max().item() <= 1e-5
    assert state.names() == s2.names()
    for name in s2:
        assert (state[name] - s2[name]).abs().max().item() <= 1e-5, name
    assert seq_spikes.keys() == step_spikes.keys()
    for name, spikes in seq_spikes.items():
        assert torch.equal(spikes, step_spikes[name]), name
        assert spikes.any(), f"{name} never spiked: the comparison would be vacuous"


def test_step_matches_sequence_edge() -> None:
    torch.manual_seed(0)
    _agreement(SMASNN(edge_config()), t=5, batch=2)


def test_step_matches_sequence_with_a_longer_head_tau() -> None:
    torch.manual_seed(0)
    _agreement(SMASNN(edge_config(head_tau=4.0)), t=5, batch=2)


def test_step_matches_sequence_with_slow_head_neurons() -> None:
    torch.manual_seed(0)
    _agreement(SMASNN(edge_config(head_slow_tau=8.0)), t=5, batch=2)


def test_step_matches_sequence_paper() -> None:
    torch.manual_seed(0)
    _agreement(SMASNN(preset_config("paper-causal")), t=2, batch=1)


@pytest.mark.parametrize("temporal", ["causal", "paper"])
def test_causality(temporal: str) -> None:
    torch.manual_seed(0)
    cfg = edge_config(temporal=temporal, time_steps=8, dropout=0.0)
    model = SMASNN(cfg)
    x = _frames(8, 2, cfg, 3)
    _recalibrate_bn(_excite_head(model), x)
    cut = 4
    changed = x.clone()
    changed[cut:] = _frames(4, 2, cfg, 4) * 3
    with torch.no_grad():
        y, _ = model.sequence(x)
        y_changed, _ = model.sequence(changed)
    assert not torch.equal(y[cut:], y_changed[cut:])
    if temporal == "causal":
        assert torch.equal(y[:cut], y_changed[:cut])
    else:
        assert not torch.equal(y[:cut], y_changed[:cut])


def test_dropout_mask_is_shared_across_steps() -> None:
    cfg = SMASNNConfig(
        input_size=(8, 8),
        widths=(4, 4),
        sma_blocks=(1,),
        head_pool=1,
        head_hidden=(64,),
        dropout=0.5,
        window=4,
    )
    torch.manual_seed(0)
    model = SMASNN(cfg).train()
    with torch.no_grad():
        model.head.hidden[0].bias.fill_(10.0)  # every hidden neuron fires at every step
    seen: list[torch.Tensor] = []
    handle = model.head.out.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
    model.sequence(torch.zeros(6, 3, 2, 8, 8))
    handle.remove()
    into_out = seen[0].unflatten(0, (6, 3))  # [T, B, F]
    assert set(into_out.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled
    assert torch.equal(into_out, into_out[:1].expand_as(into_out))  # same mask every step
    assert not torch.equal(into_out[:, 0], into_out[:, 1])  # but its own per sample


# -- checkpoints -------------------------------------------------------------------------


def test_checkpoint_round_trip_rebuilds_any_config(tmp_path: Path) -> None:
    cfg = SMASNNConfig(
        preset="made-up",
        input_size=(16, 32),
        widths=(4, 6, 8),
        sma_blocks=(0, 2),
        sma_kernels=(1, 3),
        head_pool=1,
        head_hidden=(20,),
        window=8,
        tau=3.0,
    )
    torch.manual_seed(0)
    model = SMASNN(cfg)
    x = _frames(3, 2, cfg, 5)
    _recalibrate_bn(model, x)  # non-default BN statistics must travel too
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, extra={"epoch": 7, "accuracy": 0.5})
    loaded, extra = load_checkpoint(path)
    assert loaded.config == cfg
    assert extra == {"epoch": 7, "accuracy": 0.5}
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(model.sequence(x)[0], loaded.sequence(x)[0])


def test_bad_checkpoint_is_a_format_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match=r"junk\.pt"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(FormatError, match="not a smastream") as err:
        load_checkpoint(other)
    # a problem with no place in the file: no made-up "at byte 0"
    assert str(err.value) == f"{other}: not a smastream.sma-snn checkpoint"
    assert err.value.offset is None
    assert str(FormatError(other, 12, "bad")) == f"{other}: at byte 12: bad"
    assert str(FormatError(other, 0, "bad")) == f"{other}: at byte 0: bad"  # a real offset 0


# -- learning ----------------------------------------------------------------------------


def _moving_bars(n: int, t_steps: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes: a 3×3 blob moving right, left, down or up, at a random place, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    frames = torch.zeros(t_steps, n, 2, size, size)
    for i in range(n):
        lab = int(labels[i])
        across = int(torch.randint(2, size - 4, (1,), generator=g))
        start = int(torch.randint(0, 3, (1,), generator=g))
        for t in range(t_steps):
            pos = start + t if lab in (0, 2) else size - 3 - start - t
            pos = max(0, min(size - 3, pos))
            if lab < 2:
                frames[t, i, 0, across : across + 3, pos : pos + 3] = 2.0
            else:
                frames[t, i, 0, pos : pos + 3, across : across + 3] = 2.0
        frames[:, i] += (torch.rand(t_steps, 2, size, size, generator=g) < 0.03).float()
    return frames, labels


def test_tiny_causal_model_learns() -> None:
    torch.manual_seed(0)
    cfg = SMASNNConfig(
        preset="tiny",
        input_size=(16, 16),
        widths=(8, 16, 16),
        sma_blocks=(1, 2),
        head_pool=1,
        head_hidden=(32,),
        num_classes=4,
        dropout=0.0,
        window=8,
    )
    model = SMASNN(cfg).train()
    x, y = _moving_bars(64, 8, 16, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        idx = torch.randperm(64)[:32]
        logits, _ = model(x[:, idx])
        loss = tet_loss(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    # The weights moved faster than BN's running averages: recompute them, then evaluate.
    _recalibrate_bn(model, x)
    with torch.no_grad():
        accuracy = (mean_readout(model(x)[0]).argmax(1) == y).float().mean().item()
        x_new, y_new = _moving_bars(64, 8, 16, seed=1)
        held_out = (mean_readout(model(x_new)[0]).argmax(1) == y_new).float().mean().item()
    assert accuracy >= 0.5, accuracy  # chance is 0.25
    assert held_out >= 0.4, held_out


def test_losses() -> None:
    logits = torch.zeros(3, 2, 11)
    logits[:, 0, 4] = 1.0
    labels = torch.tensor([4, 0])
    # sample 0 is exact; sample 1 misses by 1 in class 0 -> one error of 1 over 22 cells
    assert mse_onehot_loss(logits, labels).item() == pytest.approx(1 / 22)
    ce = torch.nn.functional.cross_entropy(logits[0], labels)
    assert tet_loss(logits, labels).item() == pytest.approx(ce.item())


# -- packaging ---------------------------------------------------------------------------


def test_engine_imports_neither_stream_nor_train_and_package_needs_no_torch() -> None:
    code = (
        "import sys\n"
        "import smastream.engine.model\n"
        "bad = [m for m in sys.modules if m.startswith(('smastream.stream', 'smastream.train'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    no_torch = "import sys; sys.modules['torch'] = None; import smastream.engine"
    subprocess.run([sys.executable, "-c", no_torch], check=True)


def _step_loop_sequence(self: LIF, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """LIF.sequence as plain autograd: the module called once per step."""
    out = []
    for x_t in x.unbind(0):
        s, v = self(x_t, v)
        out.append(s)
    return torch.stack(out), v


def test_training_gradients_equal_plain_autograd_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Training runs the LIF steps as one numba kernel per layer and AZO as a gather/scatter
    # node (engine/lif.py, engine/azo.py). The whole network's loss, logits, final state
    # and every parameter's gradient must equal those of the plain autograd forms
    # (the module called step by step, AZO as a full select), bit for bit, with the
    # state carried in from an earlier chunk and on 2 threads (tiles split across them).
    import smastream.engine.sma as sma_module

    config = edge_config(width=0.125, input_size=32, num_classes=12, temporal="causal")
    frames = _frames(8, 3, config, seed=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(0)
        model = _excite_head(SMASNN(config)).train()
        with torch.no_grad():
            _, state = model.sequence(frames)  # a carried-in state with non-zero membranes
        logits, new = model.sequence(frames, state)
        loss = mse_onehot_loss(logits, torch.tensor([0, 5, 11]))
        loss.backward()
        outs = [loss.detach(), logits.detach(), *[t.detach() for t in new.tensors()]]
        return outs, [p.grad for p in model.parameters() if p.grad is not None]

    try:
        fused_out, fused_grads = run()
        with monkeypatch.context() as m:
            m.setattr(LIF, "sequence", _step_loop_sequence)
            m.setattr(sma_module, "azo_apply", full_select_azo)
            plain_out, plain_grads = run()
    finally:
        torch.set_num_threads(threads)
    assert len(fused_grads) == len(plain_grads) == len(list(SMASNN(config).parameters()))
    assert fused_out[0].item() > 0
    for a, b in zip(fused_out, plain_out, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        assert torch.equal(a, b)
    assert any(g.abs().sum() > 0 for g in fused_grads[:2])  # the first conv learns
