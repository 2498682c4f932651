"""LIF neuron (spec §1): golden trajectory, surrogate gradient, detached reset, modes."""

from __future__ import annotations

import math

import pytest
import torch

from smastream.engine.lif import LIF, SplitLIF, lif_step, spike

# Hand-computed for tau = 2, threshold 1, hard reset: H = V/2 + X/2.
GOLDEN_X = [0.5, 1.5, 2.5, 0.0, 2.0, 1.0, 1.0, 1.0, -1.0, 4.0]
GOLDEN_H = [0.25, 0.875, 1.6875, 0.0, 1.0, 0.5, 0.75, 0.875, -0.0625, 1.96875]
GOLDEN_S = [0, 0, 1, 0, 1, 0, 0, 0, 0, 1]  # step 5 sits exactly on the threshold: fires
GOLDEN_V = [0.25, 0.875, 0.0, 0.0, 0.0, 0.5, 0.75, 0.875, -0.0625, 0.0]


@pytest.mark.parametrize("surrogate", [False, True])
def test_golden_trajectory(surrogate: bool) -> None:
    v = torch.zeros(1)
    spikes, membranes = [], []
    for x in GOLDEN_X:
        s, v = lif_step(torch.tensor([x]), v, surrogate=surrogate)
        spikes.append(s.item())
        membranes.append(v.item())
    assert spikes == GOLDEN_S
    assert membranes == GOLDEN_V


def test_module_sequence_matches_golden() -> None:
    lif = LIF().eval()
    x = torch.tensor(GOLDEN_X)[:, None, None].expand(10, 2, 3)  # [T, B, F]
    s, v = lif.sequence(x, torch.zeros(2, 3))
    assert s.shape == (10, 2, 3)
    assert torch.equal(s[:, 0, 0], torch.tensor(GOLDEN_S, dtype=torch.float32))
    assert torch.equal(v, torch.zeros(2, 3))  # last step fired and reset
    # The membrane before the reset equals the golden H at a non-firing step.
    _, v9 = lif.sequence(x[:9], torch.zeros(2, 3))
    assert torch.allclose(v9, torch.full((2, 3), GOLDEN_H[8]))


@pytest.mark.parametrize(
    ("shape", "tau", "dtype", "threads"),
    [
        ((12, 3, 5), 2.0, torch.float32, 1),
        ((7, 2, 3, 40, 41), 2.0, torch.float32, 2),  # 9,840 neurons: tiles on 2 threads
        ((9, 4, 300), 3.0, torch.float32, 2),  # 1/tau inexact
        ((8, 2, 500), 2.0, torch.bfloat16, 2),  # bf16 currents (autocast), float32 membrane
    ],
)
def test_sequence_equals_the_step_loop_bit_for_bit(
    shape: tuple[int, ...], tau: float, dtype: torch.dtype, threads: int
) -> None:
    # In training, sequence() runs the T steps in one kernel per layer (_LIFSequence);
    # spikes, the last membrane and the gradients of the currents and of the initial
    # membrane must be those of calling the module step by step, bit for bit. Currents
    # on the threshold (exactly 1 after the leak) and a loss on the last membrane included.
    g = torch.Generator().manual_seed(len(shape))
    lif = LIF(tau=tau).train()
    x0 = (torch.randn(shape, generator=g) * 1.5).to(dtype)
    v0 = torch.randn(shape[1:], generator=g) * 0.5
    x0[0].view(-1)[::7] = 2.0
    v0.view(-1)[::7] = 0.0  # there H = 0 + (2 - 0)/2 = 1.0 exactly at step 0: fires
    w = torch.randn(shape, generator=g)
    wv = torch.randn(shape[1:], generator=g)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        for fused in (True, False):
            x = x0.clone().requires_grad_(True)
            v = v0.clone().requires_grad_(True)
            if fused:
                s, v_last = lif.sequence(x, v)
            else:
                steps, v_last = [], v
                for t in range(shape[0]):
                    s_t, v_last = lif(x[t], v_last)
                    steps.append(s_t)
                s = torch.stack(steps)
            ((s * w).sum() + (v_last * wv).sum()).backward()
            assert x.grad is not None and v.grad is not None
            results.append((s.detach(), v_last.detach(), x.grad, v.grad))
    finally:
        torch.set_num_threads(saved)
    (s_f, v_f, gx_f, gv_f), (s_p, v_p, gx_p, gv_p) = results
    assert s_f.dtype == s_p.dtype == torch.float32 and gx_f.dtype == dtype
    assert s_f.sum() > 0 and (s_f == 0).any()
    for a, b in ((s_f, s_p), (v_f, v_p), (gx_f, gx_p), (gv_f, gv_p)):
        assert torch.equal(a, b)


