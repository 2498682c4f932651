"""Attention ZoneOut (spec §4): the selection rule, the copy, gradients, determinism, modes."""

from __future__ import annotations

import pytest
import torch

from smastream.engine.azo import azo_apply, azo_mask
from smastream.engine.sma import SMA


def _weights(t: int, b: int, n: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w_t = torch.softmax(torch.randn(t, b, n, generator=g), dim=-1)
    w_c = torch.softmax(torch.randn(t, b, n, c, generator=g), dim=-2)
    return w_t, w_c


def _reference_mask(w_t: torch.Tensor, w_c: torch.Tensor, rtr: int, rcr: int) -> torch.Tensor:
    """The rule written out with Python loops over plain floats."""
    t_steps, batch, n_branch, channels = w_c.shape
    mask = torch.zeros(t_steps, n_branch, channels, dtype=torch.bool)
    for i in range(n_branch):
        step_score = [sum(float(w_t[t, b, i]) for b in range(batch)) for t in range(t_steps)]
        steps = sorted(range(t_steps), key=lambda t: step_score[t])[: t_steps // rtr]
        chan_score = [
            sum(float(w_c[t, b, i, c]) for t in steps for b in range(batch))
            for c in range(channels)
        ]
        chans = sorted(range(channels), key=lambda c: chan_score[c])[: channels // rcr]
        for t in steps:
            if t == 0:
                continue
            for c in chans:
                mask[t, i, c] = True
    return mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_matches_direct_recomputation(seed: int) -> None:
    w_t, w_c = _weights(12, 3, 4, 20, seed)
    got = azo_mask(w_t, w_c, rtr=4, rcr=10)
    assert torch.equal(got, _reference_mask(w_t, w_c, 4, 10))
    per_branch = got.sum(dim=(0, 2))
    # 3 steps x 2 channels per branch, minus a row if step 0 was chosen
    assert all(v in (4, 6) for v in per_branch.tolist())


def test_paper_settings_touch_about_2_3_percent() -> None:
    w_t, w_c = _weights(16, 2, 4, 128, 5)
    frac = azo_mask(w_t, w_c, 4, 10).float().mean().item()
    assert 3 * 12 / (16 * 128) <= frac <= 4 * 12 / (16 * 128)


def test_apply_changes_exactly_the_chosen_cells_with_pre_replacement_values() -> None:
    t_steps, batch, n, c = 8, 2, 4, 10
    w_t, w_c = _weights(t_steps, batch, n, c, 3)
    # Force branch 0 to pick two consecutive steps (3 and 4) to expose any chaining.
    w_t[:, :, 0] = 1.0
    w_t[3, :, 0] = 0.0
    w_t[4, :, 0] = 0.1
    mask = azo_mask(w_t, w_c, rtr=4, rcr=5)
    assert mask[3, 0].any() and mask[4, 0].any()
    p = torch.randn(t_steps, batch, c, 3, 3)
    original = p.clone()
    out = azo_apply(p, mask[:, 0])
    assert torch.equal(p, original)  # the input is not modified
    changed = (out != p).any(dim=(1, 3, 4))  # [T, C]
    assert torch.equal(changed, mask[:, 0])
    for t, ch in mask[:, 0].nonzero().tolist():
        assert torch.equal(out[t, :, ch], original[t - 1, :, ch])  # pre-replacement copy
    ch = int(mask[4, 0].nonzero()[0])
    assert torch.equal(out[4, :, ch], original[3, :, ch])  # not original[2]: no chaining


def test_gradients_flow_through_copied_values() -> None:
    mask = torch.zeros(4, 3, dtype=torch.bool)
    mask[2, 1] = True
    p = torch.randn(4, 2, 3, 5, requires_grad=True)
    azo_apply(p, mask).sum().backward()
    assert p.grad is not None
    expected = torch.ones_like(p)
    expected[1, :, 1] = 2.0  # feeds itself and the copy at step 2
    expected[2, :, 1] = 0.0  # replaced
    assert torch.equal(p.grad, expected)


def full_select_azo(p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """AZO as it was first written: a full select of the shifted map."""
    previous = torch.cat([p[:1], p[:-1]], dim=0)
    m = mask.view(mask.shape[0], 1, mask.shape[1], *([1] * (p.dim() - 3)))
    return torch.where(m, previous, p)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_apply_equals_the_full_select_bit_for_bit(seed: int) -> None:
    # azo_apply touches only the chosen cells; values and gradients must be those of
    # where(mask, p shifted by one step, p), including runs of consecutive chosen steps
    # and a mask row 0 (which changes nothing).
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(9, 7, generator=g) < 0.3
    mask[3:6, 2] = True
    w = torch.randn(9, 3, 7, 4, 5, generator=g)
    p0 = torch.randn(9, 3, 7, 4, 5, generator=g)
    grads = []
    for form in (azo_apply, full_select_azo):
        p = p0.clone().requires_grad_(True)
        out = form(p, mask)
        (out * w).sum().backward()
        grads.append((out.detach(), p.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])


def test_step_zero_is_never_replaced() -> None:
    w_t, w_c = _weights(4, 1, 4, 10, 0)
    w_t[0] = 0.0  # step 0 has the smallest weight in every branch
    mask = azo_mask(w_t, w_c, rtr=4, rcr=10)
    assert not mask.any()


def test_bad_arguments() -> None:
    w_t, w_c = _weights(4, 1, 4, 10, 0)
    with pytest.raises(ValueError, match="rtr"):
        azo_mask(w_t, w_c, rtr=0)
    with pytest.raises(ValueError, match="w_t"):
        azo_mask(w_t[:, :, :2], w_c)
    with pytest.raises(ValueError, match="mask"):
        azo_apply(torch.zeros(4, 1, 10), torch.zeros(4, 9, dtype=torch.bool))


def _sma_pair(temporal: str) -> tuple[SMA, SMA]:
    torch.manual_seed(0)
    with_azo = SMA(20, temporal=temporal, time_steps=8, window=8, rcr=4)
    without = SMA(20, temporal=temporal, time_steps=8, window=8, azo=False)
    without.load_state_dict(with_azo.state_dict())
    return with_azo, without


def _state(layer: SMA, batch: int) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(batch, *s) for k, s in layer.state_shapes(6, 6).items()}


@pytest.mark.parametrize("temporal", ["paper", "causal"])
def test_sma_azo_deterministic_training_only(temporal: str) -> None:
    with_azo, without = _sma_pair(temporal)
    x = torch.randn(8, 3, 20, 6, 6, generator=torch.Generator().manual_seed(1)) * 3
    outs = []
    for seed in (11, 12):
        torch.manual_seed(seed)
        outs.append(with_azo.train().sequence(x, _state(with_azo, 3))[0])
    assert torch.equal(outs[0], outs[1])  # no randomness
    plain = without.train().sequence(x, _state(without, 3))[0]
    assert not torch.equal(outs[0], plain)  # it did something in training
    # In eval mode it does nothing (same weights and BN statistics on both).
    without.load_state_dict(with_azo.state_dict())
    a = with_azo.eval().sequence(x, _state(with_azo, 3))[0]
    b = without.eval().sequence(x, _state(without, 3))[0]
    assert torch.equal(a, b)
