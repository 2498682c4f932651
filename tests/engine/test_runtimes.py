"""Runtimes: ONNX Runtime vs PyTorch parity with state fed back, reset, ping-pong buffers,
the factory, and ``smastream bench-engine``."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from smastream.engine.export import export_onnx
from smastream.engine.lif import LIF
from smastream.engine.model import SMASNN, save_checkpoint
from smastream.engine.ort_runtime import OrtRuntime
from smastream.engine.runtime import open_runtime
from smastream.engine.torch_runtime import TorchRuntime
from smastream.errors import SmastreamError
from tests.engine.test_export import main, small_config, spiking_model  # noqa: F401

RATE = 0.3  # Poisson events per pixel per bin: every layer spikes (asserted below)
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """torch with 2 OpenMP threads on a loaded 2-core machine is up to 60x slower (its
    threads spin at barriers); one thread keeps these tests fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _windows(shape: tuple[int, ...], n: int, seed: int, rate: float = RATE) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.poisson(rate, size=shape).astype(np.float32) for _ in range(n)]


class LifRecorder:
    """Per LIF layer of a torch model, through forward hooks: spikes and neuron-steps (to
    prove every layer fires), and each neuron's closest approach of ``h`` to the threshold
    in the current window (to tell a rounding straddle from a real mismatch)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.spikes: dict[str, float] = {}
        self.total: dict[str, int] = {}
        self.closest: dict[str, torch.Tensor] = {}
        self.handles = [
            m.register_forward_hook(self._hook(name))
            for name, m in model.named_modules()
            if isinstance(m, LIF)
        ]

    def _hook(self, name: str) -> Any:
        def hook(module: LIF, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            x, v = inputs
            h = torch.add(v * (1.0 - 1.0 / module.tau), x, alpha=1.0 / module.tau)
            gap = (h - module.threshold).abs()
            old = self.closest.get(name)
            self.closest[name] = gap if old is None else torch.minimum(old, gap)
            spikes = output[0]
            self.spikes[name] = self.spikes.get(name, 0.0) + float(spikes.sum())
            self.total[name] = self.total.get(name, 0) + spikes.numel()

        return hook

    def rates(self) -> dict[str, float]:
        return {n: self.spikes[n] / self.total[n] for n in self.spikes}

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def lif_module_of(state_name: str, model: SMASNN) -> str | None:
    """The LIF module whose membrane a state item is (``None`` for ring buffers)."""
    if m := re.fullmatch(r"block(\d+)_v", state_name):
        return f"blocks.{int(m[1]) - 1}.lif"
    if m := re.fullmatch(r"block(\d+)_sma_u(\d+)", state_name):
        return f"blocks.{int(m[1]) - 1}.sma.lifs.{model.config.sma_kernels.index(int(m[2]))}"
    if m := re.fullmatch(r"head_fc(\d+)_v", state_name):
        return f"head.lifs.{int(m[1]) - 1}"
    return None


STRADDLE = 1e-5  # |h - threshold| below which float rounding may decide a spike


def _lockstep(
    model: SMASNN, onnx_path: Path, windows: list[np.ndarray], step_onnx: Path | None = None
) -> dict[str, Any]:
    """Run consecutive windows through both runtimes, both starting every window from the
    reference's state (the reference feeds its state back window after window).

    A spike flip - a membrane within float rounding of the threshold, firing in one
    backend and not the other - changes everything downstream of it, and through the
    state every later window: the chain would then compare two different trajectories.
    Starting each window from the same state confines a flip to its window. Such a window
    is counted and replayed one step at a time (``step_onnx``: the same network exported
    with S=1; not needed when S=1) to find the first step and the first state tensor, in
    network order, that differs by more than ``TOL``: that must be a membrane, and every
    neuron that differs in it must have come within ``STRADDLE`` of the threshold at that
    step (the membranes only drift by float rounding, ~1e-7, before it).
    """
    steps = windows[0].shape[0]
    ref = TorchRuntime(model, steps_per_window=steps, device="cpu")
    rt = OrtRuntime(onnx_path, threads=1)
    if steps == 1:
        ref1, rt1 = ref, rt
    else:
        assert step_onnx is not None, "an S>1 comparison needs the S=1 export for replays"
        ref1 = TorchRuntime(model, steps_per_window=1, device="cpu")
        rt1 = OrtRuntime(step_onnx, threads=1)
    rec = LifRecorder(ref.model)
    clean_worst = 0.0
    clean_mismatch = 0
    flip_windows: list[int] = []
    flipped = 0
    not_straddles: list[str] = []
    logits = []
    try:
        for k, frames in enumerate(windows):
            start = ref.state()
            rt.set_state(start)
            a = ref.step(frames)
            b = rt.step(frames)
            logits.append(a)
            sa, sb = ref.state(), rt.state()
            if all(np.abs(sa[n] - sb[n]).max() <= TOL for n in sa):
                clean_worst = max(clean_worst, float(np.abs(a - b).max()))
                clean_mismatch += int((a.argmax(1) != b.argmax(1)).sum())
                continue
            flip_windows.append(k)
            count, problem = _first_flip(model, ref1, rt1, rec, start, frames)
            flipped += count
            if problem:
                not_straddles.append(f"window {k}: {problem}")
    finally:
        rec.close()
    neurons = sum(int(np.prod(shape)) for n, shape in model.state_spec() if lif_module_of(n, model))
    return {
        "clean_logits": clean_worst,
        "clean_class_mismatch": clean_mismatch,
        "flip_windows": flip_windows,
        "flip_rate": flipped / (neurons * steps * len(windows)),
        "not_straddles": not_straddles,
        "rates": rec.rates(),
        "spread": float(np.concatenate(logits).std(axis=0).max()),
        "windows": len(windows),
    }


def _first_flip(
    model: SMASNN,
    ref1: TorchRuntime,
    rt1: OrtRuntime,
    rec: LifRecorder,
    start: dict[str, np.ndarray],
    frames: np.ndarray,
) -> tuple[int, str | None]:
    """Replay a window step by step from ``start``, each runtime on its own state as in
    the window (the S=1 and S=S graphs compute bit-identical steps); returns
    (flipped neurons, problem)."""
    ref1.set_state(start)
    rt1.set_state(start)
    for t in range(frames.shape[0]):
        rec.closest.clear()
        ref1.step(frames[t : t + 1])
        rt1.step(frames[t : t + 1])
        sa, sb = ref1.state(), rt1.state()
        differ = [n for n in sa if np.abs(sa[n] - sb[n]).max() > TOL]
        if not differ:
            continue
        first = differ[0]
        mask = np.abs(sa[first] - sb[first]) > TOL
        layer = lif_module_of(first, model)
        if layer is None:
            return int(mask.sum()), f"step {t}: {first} differs first (not a membrane)"
        gap = float(rec.closest[layer].numpy()[mask].max())
        if gap > STRADDLE:
            return int(mask.sum()), f"step {t}: {first}, |h - θ| up to {gap:.2e}"
        return int(mask.sum()), None
    return 0, "the window differs but no single step does"


def _assert_parity(result: dict[str, Any], min_clean: float) -> None:
    rates = result["rates"]
    assert len(rates) == 15
    silent = [n for n, r in rates.items() if r == 0.0]
    saturated = [n for n, r in rates.items() if r > 0.9]
    assert not silent, f"layers that never spiked (parity would prove nothing): {silent}"
    assert not saturated, f"layers firing everywhere: {saturated}"
    assert result["spread"] > 1e-3, "logits do not move: the head is silent"
    assert not result["not_straddles"], result["not_straddles"]
    clean = result["windows"] - len(result["flip_windows"])
    assert clean >= min_clean * result["windows"], result
    assert result["flip_rate"] <= 1e-6, result  # measured 5e-8 (edge) .. 1e-7 (paper)
    assert result["clean_logits"] <= TOL, result
    assert result["clean_class_mismatch"] == 0, result


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> tuple[SMASNN, Path]:
    model = spiking_model("edge", seed=3)
    path = tmp_path_factory.mktemp("edge") / "edge.onnx"
    export_onnx(model, path, steps_per_window=4, bin_us=50_000)
    export_onnx(model, path.with_name("edge-s1.onnx"), steps_per_window=1, bin_us=50_000)
    return model, path


def test_edge_parity_over_100_windows(edge: tuple[SMASNN, Path]) -> None:
    """Measured (seeds 0, 3, 5): 1-6 of 100 windows hold a flipped neuron, each within
    4e-7 of the threshold; every other window matches to 3e-7 with the same classes."""
    model, path = edge
    windows = _windows((4, 2, 64, 64), 100, seed=1)
    result = _lockstep(model, path, windows, path.with_name("edge-s1.onnx"))
    _assert_parity(result, min_clean=0.9)


def _paper_parity(tmp_path: Path, n_windows: int, min_clean: float) -> None:
    model = spiking_model("paper-causal", seed=4)
    path = tmp_path / "paper.onnx"
    export_onnx(model, path, steps_per_window=1)
    result = _lockstep(model, path, _windows((1, 2, 128, 128), n_windows, seed=2))
    _assert_parity(result, min_clean)


def test_paper_parity_short(tmp_path: Path) -> None:
    """The paper preset is ~12 GMAC per step: S=1 and 6 windows here (~10 s). About 5 M
    neurons per step make a flip in 1 of 4 windows likely (measured 2 of 8)."""
    _paper_parity(tmp_path, 6, min_clean=0.5)


@pytest.mark.slow
def test_paper_parity_100_windows(tmp_path: Path) -> None:
    _paper_parity(tmp_path, 100, min_clean=0.5)


@pytest.mark.parametrize("head_slow_tau", [None, 8.0])
def test_non_square_parity(tmp_path: Path, head_slow_tau: float | None) -> None:
    # With slow head neurons (SMASNNConfig.head_slow_tau) the graph holds a Slice + Concat
    # around two LIF updates per head layer; ONNX Runtime must step them as torch does.
    config = dataclasses.replace(small_config(), head_slow_tau=head_slow_tau)
    model = spiking_model(config, seed=6 if head_slow_tau is None else 7)
    path = tmp_path / "small.onnx"
    export_onnx(model, path, steps_per_window=3)
    export_onnx(model, tmp_path / "small-s1.onnx", steps_per_window=1)
    windows = _windows((3, 2, 32, 64), 20, seed=3, rate=0.5)
    result = _lockstep(model, path, windows, tmp_path / "small-s1.onnx")
    assert result["clean_logits"] <= TOL and result["clean_class_mismatch"] == 0
    assert not result["not_straddles"] and len(result["flip_windows"]) <= 2
    assert result["spread"] > 1e-3, "logits do not move: the head is silent"


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_reset_reproduces_a_fresh_run(edge: tuple[SMASNN, Path], backend: str) -> None:
    model, path = edge

    def fresh() -> Any:
        if backend == "onnxruntime":
            return OrtRuntime(path, threads=1)
        return TorchRuntime(model, steps_per_window=4, device="cpu")

    windows = _windows((4, 2, 64, 64), 4, seed=7)
    rt = fresh()
    first = [rt.step(w) for w in windows]
    rt.reset()
    assert all(v == 0.0 for v in rt.state_norms().values())
    again = [rt.step(w) for w in windows]
    other = [fresh().step(windows[0])]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[0], other[0])
    # The state is carried: the same window after others gives other logits.
    assert not np.array_equal(rt.step(windows[0]), first[0])
    assert any(v > 0 for v in rt.state_norms().values())


def test_ping_pong_bindings_match_a_plain_session(edge: tuple[SMASNN, Path]) -> None:
    """Output buffers of call n are the inputs of call n+1: same result as feeding the
    outputs back by hand, with no buffer reallocated."""
    _, path = edge
    rt = OrtRuntime(path, threads=1)
    pointers = [{n: v.data_ptr() for n, v in s.items()} for s in rt._sets]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    state = {i.name: np.zeros(i.shape, np.float32) for i in sess.get_inputs()[1:]}
    for frames in _windows((4, 2, 64, 64), 5, seed=8):
        got = rt.step(frames)
        outs = dict(zip(names, sess.run(None, {"frames": frames[:, None], **state}), strict=True))
        state = {n[: -len("_out")] + "_in": v for n, v in outs.items() if n != "logits"}
        np.testing.assert_array_equal(got, outs["logits"][:, 0])
        mine = rt.state()
        for n, v in mine.items():
            np.testing.assert_array_equal(v, state[f"{n}_in"])
    assert pointers == [{n: v.data_ptr() for n, v in s.items()} for s in rt._sets]


def test_step_rejects_a_wrong_window(edge: tuple[SMASNN, Path]) -> None:
    model, path = edge
    for rt in (OrtRuntime(path, threads=1), TorchRuntime(model, device="cpu")):
        s = rt.info.steps_per_window  # the graph's 4; the torch runtime's default 1
        with pytest.raises(ValueError, match=rf"\[{s}, 2, 64, 64\]"):
            rt.step(np.zeros((s, 2, 64, 32), np.float32))


def test_ort_options_are_checked(edge: tuple[SMASNN, Path]) -> None:
    _, path = edge
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        OrtRuntime(path, threads=0)
    with pytest.raises(ValueError, match="'gpu'"):
        OrtRuntime(path, device="gpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ValueError, match="CUDAExecutionProvider"):
            OrtRuntime(path, device="cuda")


def test_open_runtime_chooses_by_file_type(edge: tuple[SMASNN, Path], tmp_path: Path) -> None:
    model, path = edge
    rt = open_runtime(path, threads=1)
    assert isinstance(rt, OrtRuntime) and rt.info.backend == "onnxruntime"
    ckpt = tmp_path / "edge.pt"
    save_checkpoint(ckpt, model, {"bin_us": 20_000})
    ref = open_runtime(ckpt, steps_per_window=4)
    assert isinstance(ref, TorchRuntime)
    assert (ref.info.backend, ref.info.bin_us, ref.info.input_size) == ("torch", 20_000, (64, 64))
    frames = _windows((4, 2, 64, 64), 1, seed=9)[0]
    assert np.abs(ref.step(frames) - rt.step(frames)).max() <= TOL
    with pytest.raises(SmastreamError, match="smastream export"):
        open_runtime(ckpt, backend="onnxruntime")
    with pytest.raises(SmastreamError, match="cannot run on torch"):
        open_runtime(path, backend="torch")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(SmastreamError, match=r"unknown model file type '\.txt'"):
        open_runtime(tmp_path / "m.txt")
    with pytest.raises(SmastreamError, match="not found"):
        open_runtime(tmp_path / "nothing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(SmastreamError, match=r"bad\.onnx"):
        open_runtime(tmp_path / "bad.onnx")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CUDA graphs need a GPU")
def test_torch_cuda_graph_matches_eager(edge: tuple[SMASNN, Path]) -> None:
    _, path = edge  # same weights as spiking_model("edge", seed=3), which is built anew:
    # TorchRuntime moves its model to the GPU, and the fixture's model must stay on the CPU
    eager = TorchRuntime(spiking_model("edge", seed=3), device="cuda")
    graph = TorchRuntime(spiking_model("edge", seed=3), device="cuda", cuda_graph=True)
    cpu = OrtRuntime(path, threads=1)
    for frames in _windows((4, 2, 64, 64), 20, seed=10):
        a, b, c = eager.step(frames), graph.step(frames), cpu.step(frames)
        assert np.abs(a - b).max() <= TOL and np.abs(b - c).max() <= TOL
    graph.reset()
    first = _windows((4, 2, 64, 64), 1, seed=10)[0]
    fresh = TorchRuntime(spiking_model("edge", seed=3), device="cuda")
    np.testing.assert_allclose(graph.step(first), fresh.step(first))


# -- bench-engine -------------------------------------------------------------------------


def test_bench_engine_preset_json(main, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    argv = ["bench-engine", "--preset", "edge", "--windows", "4", "--warmup", "1"]
    assert main([*argv, "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["backend"], result["preset"], result["steps_per_window"]) == (
        "onnxruntime",
        "edge",
        4,
    )
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["steps_per_s"] == pytest.approx(4 * result["windows_per_s"])
    assert result["windows_per_s"] * result["mean_ms"] / 1e3 == pytest.approx(1.0)


def test_bench_engine_on_a_recording(
    main,  # noqa: F811
    edge: tuple[SMASNN, Path],
    real_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, path = edge
    rec = real_data / "tonic" / "sample.aedat4"
    argv = ["bench-engine", "--model", str(path), "--input", str(rec), "--windows", "3"]
    assert main([*argv, "--warmup", "0", "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["backend", "preset", "S"]
    assert table.splitlines()[1].split()[:4] == ["onnxruntime", "edge", "4", "3"]
    assert main([*argv, "--steps-per-window", "2"]) == 1
    assert "runs 4 steps per window, not 2" in capsys.readouterr().err


def test_state_io_convention_is_checked_in_one_place(tmp_path: Path) -> None:
    from smastream.engine.runtime import FRAMES, LOGITS, check_state_io
    from smastream.errors import FormatError

    assert check_state_io([FRAMES, "a_in", "b_in"], [LOGITS, "b_out", "a_out"], "m") == ("a", "b")
    with pytest.raises(FormatError, match=r"^m: .*b_out.*convention"):
        check_state_io([FRAMES, "a_in"], [LOGITS, "b_out"], "m")
    with pytest.raises(FormatError, match="convention"):
        check_state_io(["x", "a_in"], [LOGITS, "a_out"], tmp_path / "g.onnx")
