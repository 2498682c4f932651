"""Export the SMA-SNN as a stateful ONNX graph of ``S`` unrolled causal steps (spec §5).

The graph::

    inputs   frames [S, 1, 2, H, W]  float32       one window of S time bins
             <name>_in  [1, ...]     float32       every state tensor (model.state_spec())
    outputs  logits [S, 1, C]        float32       one row of logits per step
             <name>_out [1, ...]     float32       the next state: feed <name>_out to <name>_in

How it is made:

1. :func:`fold_batchnorm` copies the network and folds every BN that follows a conv into
   that conv's weights (the branch convs of SMA, the plain blocks' convs). The BN of an SMA
   block follows the attention-weighted fusion, not a conv, so nothing linear precedes it:
   it becomes a per-channel affine (one Mul and one Add, :class:`ChannelAffine`).
2. :class:`UnrolledStep` runs ``model.step`` S times (eval mode: no AZO, dropout is the
   identity, the spike is a plain ``>=``; no autograd function is traced).
3. ``torch.onnx.export(..., dynamo=False)``: the TorchScript exporter. It still exists in
   torch 2.13, exports this model in about a second (the dynamo exporter takes 10-20 s
   for the same graph, which matters for the tests and for ``smastream export`` on a
   Jetson), and with static example inputs it writes a fully static graph in one file.
4. :func:`simplify_graph` normalises the plumbing the exporter leaves behind, so the graph
   holds only :data:`ALLOWED_OPS`: Constant nodes become initializers, Identity and
   no-op Casts go, every Unsqueeze/Squeeze/Flatten becomes a Reshape to its (static)
   output shape, and a Gather of a constant scalar index (the ``w[..., i, :]`` of the
   SMA fusion) becomes Slice + Reshape.
5. :func:`check_graph` proves it: ``onnx.checker`` (full), strict shape inference, every
   value static, only allowed ops. Then the metadata (:func:`export_metadata`) is written
   into the file, so a runtime needs nothing else.

Needs torch and onnx (the ``train`` extra); the runtimes do not.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import Tensor, nn

from smastream import __version__
from smastream.errors import SmastreamError
from smastream.gestures import CLASS_NAMES, STREAM_CLASS_NAMES

from .model import SMASNN, SMASNNConfig, config_to_dict
from .runtime import FRAMES, LOGITS, state_input_name, state_output_name

EXPORT_FORMAT = "smastream.onnx"
EXPORT_FORMAT_VERSION = 1
METADATA_KEY = "smastream"
OPSET = 17
#: Bins per call of an exported graph: one, so that the live pipeline decides after every
#: bin (the state carries across calls, so nothing is recomputed). A larger S is an
#: export option for offline batch use.
DEFAULT_STEPS_PER_WINDOW = 1
#: Bin width used when a checkpoint does not record one (the training default,
#: ``train.datasets.StreamConfig.bin_us``); :func:`bin_us_of` says when it was used.
DEFAULT_BIN_US = 50_000

#: The op types an exported graph may contain: the spec's list (all supported by
#: TensorRT's ONNX parser) plus Reshape, the one piece of shape plumbing that cannot be
#: avoided (the [S, 1, ...] window is cut into steps and the logits stacked back).
SPEC_OPS: frozenset[str] = frozenset(
    {
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
    }
)
ALLOWED_OPS: frozenset[str] = SPEC_OPS | {"Reshape"}


# -- BN folding --------------------------------------------------------------------------


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` with eval-mode BN statistics (pure).

    ``w' = w · γ/√(σ² + ε)`` per output channel, ``b' = (b − μ) · γ/√(σ² + ε) + β``,
    computed in float64 and stored as float32.

    Args:
        conv: The conv (any kernel, groups 1, with or without bias).
        bn: The BN that follows it (affine or not, with running statistics).

    Returns:
        A new :class:`~torch.nn.Conv2d` with a bias; the inputs are not modified.

    Raises:
        ValueError: If the channel counts differ or the BN tracks no running statistics.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BN has no running statistics (track_running_stats=False): cannot fold")
    if conv.out_channels != bn.num_features:
        raise ValueError(
            f"conv has {conv.out_channels} output channels, BN {bn.num_features}: not a pair"
        )
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight.detach().double()
    b = (
        conv.bias.detach().double()
        if conv.bias is not None
        else torch.zeros(conv.out_channels, dtype=torch.float64)
    )
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        folded.weight.copy_((w * scale[:, None, None, None]).float())
        assert folded.bias is not None
        folded.bias.copy_((b * scale + shift).float())
    return folded.to(conv.weight.device)


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` of an eval-mode BN, float64."""
    assert bn.running_mean is not None and bn.running_var is not None
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


