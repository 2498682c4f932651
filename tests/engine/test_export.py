"""ONNX export: BN folding, graph clean-up, allowed ops, static shapes, metadata, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from smastream import cli
from smastream.engine.export import (
    DEFAULT_BIN_US,
    DEFAULT_STEPS_PER_WINDOW,
    ChannelAffine,
    bin_us_of,
    check_graph,
    export_onnx,
    fold_batchnorm,
    fold_bn,
    read_metadata,
    resolve_class_names,
    simplify_graph,
    steps_of,
)
from smastream.engine.model import (
    SMASNN,
    SMASNNConfig,
    config_from_dict,
    config_to_dict,
    preset_config,
    save_checkpoint,
)
from smastream.engine.ort_runtime import OrtRuntime
from smastream.gestures import CLASS_NAMES

# The op types an exported graph may hold: the spec's TensorRT list plus Reshape.
ALLOWED_OPS = {
    "Conv",
    "Add",
    "Mul",
    "Relu",
    "Softmax",
    "ReduceMean",
    "MatMul",
    "Gemm",
    "MaxPool",
    "AveragePool",
    "GreaterOrEqual",
    "Cast",
    "Concat",
    "Slice",
    "Where",
    "Reshape",
}

COMMAND_HELP = {
    "export": "export a checkpoint as a stateful ONNX graph or a TensorRT engine",
    "bench-engine": "per-window latency and throughput of a runtime (backend, preset or model)",
}


# -- helpers shared with test_runtimes / test_tensorrt ------------------------------------


def spiking_model(config: SMASNNConfig | str, seed: int = 0, rate: float = 0.3) -> SMASNN:
    """An eval-mode network whose every LIF layer spikes on Poisson(``rate``) input.

    BN gets real-valued statistics and affine parameters: measured on Poisson input, then
    randomised (mean shifted, variance scaled, γ in [0.5, 1.5], β in [-0.2, 0.6]), so that
    folding is really exercised. The head FCs are scaled up (they have no BN and stay
    silent at default init).
    """
    cfg = preset_config(config) if isinstance(config, str) else config
    torch.manual_seed(seed)
    model = SMASNN(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    h, w = cfg.input_size
    x = torch.poisson(torch.full((2, 1, cfg.in_channels, h, w), rate), generator=g)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the one pass
        model.train()
        model.sequence(x)
        model.eval()
        for bn in bns:
            assert bn.running_mean is not None and bn.running_var is not None
            c = bn.num_features
            bn.running_mean += 0.1 * bn.running_var.sqrt() * torch.randn(c, generator=g)
            bn.running_var *= torch.empty(c).uniform_(0.5, 2.0, generator=g)
            bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=g))
            bn.bias.copy_(torch.empty(c).uniform_(-0.2, 0.6, generator=g))
        for fc in model.head.hidden:
            fc.weight.mul_(10.0)
    return model.eval()


def small_config() -> SMASNNConfig:
    """A tiny non-square network (H=32, W=64) with the full structure: fast, and it tells
    width from height."""
    return SMASNNConfig(
        preset="custom",
        input_size=(32, 64),
        widths=(4, 4, 8, 8, 8),
        head_hidden=(16, 16),
        head_pool=1,
        window=4,
    )


@pytest.fixture
def main(monkeypatch: pytest.MonkeyPatch):
    """``smastream.cli.main`` with this issue's commands registered (if the lead has not
    yet added their registry lines)."""
    for name, text in COMMAND_HELP.items():
        if name not in cli.COMMANDS:
            monkeypatch.setitem(cli.COMMANDS, name, text)
    return cli.main


# -- BN folding ---------------------------------------------------------------------------


def _random_bn(c: int, g: torch.Generator) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c).eval()
    with torch.no_grad():
        assert bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.05)
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn


@pytest.mark.parametrize(("kernel", "bias"), [(3, True), (1, False), (7, True)])
def test_fold_bn_matches_conv_then_bn(kernel: int, bias: bool) -> None:
    g = torch.Generator().manual_seed(kernel)
    conv = nn.Conv2d(5, 6, kernel, padding=kernel // 2, bias=bias)
    bn = _random_bn(6, g)
    x = torch.randn(2, 5, 9, 11, generator=g)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    folded = fold_bn(conv, bn)
    with torch.no_grad():
        want = bn(conv(x))
        got = folded(x)
    assert (got - want).abs().max().item() <= 1e-5
    assert all(torch.equal(v, conv.state_dict()[k]) for k, v in before.items())  # untouched


def test_fold_bn_rejects_a_mismatched_pair() -> None:
    with pytest.raises(ValueError, match="3 output channels, BN 4"):
        fold_bn(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(4))


def test_channel_affine_is_eval_bn() -> None:
    g = torch.Generator().manual_seed(0)
    bn = _random_bn(7, g)
    x = torch.randn(3, 7, 4, 4, generator=g)
    with torch.no_grad():
        assert (ChannelAffine.from_bn(bn)(x) - bn(x)).abs().max().item() <= 1e-5


def test_fold_batchnorm_leaves_no_bn_and_the_same_function() -> None:
    model = spiking_model(small_config())
    original = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    state_a = model.initial_state(1)
    state_b = folded.initial_state(1)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _ in range(6):
            x = torch.poisson(torch.full((1, 2, 32, 64), 0.3), generator=g)
            ya, state_a = model.step(x, state_a)
            yb, state_b = folded.step(x, state_b)
            assert (ya - yb).abs().max().item() <= 1e-4
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())


# -- the exported graph -------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, SMASNN]:
    model = spiking_model("edge")
    path = tmp_path_factory.mktemp("export") / "edge.onnx"
    meta = export_onnx(model, path, steps_per_window=2, bin_us=20_000, training_data="unit test")
    return path, meta, model


def test_graph_uses_only_allowed_ops(edge_export: tuple[Path, dict, SMASNN]) -> None:
    path, meta, _ = edge_export
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert ops <= ALLOWED_OPS, sorted(ops - ALLOWED_OPS)
    # The network is really in there, and nothing of training is.
    assert {"Conv", "GreaterOrEqual", "Where", "Softmax", "ReduceMean", "Gemm"} <= ops
    assert not ops & {"BatchNormalization", "Dropout", "Gather", "Unsqueeze", "Identity"}
    assert meta["ops"]["GreaterOrEqual"] == 2 * 15  # 15 LIF layers × S=2 steps


def test_graph_is_static_and_checks(edge_export: tuple[Path, dict, SMASNN]) -> None:
    path, _, net = edge_export
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    values = [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]
    produced = {o for n in inferred.graph.node for o in n.output}
    assert produced <= {v.name for v in values}  # every intermediate has a shape
    for v in values:
        dims = v.type.tensor_type.shape.dim
        assert dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), v.name
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.input, *inferred.graph.output]
    }
    assert shapes["frames"] == [2, 1, 2, 64, 64]
    assert shapes["logits"] == [2, 1, 11]
    for name, shape in net.state_spec():
        assert shapes[f"{name}_in"] == shapes[f"{name}_out"] == [1, *shape]
    assert len(inferred.graph.input) == len(inferred.graph.output) == 1 + len(net.state_spec())
    check_graph(model)  # the exporter's own check agrees
    # One self-contained file: no external weights beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["edge.onnx"]
    assert not any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def test_metadata_is_all_a_runtime_needs(tmp_path: Path) -> None:
    cfg = small_config()
    model = spiking_model(cfg)
    path = tmp_path / "small.onnx"
    export_onnx(
        model, path, steps_per_window=3, bin_us=12_500, training_data="x", extra={"epoch": 7}
    )
    meta = read_metadata(path)
    assert meta["config"] == config_to_dict(cfg)
    assert (meta["input_width"], meta["input_height"]) == (64, 32)
    assert meta["checkpoint_extra"] == {"epoch": 7}
    info = OrtRuntime(path, threads=1).info
    assert info.input_size == (64, 32)  # (W, H)
    assert info.window_shape == (3, 2, 32, 64)
    assert (info.preset, info.bin_us, info.steps_per_window) == ("custom", 12_500, 3)
    assert info.class_names == CLASS_NAMES
    assert info.extra["training_data"] == "x"
    assert info.extra["version"]


def test_export_needs_the_causal_temporal_mode(tmp_path: Path) -> None:
    cfg = dataclasses.replace(small_config(), temporal="paper")
    with pytest.raises(ValueError, match="causal"):
        export_onnx(SMASNN(cfg).eval(), tmp_path / "x.onnx")


def test_simplify_graph_turns_plumbing_into_slice_and_reshape() -> None:
    """Constant, Identity, no-op Cast, Gather (scalar index), Unsqueeze, Squeeze, Flatten."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4])
    idx = helper.make_tensor("idx", TensorProto.INT64, [], [-1])
    nodes = [
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([1]))),
        helper.make_node("Identity", ["x"], ["xi"]),
        helper.make_node("Cast", ["xi"], ["xc"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["xc", "idx"], ["g"], axis=1),  # [2, 4]
        helper.make_node("Unsqueeze", ["g", "axes"], ["u"]),  # [2, 1, 4]
        helper.make_node("Squeeze", ["u", "axes"], ["y"]),
        helper.make_node("Flatten", ["g"], ["z"], axis=1),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y, z], initializer=[idx])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    simple = simplify_graph(model)
    assert {n.op_type for n in simple.graph.node} <= {"Slice", "Reshape"}
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    want = data[:, -1, :]

    def run(m: onnx.ModelProto) -> list[np.ndarray]:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": data})

    for out in (*run(model), *run(simple)):
        np.testing.assert_array_equal(out, want)