def test_sequence_outside_training_is_the_plain_step_loop() -> None:
    lif = LIF().eval()
    x = torch.randn(5, 2, 3, requires_grad=True)
    s, _ = lif.sequence(x, torch.zeros(2, 3))
    assert not s.requires_grad  # eval: the plain comparison, no surrogate path
    with pytest.raises(ValueError, match="shapes differ"):
        lif.sequence(x, torch.zeros(3, 2))


def test_arctan_surrogate_gradient() -> None:
    h = torch.tensor([1.0, 1.5, 0.2, -3.0], requires_grad=True)
    spike(h, 1.0, surrogate=True, alpha=2.0).sum().backward()
    alpha = 2.0
    expected = [
        (alpha / 2) / (1 + (math.pi * alpha * (hv - 1.0) / 2) ** 2) for hv in [1.0, 1.5, 0.2, -3.0]
    ]
    assert h.grad is not None
    assert torch.allclose(h.grad, torch.tensor(expected), atol=1e-7)
    assert h.grad[0].item() == pytest.approx(1.0)


def test_plain_comparison_has_no_gradient_path() -> None:
    h = torch.tensor([0.5, 1.0], requires_grad=True)
    s = spike(h, 1.0, surrogate=False)
    assert not s.requires_grad
    assert s.tolist() == [0.0, 1.0]


def test_reset_is_detached() -> None:
    # v_next = H·(1 - S) with S detached: d v_next / d x = 1/tau where silent, 0 where fired.
    x = torch.tensor([0.5, 3.0], requires_grad=True)
    _, v = lif_step(x, torch.zeros(2), surrogate=True)
    v.sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.5, 0.0]


def test_module_picks_spike_function_from_its_mode() -> None:
    lif = LIF()
    x = torch.tensor([2.5], requires_grad=True)
    s_train, _ = lif.train()(x, torch.zeros(1))
    s_eval, _ = lif.eval()(x, torch.zeros(1))
    assert s_train.requires_grad and not s_eval.requires_grad
    assert torch.equal(s_train, s_eval)


def test_other_tau() -> None:
    # tau = 4: H = 3/4 V + 1/4 X
    s, v = lif_step(torch.tensor([1.0, 2.0]), torch.tensor([0.8, 0.8]), tau=4.0)
    assert s.tolist() == [0.0, 1.0]
    assert v[0].item() == pytest.approx(0.6 + 0.25)
    assert v[1].item() == 0.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tau"):
        lif_step(torch.zeros(1), torch.zeros(1), tau=0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        lif_step(torch.zeros(2), torch.zeros(()))
    with pytest.raises(ValueError, match="tau"):
        LIF(tau=0.0)


def test_charge_uses_the_reference_order_of_operations() -> None:
    # v + (x - v)/tau (the reference), not v·(1 - 1/tau) + x/tau: the two round differently
    # in about a third of these float32 draws, and a 1-ulp difference at the threshold
    # flips a spike. Threshold far away so that no reset hides the membrane.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, generator=g) * 2.0
    v = torch.rand(100_000, generator=g)
    reference = v + (x - v) / 2.0
    rearranged = torch.add(v * 0.5, x, alpha=0.5)
    assert (reference != rearranged).sum() > 1000  # the orders really do differ
    _, v_next = lif_step(x, v, tau=2.0, threshold=1e9)
    assert torch.equal(v_next, reference)


def test_split_lif_is_two_lifs_side_by_side_in_training_and_in_steps() -> None:
    # The first 3 of 7 neurons leak with tau 2, the other 4 with tau 8: each part is the
    # plain LIF of its tau (fused training sequence, gradients included), and the module's
    # step loop is its sequence.
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(6, 4, 7, generator=g) * 1.5
    v0 = torch.randn(4, 7, generator=g) * 0.5
    w = torch.randn(6, 4, 7, generator=g)
    split = SplitLIF(3, tau=2.0, slow_tau=8.0).train()
    x = x0.clone().requires_grad_(True)
    s, v_last = split.sequence(x, v0)
    (s * w).sum().backward()
    assert x.grad is not None
    for part, tau in ((slice(0, 3), 2.0), (slice(3, 7), 8.0)):
        xp = x0[..., part].clone().requires_grad_(True)
        sp, vp = LIF(tau=tau).train().sequence(xp, v0[..., part].contiguous())
        (sp * w[..., part]).sum().backward()
        assert xp.grad is not None
        assert torch.equal(s[..., part], sp) and torch.equal(v_last[..., part], vp)
        assert torch.equal(x.grad[..., part], xp.grad)
    assert s.sum() > 0 and (s == 0).any()
    with torch.no_grad():
        v, steps = v0, []
        for t in range(6):
            s_t, v = split.eval()(x0[t], v)
            steps.append(s_t)
        assert torch.equal(torch.stack(steps), s) and torch.equal(v, v_last)
    with pytest.raises(ValueError, match="split must be >= 1"):
        SplitLIF(0)
    with pytest.raises(ValueError, match="longer than split 3"):
        split(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="tau"):
        SplitLIF(2, slow_tau=0.5)