class ChannelAffine(nn.Module):
    """``x · scale + shift`` per channel: an eval-mode BN that no conv precedes.

    Shapes: ``x [B, C, H, W] -> [B, C, H, W]``; exports as one Mul and one Add.
    """

    scale: Tensor
    shift: Tensor

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().float().reshape(-1, 1, 1).clone())
        self.register_buffer("shift", shift.detach().float().reshape(-1, 1, 1).clone())

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> ChannelAffine:
        scale, shift = _bn_scale_shift(bn)
        return cls(scale, shift)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


def fold_batchnorm(model: SMASNN) -> SMASNN:
    """A copy of ``model`` (eval mode, CPU, float32) with no BatchNorm left.

    Every ``conv → BN`` pair becomes one conv (:func:`fold_bn`); the BN after an SMA
    fusion becomes a :class:`ChannelAffine`. The original is not modified.
    """
    folded = copy.deepcopy(model).cpu().float().eval()
    for block in folded._blocks():
        if block.sma is None:
            block.conv = fold_bn(block.conv, block.bn)
            block.bn = nn.Identity()  # type: ignore[assignment]
        else:
            block.bn = ChannelAffine.from_bn(block.bn)  # type: ignore[assignment]
            sma = block.sma
            sma.convs = nn.ModuleList(
                fold_bn(cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, bn))
                for conv, bn in zip(sma.convs, sma.bns, strict=True)
            )
            sma.bns = nn.ModuleList(nn.Identity() for _ in sma.bns)
    left = [
        name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if left:  # a new layer type in model.py that this function does not know yet
        raise ValueError(f"BatchNorm layers left unfolded: {left}")
    return folded


# -- the exported module -----------------------------------------------------------------


class UnrolledStep(nn.Module):
    """S causal steps in one call, state in and out as separate tensors.

    ``forward(frames[S, 1, 2, H, W], *state_in) -> (logits[S, 1, C], *state_out)``, state
    in ``model.state_names()`` order, batch 1.

    Args:
        model: An eval-mode network (normally :func:`fold_batchnorm`'s result).
        steps: ``S``.
    """

    def __init__(self, model: SMASNN, steps: int) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        self.model = model
        self.steps = int(steps)
        self.names = model.state_names()

    def forward(self, frames: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        cfg = self.model.config
        h, w = cfg.input_size
        x = frames.reshape(self.steps, cfg.in_channels, h, w)  # one Reshape; then Slices
        current: Mapping[str, Tensor] = dict(zip(self.names, state, strict=True))
        logits = []
        for t in range(self.steps):
            y, current = self.model.step(x[t : t + 1], current)
            logits.append(y)
        out = torch.cat(logits, dim=0).reshape(self.steps, 1, cfg.num_classes)
        return (out, *(current[n] for n in self.names))


# -- metadata ----------------------------------------------------------------------------


def export_metadata(
    config: SMASNNConfig,
    *,
    bin_us: int,
    steps_per_window: int,
    state_spec: Sequence[tuple[str, tuple[int, ...]]],
    training_data: str = "unspecified",
    extra: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Everything a runtime needs, stored as JSON under the ONNX metadata key ``smastream``.

    ``class_names`` come from the argument, else ``extra["class_names"]``, else the 11
    DVS128 Gesture classes (see :func:`resolve_class_names`).

    Keys: ``format``, ``format_version``, ``version`` (smastream), ``preset``,
    ``input_width``, ``input_height``, ``bin_us``, ``steps_per_window``, ``class_names``,
    ``training_data``, ``config`` (the full :class:`SMASNNConfig` as a dict), ``state``
    (``[[name, [1, *shape]], ...]``), ``checkpoint_extra`` (JSON-able values the checkpoint
    kept), ``opset``, ``bn_folded``.
    """
    if bin_us < 1 or steps_per_window < 1:
        raise ValueError(
            f"bin_us and steps_per_window must be >= 1, got {bin_us!r}, {steps_per_window!r}"
        )
    names = resolve_class_names(config.num_classes, class_names, extra)
    h, w = config.input_size
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "version": __version__,
        "preset": config.preset,
        "input_width": w,
        "input_height": h,
        "bin_us": int(bin_us),
        "steps_per_window": int(steps_per_window),
        "class_names": names,
        "training_data": training_data,
        "config": config_to_dict(config),
        "state": [[n, [1, *s]] for n, s in state_spec],
        "checkpoint_extra": _jsonable(dict(extra or {})),
        "opset": OPSET,
        "bn_folded": True,
    }


def resolve_class_names(
    num_classes: int,
    class_names: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """Names of the ``num_classes`` logits.

    The explicit ``class_names``, else a checkpoint's ``extra["class_names"]`` when it has
    the right length, else :data:`~smastream.gestures.CLASS_NAMES` for 11 classes, else
    ``"class 0"``, ``"class 1"``...

    Raises:
        ValueError: If ``class_names`` is given with the wrong length.
    """
    if class_names is not None:
        names = [str(n) for n in class_names]
        if len(names) != num_classes:
            raise ValueError(
                f"{len(names)} class names for a network with {num_classes} outputs: {names!r}"
            )
        return names
    stored = (extra or {}).get("class_names")
    if isinstance(stored, (list, tuple)) and len(stored) == num_classes:
        return [str(n) for n in stored]
    if num_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    return [f"class {i}" for i in range(num_classes)]


def _jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    """The plain-JSON part of a checkpoint's ``extra`` (tensors and the like are left out)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            out[str(key)] = f"<{type(value).__name__} not stored>"
        else:
            out[str(key)] = value
    return out


def bin_us_of(extra: Mapping[str, Any], override: int | None = None) -> tuple[int, str]:
    """The bin width to export with, and where it came from.

    Returns:
        ``(bin_us, source)``: ``override`` (``"option"``), else the checkpoint's
        ``extra["bin_us"]`` (``"checkpoint"``), else :data:`DEFAULT_BIN_US` (``"default"``:
        the caller should say so, the model may have been trained at another width).
    """
    if override is not None:
        if override < 1:
            raise ValueError(f"bin_us must be >= 1, got {override!r}")
        return int(override), "option"
    value = extra.get("bin_us")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, "checkpoint"
    return DEFAULT_BIN_US, "default"


def steps_of(extra: Mapping[str, Any], override: int | None = None) -> int:
    """Steps per call of the graph to export: ``override``, else
    :data:`DEFAULT_STEPS_PER_WINDOW` (1).

    A checkpoint's ``extra["steps_per_window"]`` (what it was trained or exported with
    before) is deliberately not used: the stateful network gives the same logits at any
    ``S``, and one bin per call is what the live pipeline wants.
    """
    del extra  # kept in the signature: callers pass the checkpoint's extra
    if override is not None:
        if override < 1:
            raise ValueError(f"steps_per_window must be >= 1, got {override!r}")
        return int(override)
    return DEFAULT_STEPS_PER_WINDOW


def read_metadata(model: str | Path | onnx.ModelProto) -> dict[str, Any]:
    """The ``smastream`` metadata of an exported file (or loaded model).

    Raises:
        ValueError: If the model carries none (not exported by :func:`export_onnx`).
    """
    proto = (
        model
        if isinstance(model, onnx.ModelProto)
        else onnx.load(str(model), load_external_data=False)
    )
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            data: dict[str, Any] = json.loads(prop.value)
            return data
    raise ValueError(f"no {METADATA_KEY!r} metadata in the ONNX model: not a smastream export")


# -- graph clean-up and checks -----------------------------------------------------------


def simplify_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Normalise exporter plumbing so that only :data:`ALLOWED_OPS` remain (see module doc).

    Returns a new model with inferred shapes; the input is not modified.
    """
    model = copy.deepcopy(model)
    graph = model.graph
    _constants_to_initializers(graph)
    _drop_identities(graph)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    types = _value_types(model)
    _drop_noop_casts(graph, types)
    shapes = _value_shapes(model)
    _static_reshapes(graph, shapes)
    _gathers_to_slices(graph, shapes)
    _merge_reshapes(graph)
    _prune_initializers(graph)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    keep = []
    for node in graph.node:
        if (
            node.op_type == "Constant"
            and len(node.attribute) == 1
            and node.attribute[0].name == "value"
        ):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    _set_nodes(graph, keep)


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _graph_outputs(graph: onnx.GraphProto) -> set[str]:
    return {o.name for o in graph.output}


def _drop_identities(graph: onnx.GraphProto) -> None:
    outputs = _graph_outputs(graph)
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            _rename_input(graph, node.output[0], node.input[0])
        else:
            keep.append(node)
    _set_nodes(graph, keep)


def _drop_noop_casts(graph: onnx.GraphProto, types: dict[str, int]) -> None:
    outputs = _graph_outputs(graph)
    keep = []
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if (
            node.op_type == "Cast"
            and types.get(node.input[0]) == to
            and node.output[0] not in outputs
        ):
            _rename_input(graph, node.output[0], node.input[0])
        else:
            keep.append(node)
    _set_nodes(graph, keep)


def _static_reshapes(graph: onnx.GraphProto, shapes: dict[str, list[int]]) -> None:
    nodes = []
    for node in graph.node:
        if node.op_type in ("Unsqueeze", "Squeeze", "Flatten") and node.output[0] in shapes:
            shape_name = _add_shape(graph, node.output[0], shapes[node.output[0]])
            nodes.append(
                helper.make_node(
                    "Reshape", [node.input[0], shape_name], [node.output[0]], name=node.name
                )
            )
        else:
            nodes.append(node)
    _set_nodes(graph, nodes)


def _gathers_to_slices(graph: onnx.GraphProto, shapes: dict[str, list[int]]) -> None:
    consts = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        index = consts.get(node.input[1]) if node.op_type == "Gather" else None
        if index is None or node.input[0] not in shapes or node.output[0] not in shapes:
            nodes.append(node)
            continue
        idx = numpy_helper.to_array(index)
        if idx.ndim != 0:
            nodes.append(node)
            continue
        in_shape = shapes[node.input[0]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % len(in_shape)
        i = int(idx) % in_shape[axis]
        base = node.output[0]
        params = []
        for suffix, value in (("starts", i), ("ends", i + 1), ("axes", axis)):
            name = f"{base}__{suffix}"
            graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
            params.append(name)
        sliced = f"{base}__slice"
        nodes.append(
            helper.make_node("Slice", [node.input[0], *params], [sliced], name=f"{node.name}_slice")
        )
        shape_name = _add_shape(graph, base, shapes[base])
        nodes.append(helper.make_node("Reshape", [sliced, shape_name], [base], name=node.name))
    _set_nodes(graph, nodes)


def _merge_reshapes(graph: onnx.GraphProto) -> None:
    """Reshape(Reshape(x)) -> Reshape(x) when the inner result has no other use."""
    uses = Counter(name for node in graph.node for name in node.input)
    outputs = _graph_outputs(graph)
    producer = {node.output[0]: node for node in graph.node if node.output}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        inner = producer.get(node.input[0])
        if (
            inner is not None
            and inner.op_type == "Reshape"
            and uses[inner.output[0]] == 1
            and inner.output[0] not in outputs
        ):
            node.input[0] = inner.input[0]
            dropped.add(id(inner))
    _set_nodes(graph, [n for n in graph.node if id(n) not in dropped])


def _prune_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _add_shape(graph: onnx.GraphProto, base: str, shape: Sequence[int]) -> str:
    name = f"{base}__shape"
    graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), name))
    return name


def _set_nodes(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto]) -> None:
    copied = [copy.deepcopy(n) for n in nodes]
    del graph.node[:]
    graph.node.extend(copied)


def _values(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    g = model.graph
    return [*g.input, *g.output, *g.value_info]


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in _values(model)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


def _value_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for v in _values(model):
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def check_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Validate an exported graph; returns it with inferred shapes.

    Checks: ``onnx.checker.check_model(full_check=True)``, strict shape inference, every
    input, output and intermediate value has a static shape, and only
    :data:`ALLOWED_OPS` occur.

    Raises:
        ValueError: Naming every problem found.
    """
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    problems: list[str] = []
    bad_ops = sorted({n.op_type for n in inferred.graph.node} - ALLOWED_OPS)
    if bad_ops:
        problems.append(f"op types outside {sorted(ALLOWED_OPS)}: {bad_ops}")
    produced = {o for n in inferred.graph.node for o in n.output}
    known = {v.name for v in _values(inferred)}
    missing = sorted(produced - known)
    if missing:
        problems.append(f"values without an inferred shape: {missing[:5]} ({len(missing)})")
    dynamic = [
        v.name
        for v in _values(inferred)
        if not v.type.tensor_type.HasField("shape")
        or not all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)
    ]
    if dynamic:
        problems.append(f"values with a dynamic shape: {dynamic[:5]} ({len(dynamic)})")
    if problems:
        raise ValueError("exported graph is not valid: " + "; ".join(problems))
    return inferred


# -- export ------------------------------------------------------------------------------


def export_onnx(
    model: SMASNN,
    path: str | Path,
    *,
    steps_per_window: int = DEFAULT_STEPS_PER_WINDOW,
    bin_us: int = DEFAULT_BIN_US,
    training_data: str = "unspecified",
    extra: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the stateful graph of ``steps_per_window`` unrolled steps to ``path``.

    One self-contained file (weights inside, no ``.onnx.data``). The original ``model``
    is not modified.

    Args:
        model: The network (any mode/device; a folded eval-mode CPU copy is exported).
        path: Destination ``.onnx`` file (written atomically).
        steps_per_window: ``S``, time bins per call (fixed in the graph).
        bin_us: Time bin width the model expects, µs (metadata only).
        training_data: What the model was trained on, for the metadata.
        extra: The checkpoint's ``extra`` (JSON-able values are kept in the metadata).
        class_names: Logit names (default: see :func:`resolve_class_names`).

    Returns:
        The metadata written (see :func:`export_metadata`) plus ``"ops"`` (op counts).

    Raises:
        ValueError: On a network the step form cannot run (``temporal="paper"``), bad
            arguments, or a graph that fails :func:`check_graph`.
    """
    if model.config.temporal != "causal":
        raise ValueError(
            f"only temporal='causal' networks run step by step; this one is "
            f"{model.config.temporal!r}"
        )
    meta = export_metadata(
        model.config,
        bin_us=bin_us,
        steps_per_window=steps_per_window,
        state_spec=model.state_spec(),
        training_data=training_data,
        extra=extra,
        class_names=class_names,
    )
    folded = fold_batchnorm(model)
    wrapper = UnrolledStep(folded, steps_per_window).eval()
    h, w = model.config.input_size
    frames = torch.zeros(steps_per_window, 1, model.config.in_channels, h, w)
    state = folded.initial_state(1, "cpu")
    names = folded.state_names()
    input_names = [FRAMES, *(state_input_name(n) for n in names)]
    output_names = [LOGITS, *(state_output_name(n) for n in names)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            # TracerWarnings from the shape checks in model.step (shapes are static here)
            # and the TorchScript exporter's deprecation notice.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (frames, *state.tensors()),
                str(raw),
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                opset_version=OPSET,
                do_constant_folding=True,
            )
        proto = onnx.load(str(raw))
        proto = check_graph(simplify_graph(proto))
        del proto.graph.value_info[:]  # re-inferred by every consumer; keeps the file lean
        proto.producer_name = "smastream"
        proto.producer_version = __version__
        proto.doc_string = (
            f"SMA-SNN ({model.config.preset}), {steps_per_window} causal steps per call; "
            f"feed <name>_out back to <name>_in"
        )
        entry = proto.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = json.dumps(meta, sort_keys=True)
        staged = Path(tmp) / "model.onnx"
        onnx.save(proto, str(staged))
        os.replace(staged, path)
    return {**meta, "ops": op_counts(proto)}


# -- a training checkpoint to a shippable model ------------------------------------------

MACHINE_KEYS = ("out", "cache_dir", "device", "threads", "workers", "progress")
"""Training-config keys about the machine a run used, left out of an exported model."""


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, *, backend: str = "onnx"
) -> list[Path]:
    """Export a training checkpoint to ONNX (and, for ``tensorrt``, an fp16 engine
    ``<out>.plan`` built on this machine's GPU), one bin per call (:func:`steps_of`).

    The ``class_names`` the checkpoint stores (``"no gesture"`` last for stream models;
    :data:`~smastream.gestures.STREAM_CLASS_NAMES` for a 12-output checkpoint that stores
    none) go into the file's metadata, and a ``<out>.json`` beside it holds the same
    metadata in plain JSON. The training config is kept without :data:`MACHINE_KEYS` and
    without the optimizer, scaler and RNG state.

    Returns:
        The paths written: ``out``, ``<out>.json`` (and ``<out>.plan``).

    Raises:
        SmastreamError: a network that cannot stream (``temporal="paper"``).
        FormatError: an unreadable checkpoint (names the file).
    """
    from .model import load_checkpoint

    model, extra = load_checkpoint(checkpoint)
    if model.config.temporal != "causal":
        raise SmastreamError(
            f"{checkpoint}: a temporal='paper' network has no streaming form to export; "
            "train with --protocol stream (or --temporal causal)"
        )
    out = Path(out)
    tcfg = extra.get("train_config", {})
    data = str(tcfg.get("data", "unspecified")) if isinstance(tcfg, dict) else "unspecified"
    light = {k: v for k, v in extra.items() if k not in ("optimizer", "rng_torch", "scaler")}
    if isinstance(tcfg, dict):  # where it was trained is no property of the model
        light["train_config"] = {k: v for k, v in tcfg.items() if k not in MACHINE_KEYS}
    n = model.config.num_classes
    stored = extra.get("class_names")
    names = None  # the stored names when they fit (resolve_class_names)
    if not (isinstance(stored, (list, tuple)) and len(stored) == n) and n == len(
        STREAM_CLASS_NAMES
    ):
        names = list(STREAM_CLASS_NAMES)
    meta = export_onnx(
        model,
        out,
        steps_per_window=steps_of(extra),
        bin_us=bin_us_of(extra)[0],
        training_data=data,
        extra=light,
        class_names=names,
    )
    side = out.with_suffix(".json")
    tmp_side = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp_side.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_side, side)
    paths = [out, side]
    if backend == "tensorrt":
        from .trt_runtime import build_or_load

        paths.append(build_or_load(out, "fp16", out=out.with_suffix(".plan")))
    return paths


# -- weights back out of a graph ---------------------------------------------------------


def state_dict_from_onnx(path: str | Path) -> tuple[SMASNNConfig, dict[str, Tensor]]:
    """Rebuild the weights of an exported network as an :class:`SMASNN` state dict.

    The graph's initializers are named ``model.<module path>`` after the folded network
    (:func:`fold_batchnorm`); each folded BN is put back as an identity BN (mean 0,
    variance ``1 − ε``, so ``γ/√(σ² + ε)`` is 1 to within 2e-8 and folding again rounds
    every float32 back to the same value): re-exporting the result reproduces the graph's
    weights exactly. A ChannelAffine (the BN after an SMA fusion) becomes ``γ = scale``,
    ``β = shift``. Use it to recover trainable weights from a shipped graph; the BN running
    statistics are not the training ones (they are folded away), so fine-tune with the BN
    layers in eval mode or re-estimate them first.

    Raises:
        ValueError: If the file is not a smastream export or its weights do not fit the
            network its metadata describes.
    """
    from .model import config_from_dict

    proto = onnx.load(str(path))
    config = config_from_dict(read_metadata(proto)["config"])
    model = SMASNN(config)
    weights = {
        t.name.removeprefix("model."): torch.from_numpy(numpy_helper.to_array(t).copy())
        for t in proto.graph.initializer
        if t.name.startswith("model.")
    }
    state: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(name: str, shape: torch.Size) -> Tensor:
        if name not in weights:
            raise ValueError(f"{path}: the graph has no weight {'model.' + name!r}")
        used.add(name)
        return weights[name].reshape(shape).float()

    def identity_bn(prefix: str, bn: nn.BatchNorm2d) -> None:
        n = bn.num_features
        var = torch.full((n,), 1.0 - bn.eps, dtype=torch.float32)
        state.update(
            {
                f"{prefix}.weight": torch.ones(n),
                f"{prefix}.bias": torch.zeros(n),
                f"{prefix}.running_mean": torch.zeros(n),
                f"{prefix}.running_var": var,
                f"{prefix}.num_batches_tracked": torch.tensor(0),
            }
        )

    reference = model.state_dict()
    for i, block in enumerate(model._blocks()):
        p = f"blocks.{i}"
        if block.sma is None:
            identity_bn(f"{p}.bn", block.bn)
        else:
            n = block.bn.num_features
            identity_bn(f"{p}.bn", block.bn)
            state[f"{p}.bn.weight"] = take(f"{p}.bn.scale", torch.Size([n]))
            state[f"{p}.bn.bias"] = take(f"{p}.bn.shift", torch.Size([n]))
            for j, bn in enumerate(block.sma.bns):
                identity_bn(f"{p}.sma.bns.{j}", cast(nn.BatchNorm2d, bn))
    for name, value in reference.items():
        if name not in state:
            state[name] = take(name, value.shape)
    left = sorted(set(weights) - used)
    if left:
        raise ValueError(f"{path}: graph weights the network has no place for: {left[:5]}")
    model.load_state_dict(state)  # raises on any shape mismatch
    return config, state