# -- the command --------------------------------------------------------------------------


def _checkpoint(tmp_path: Path, extra: dict) -> Path:
    path = tmp_path / "model.pt"
    save_checkpoint(path, spiking_model(small_config()), extra)
    return path


def test_export_command_writes_graph_with_checkpoint_metadata(
    main, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(tmp_path, {"bin_us": 25_000, "training_data": "synthetic gestures"})
    out = tmp_path / "out" / "m.onnx"
    rc = main(["export", str(ckpt), "--out", str(out), "--steps-per-window", "2"])
    assert rc == 0
    meta = read_metadata(out)
    assert (meta["bin_us"], meta["steps_per_window"]) == (25_000, 2)
    assert meta["training_data"] == "synthetic gestures"
    assert "wrote" in capsys.readouterr().out
    # No bin width in the checkpoint: the default is used and said, not hidden.
    ckpt2 = _checkpoint(tmp_path, {})
    assert main(["export", str(ckpt2)]) == 0
    assert read_metadata(ckpt2.with_suffix(".onnx"))["bin_us"] == DEFAULT_BIN_US
    assert "records no bin width" in capsys.readouterr().err


def test_export_checkpoint_keeps_the_model_and_drops_the_machine(tmp_path: Path) -> None:
    """What training ships: one bin per call, the stored class names (the stream names
    for 12 outputs that store none), the training config without the machine's paths and
    no optimizer/RNG state, and a plain-JSON sidecar equal to the metadata."""
    from smastream.engine.export import MACHINE_KEYS, export_checkpoint
    from smastream.errors import SmastreamError
    from smastream.gestures import STREAM_CLASS_NAMES

    tcfg = {"data": "synthetic", "protocol": "stream", "epochs": 3}
    tcfg |= {k: f"/machine/{k}" for k in MACHINE_KEYS}
    extra = {"bin_us": 25_000, "steps_per_window": 4, "train_config": tcfg}
    extra |= {"optimizer": {"state": {}}, "rng_torch": torch.zeros(3, dtype=torch.uint8)}
    cfg12 = dataclasses.replace(small_config(), num_classes=12)
    ckpt = tmp_path / "stream.pt"
    save_checkpoint(ckpt, spiking_model(cfg12), extra)
    out = tmp_path / "out" / "model.onnx"
    paths = export_checkpoint(ckpt, out)
    assert paths == [out, out.with_suffix(".json")]
    meta = read_metadata(out)
    assert (meta["steps_per_window"], meta["bin_us"]) == (1, 25_000)
    assert meta["class_names"] == list(STREAM_CLASS_NAMES)
    assert meta["training_data"] == "synthetic"
    kept = meta["checkpoint_extra"]
    assert kept["train_config"] == {"data": "synthetic", "protocol": "stream", "epochs": 3}
    assert not {"optimizer", "rng_torch", "scaler"} & set(kept)
    assert b"/machine/" not in out.read_bytes()
    side = json.loads(out.with_suffix(".json").read_text())
    assert {k: v for k, v in side.items() if k != "ops"} == meta
    assert side["ops"] and set(side["ops"]) <= ALLOWED_OPS
    # names the checkpoint stores win
    names = [f"g{i}" for i in range(12)]
    save_checkpoint(ckpt, spiking_model(cfg12), {**extra, "class_names": names})
    export_checkpoint(ckpt, out)
    assert read_metadata(out)["class_names"] == names
    # a clip-protocol network has no streaming form: one line naming the checkpoint
    paper = tmp_path / "paper.pt"
    save_checkpoint(paper, SMASNN(dataclasses.replace(small_config(), temporal="paper")), {})
    with pytest.raises(SmastreamError, match=r"paper\.pt: a temporal='paper' network"):
        export_checkpoint(paper, tmp_path / "paper.onnx")
    assert not (tmp_path / "paper.onnx").exists()


def test_bin_width_comes_from_option_then_checkpoint_then_default() -> None:
    assert bin_us_of({"bin_us": 25_000}, 10_000) == (10_000, "option")
    assert bin_us_of({"bin_us": 25_000}) == (25_000, "checkpoint")
    assert bin_us_of({"bin_us": "25 ms"}) == (DEFAULT_BIN_US, "default")
    assert bin_us_of({}) == (DEFAULT_BIN_US, "default")
    with pytest.raises(ValueError, match="-5"):
        bin_us_of({}, -5)
    assert steps_of({"steps_per_window": 8}, 2) == 2
    # one bin per call by default, whatever the checkpoint was trained or exported with
    assert steps_of({"steps_per_window": 8}) == DEFAULT_STEPS_PER_WINDOW == 1
    assert steps_of({}) == 1


def test_class_names_come_from_argument_then_checkpoint_then_gestures() -> None:
    stream = [*CLASS_NAMES, "no gesture"]
    assert resolve_class_names(11) == list(CLASS_NAMES)
    assert resolve_class_names(12, extra={"class_names": stream}) == stream
    assert resolve_class_names(12, extra={"class_names": ["a"]})[-1] == "class 11"
    assert resolve_class_names(2, ["x", "y"], {"class_names": ["p", "q"]}) == ["x", "y"]
    with pytest.raises(ValueError, match="1 class names for a network with 2 outputs"):
        resolve_class_names(2, ["x"])


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        (["--fp16"], "--backend tensorrt"),
        (["--calibration", "."], "only used with --int8"),
        (["--out", "{ckpt}"], "overwrite the checkpoint"),
    ],
)
def test_export_command_errors_are_one_line(
    main,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra_args: list[str],
    message: str,
) -> None:
    ckpt = _checkpoint(tmp_path, {"bin_us": 10_000})
    args = [a.replace("{ckpt}", str(ckpt)) for a in extra_args]
    assert main(["export", str(ckpt), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["export", str(tmp_path / "missing.pt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_metadata_json_is_plain(edge_export: tuple[Path, dict, SMASNN]) -> None:
    path, _, _ = edge_export
    raw = next(p.value for p in onnx.load(str(path)).metadata_props if p.key == "smastream")
    meta = json.loads(raw)
    assert meta["format"] == "smastream.onnx" and meta["bn_folded"] is True
    assert [n for n, _ in meta["state"]][:2] == ["block1_v", "block2_sma_u1"]


# -- S = 1 and weights recovered from a graph ---------------------------------------------

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "engine" / "models"


def _run_graph(path: Path, frames: np.ndarray, calls: int) -> np.ndarray:
    """Logits of ``frames [T, 1, 2, H, W]`` through ``path`` in ``calls`` calls, state fed
    back."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = read_metadata(path)
    state = {f"{n}_in": np.zeros(s, np.float32) for n, s in meta["state"]}
    per = frames.shape[0] // calls
    out = []
    for i in range(calls):
        res = sess.run(None, {"frames": frames[i * per : (i + 1) * per], **state})
        state = {f"{n}_in": res[1 + j] for j, (n, _) in enumerate(meta["state"])}
        out.append(res[0])
    return np.concatenate(out)


def test_weights_recovered_from_a_graph_reexport_bit_for_bit_at_any_s(tmp_path: Path) -> None:
    from smastream.engine.export import state_dict_from_onnx

    model = spiking_model(small_config(), seed=3)
    s4 = tmp_path / "s4.onnx"
    export_onnx(model, s4, steps_per_window=4)
    config, state = state_dict_from_onnx(s4)
    torch.save(state, tmp_path / "w.pt")
    rebuilt = SMASNN(config)
    rebuilt.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    again, s1 = tmp_path / "again.onnx", tmp_path / "s1.onnx"
    export_onnx(rebuilt, again, steps_per_window=4)
    export_onnx(rebuilt, s1)  # the default: one bin per call
    assert read_metadata(s1)["steps_per_window"] == 1

    def weights(p: Path) -> dict[str, np.ndarray]:
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(p)).graph.initializer}

    a, b = weights(s4), weights(again)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    rng = np.random.default_rng(0)
    frames = rng.poisson(0.5, (8, 1, 2, 32, 64)).astype(np.float32)
    ref = _run_graph(s4, frames, 2)
    assert np.abs(ref).max() > 0
    np.testing.assert_array_equal(_run_graph(s1, frames, 8), ref)


def test_shipped_demo_is_s1_and_its_state_dict_rebuilds_it() -> None:
    meta = read_metadata(DEMO / "demo.onnx")
    assert meta["steps_per_window"] == 1
    card = json.loads((DEMO / "demo.json").read_text())
    config = preset_config(
        card["preset"], width_multiplier=card["width"], num_classes=len(card["class_names"])
    )
    assert config_from_dict(meta["config"]) == config
    model = SMASNN(config)
    model.load_state_dict(torch.load(DEMO / "demo.pt", weights_only=True))
    proto = onnx.load(str(DEMO / "demo.onnx"))
    graph = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    folded = fold_batchnorm(model).state_dict()
    for name, value in folded.items():
        if f"model.{name}" in graph:
            np.testing.assert_array_equal(
                graph[f"model.{name}"].reshape(value.shape), value.numpy(), err_msg=name
            )
