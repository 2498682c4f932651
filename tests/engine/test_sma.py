"""SMA layer (spec §3): step/sequence agreement, causality, attention normalisation, errors."""

from __future__ import annotations

import pytest
import torch

from smastream.engine.sma import SMA, fuse


def _calibrated(layer: SMA, x: torch.Tensor) -> SMA:
    """Set the BN statistics from one training-mode pass, then switch to eval."""
    for bn in layer.bns:
        bn.momentum = None  # cumulative average
    with torch.no_grad():
        layer.train().sequence(x, _zeros(layer, x.shape[1], x.shape[-2], x.shape[-1]))
    return layer.eval()


def _zeros(layer: SMA, batch: int, h: int, w: int) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(batch, *s) for k, s in layer.state_shapes(h, w).items()}


def _input(t: int, b: int, c: int, hw: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, b, c, hw, hw, generator=g) * 2.0


def test_state_layout() -> None:
    layer = SMA(16, window=8)
    assert layer.state_shapes(5, 7) == {
        "u1": (16, 5, 7),
        "u3": (16, 5, 7),
        "u5": (16, 5, 7),
        "u7": (16, 5, 7),
        "ring": (7,),
    }
    assert "ring" not in SMA(16, temporal="paper", time_steps=8).state_shapes(5, 7)


@torch.no_grad()
def test_step_and_sequence_agree_across_two_sequences() -> None:
    torch.manual_seed(0)
    layer = SMA(16, window=8)
    _calibrated(layer, _input(6, 2, 16, 8, 1))
    x1, x2 = _input(6, 2, 16, 8, 2), _input(6, 2, 16, 8, 3)
    y1, s1 = layer.sequence(x1, _zeros(layer, 2, 8, 8))
    y2, s2 = layer.sequence(x2, s1)
    seq = torch.cat([y1, y2])
    state = _zeros(layer, 2, 8, 8)
    steps = []
    for x_t in torch.cat([x1, x2]):
        y_t, state = layer.step(x_t, state)
        steps.append(y_t)
    stepped = torch.stack(steps)
    assert (seq != 0).float().mean() > 0.05  # branches spike: the comparison means something
    assert (stepped - seq).abs().max().item() <= 1e-5
    assert list(state) == list(s2)
    for name in s2:
        assert (state[name] - s2[name]).abs().max().item() <= 1e-5, name
    # 12 steps through a K-1 = 7 ring: it holds the last 7 squeeze means, not zeros
    assert (s2["ring"] != 0).all()


@torch.no_grad()
@pytest.mark.parametrize("temporal", ["causal", "paper"])
def test_causality(temporal: str) -> None:
    torch.manual_seed(0)
    layer = SMA(16, temporal=temporal, time_steps=8, window=8)
    x = _input(8, 2, 16, 6, 4)
    _calibrated(layer, x)
    cut = 5
    x_changed = x.clone()
    x_changed[cut:] = _input(3, 2, 16, 6, 5) * 3
    y, _ = layer.sequence(x, _zeros(layer, 2, 6, 6))
    y_changed, _ = layer.sequence(x_changed, _zeros(layer, 2, 6, 6))
    assert not torch.equal(y[cut:], y_changed[cut:])
    if temporal == "causal":
        assert torch.equal(y[:cut], y_changed[:cut])
    else:  # the paper's FC over T lets the future reach back
        assert not torch.equal(y[:cut], y_changed[:cut])


def test_fuse_weights_are_products_of_branch_softmaxes() -> None:
    u = [torch.ones(2, 3, 4, 4) for _ in range(4)]
    w_t = torch.softmax(torch.randn(2, 4), dim=-1)
    w_c = torch.softmax(torch.randn(2, 4, 3), dim=-2)
    y = sum(fuse(u, w_t, w_c))
    assert isinstance(y, torch.Tensor)
    # with all-ones maps, Y[b, c] = sum_i w_t[b, i] w_c[b, i, c]
    expected = (w_t[:, :, None] * w_c).sum(1)
    assert torch.allclose(y[:, :, 0, 0], expected)


def test_paper_mode_limits() -> None:
    layer = SMA(8, temporal="paper", time_steps=8)
    with pytest.raises(ValueError, match="T=8"):
        layer.sequence(torch.zeros(4, 1, 8, 4, 4), _zeros(layer, 1, 4, 4))
    with pytest.raises(ValueError, match="causal"):
        layer.step(torch.zeros(1, 8, 4, 4), _zeros(layer, 1, 4, 4))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="temporal"):
        SMA(8, temporal="future")
    with pytest.raises(ValueError, match="odd"):
        SMA(8, kernels=(1, 2))
    with pytest.raises(ValueError, match="window"):
        SMA(8, window=2)
