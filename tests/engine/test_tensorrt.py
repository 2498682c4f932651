"""TensorRT backend: the missing-dependency message (here), the engine cache key and
sidecar, calibration batches (ONNX Runtime only), and - where TensorRT and a GPU exist -
engine parity, ping-pong state and CUDA graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smastream.engine.export import export_onnx
from smastream.engine.model import save_checkpoint
from smastream.engine.ort_runtime import OrtRuntime, read_onnx_metadata
from smastream.engine.runtime import open_runtime
from smastream.engine.trt_runtime import (
    EngineKey,
    calibration_batches,
    check_engine_key,
    engine_key,
    read_sidecar,
    sidecar_path,
    tensorrt_installed,
    write_engine,
)
from smastream.errors import DependencyError, FormatError, SmastreamError
from tests.engine.test_export import main, small_config, spiking_model  # noqa: F401


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


HAVE_TRT = tensorrt_installed() and _cuda()
needs_trt = pytest.mark.skipif(
    not HAVE_TRT, reason="TensorRT and a CUDA GPU are needed (neither is on this machine)"
)


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trt") / "small.onnx"
    export_onnx(spiking_model(small_config()), path, steps_per_window=2, bin_us=10_000)
    return path


# -- without TensorRT ---------------------------------------------------------------------


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here")
def test_export_tensorrt_without_tensorrt_is_one_line(
    main,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, spiking_model(small_config()), {"bin_us": 10_000})
    out = tmp_path / "m.plan"
    assert main(["export", str(ckpt), "--backend", "tensorrt", "--fp16", "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "TensorRT is not installed" in err and "pip install smastream[tensorrt]" in err
    assert "JetPack" in err
    assert not out.exists() and not out.with_suffix(".onnx").exists()  # failed first
    assert main(["bench-engine", "--backend", "tensorrt", "--preset", "edge"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install smastream[tensorrt]" in err


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here")
def test_opening_an_engine_without_tensorrt_says_how_to_install(
    small_onnx: Path, tmp_path: Path
) -> None:
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"\0" * 16)
    with pytest.raises(DependencyError, match=r"pip install smastream\[tensorrt\]"):
        open_runtime(plan)
    with pytest.raises(DependencyError, match="TensorRT is not installed"):
        open_runtime(small_onnx, backend="tensorrt")


# -- cache key and sidecar (pure) ---------------------------------------------------------


def test_engine_key_changes_with_every_part(small_onnx: Path, tmp_path: Path) -> None:
    key = engine_key(small_onnx, "fp16", "10.3.0", "NVIDIA H100 80GB HBM3")
    assert len(key.onnx_sha256) == 64
    other = tmp_path / "other.onnx"
    other.write_bytes(small_onnx.read_bytes() + b"\0")
    stems = {
        key.file_stem(),
        engine_key(small_onnx, "fp32", "10.3.0", "NVIDIA H100 80GB HBM3").file_stem(),
        engine_key(small_onnx, "fp16", "10.4.0", "NVIDIA H100 80GB HBM3").file_stem(),
        engine_key(small_onnx, "fp16", "10.3.0", "Orin").file_stem(),
        engine_key(other, "fp16", "10.3.0", "NVIDIA H100 80GB HBM3").file_stem(),
    }
    assert len(stems) == 5
    assert all(" " not in s and "/" not in s for s in stems)
    with pytest.raises(ValueError, match="'fp8'"):
        engine_key(small_onnx, "fp8", "10.3.0", "x")


def test_sidecar_round_trip_and_mismatch_is_rejected(small_onnx: Path, tmp_path: Path) -> None:
    key = EngineKey("ab" * 32, "10.3.0", "Orin", "fp16")
    meta = read_onnx_metadata(small_onnx)
    plan = write_engine(tmp_path / "e" / "m.plan", b"engine bytes", key, meta)
    assert plan.read_bytes() == b"engine bytes"
    side = read_sidecar(plan)
    assert side["metadata"] == meta and sidecar_path(plan).name == "m.plan.json"
    assert check_engine_key(side["key"], "10.3.0", "Orin", plan) == key
    with pytest.raises(SmastreamError, match=r"TensorRT 10\.3\.0 \(this is 10\.5\.1\)"):
        check_engine_key(side["key"], "10.5.1", "Orin", plan)
    with pytest.raises(SmastreamError, match=r"GPU 'Orin'.*rebuild"):
        check_engine_key(side["key"], "10.3.0", "NVIDIA A100", plan)
    with pytest.raises(FormatError, match="no valid key"):
        check_engine_key({"tensorrt": "10"}, "10", "x", plan)
    with pytest.raises(FormatError, match="no sidecar"):
        read_sidecar(tmp_path / "lonely.plan")


# -- calibration data (runs with ONNX Runtime) --------------------------------------------


def test_calibration_batches_carry_the_state_of_each_recording(small_onnx: Path) -> None:
    rng = np.random.default_rng(0)
    recs = [
        [rng.poisson(0.5, (2, 2, 32, 64)).astype(np.float32) for _ in range(3)],
        [rng.poisson(0.5, (2, 2, 32, 64)).astype(np.float32) for _ in range(2)],
    ]
    batches = list(calibration_batches(small_onnx, recs))
    assert len(batches) == 5
    rt = OrtRuntime(small_onnx, threads=1)
    names = {f"{n}_in" for n in rt.state_names} | {"frames"}
    for i, (rec, k) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]):
        batch = batches[i]
        assert set(batch) == names
        assert batch["frames"].shape == (2, 1, 2, 32, 64)
        np.testing.assert_array_equal(batch["frames"][:, 0], recs[rec][k])
        if k == 0:
            rt.reset()  # each recording starts from zero state
            assert all(not batch[f"{n}_in"].any() for n in rt.state_names)
        for n, v in rt.state().items():
            np.testing.assert_array_equal(batch[f"{n}_in"], v)
        rt.step(recs[rec][k])
    assert any(batches[2][f"{n}_in"].any() for n in rt.state_names)  # state really carried


def test_calibration_windows_from_real_recordings(real_data: Path) -> None:
    from smastream.commands.export import calibration_recordings, event_files

    files, skipped = event_files(real_data)
    assert {f.name for f in files} >= {"sample.aedat4", "davis.aedat4"}
    assert any(f.name == "SOURCES.md" for f in skipped)
    recs = calibration_recordings(real_data, (64, 32), 10_000, 2, limit=40)
    n = sum(len(r) for r in recs)
    assert 0 < n <= 40
    assert all(w.shape == (2, 2, 32, 64) and w.dtype == np.float32 for r in recs for w in r)
    assert any(w.sum() > 0 for r in recs for w in r)


# -- with TensorRT and a GPU --------------------------------------------------------------


@needs_trt
def test_tensorrt_engine_matches_onnxruntime(small_onnx: Path, tmp_path: Path) -> None:
    from smastream.engine.trt_runtime import TrtRuntime, build_or_load

    plan = build_or_load(small_onnx, "fp32", cache_dir=tmp_path / "cache")
    again = build_or_load(small_onnx, "fp32", cache_dir=tmp_path / "cache")
    assert plan == again and plan.stat().st_mtime_ns == again.stat().st_mtime_ns  # cache hit
    ref = OrtRuntime(small_onnx, threads=1)
    rng = np.random.default_rng(1)
    windows = [rng.poisson(0.5, (2, 2, 32, 64)).astype(np.float32) for _ in range(30)]
    for graph in (False, True):
        rt = TrtRuntime(plan, cuda_graph=graph)
        ref.reset()
        first = []
        for frames in windows:
            a, b = ref.step(frames), rt.step(frames)
            first.append(b)
            assert np.abs(a - b).max() <= 1e-3
        rt.reset()
        np.testing.assert_allclose(rt.step(windows[0]), first[0], atol=1e-6)
