"""Quantization-aware training, exported as a QDQ ONNX graph that ONNX Runtime runs in INT8.

Hand-written rather than torch.ao's QAT (deprecated in favour of torchao, not installed here):
the model is traced with torch.fx, BatchNorms are folded into the preceding convolutions (a
fake-quantized weight is no longer an initializer, so the exporter could not fold them later),
every Conv1d/Conv2d/Linear fake-quantizes its weight per output channel (symmetric int8, scale =
max|w| / 127) and a ``FakeQuant`` (per-tensor uint8, EMA min/max observer) is placed where
ORT's static quantizer puts its Q/DQ pairs: on the model input and on the output of every
compute op, after a following ReLU rather than before it; the exported ReLU -> Q(zero point 0)
pairs then lose their ReLU (the Q clips at 0 already), as ORT's own quantizer does, so ORT
fuses DQ -> Conv/Add/Gemm -> Q into QLinearConv/QLinearAdd/QGemm. Both fake-quant
ops have a straight-through gradient. The TorchScript exporter turns
``torch.fake_quantize_per_{tensor,channel}_affine`` into QuantizeLinear/DequantizeLinear with
the observers' scales; the weights' QuantizeLinear nodes are then folded into int8
initializers, so the file holds int8 weights like a PTQ artifact.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from petra.compression.probe import try_on_copy
from petra.errors import ExportError, TrainError
from petra.exporters.artifact import Artifact
from petra.exporters.onnx_export import export_onnx
from petra.exporters.quantize import OrtQuantization, Precision
from petra.genes import Gene, Pass, Stage

_RELUS = (nn.ReLU, F.relu, torch.relu)
#: ops that return their input or no tensor at all (ORT's QDQ fusions need a Q/DQ pair right
#: next to every compute op, so reshapes and flattens get their own, with the same scale)
_PASSTHROUGH = (nn.Identity, nn.Dropout, "contiguous", "size", operator.getitem, getattr)


class FakeQuant(nn.Module):
    """Per-tensor uint8 fake quantization with an EMA min/max observer (updated in train mode)."""

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("scale", torch.tensor([1.0]))
        self.register_buffer("zero_point", torch.tensor([0], dtype=torch.int32))
        self.observe_only = False

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min().clamp(max=0.0), x.max().clamp(min=0.0)  # 0 must stay exact (padding, ReLU)
        if not bool(self.initialized):
            self.lo.copy_(lo)
            self.hi.copy_(hi)
            self.initialized.fill_(True)
        else:
            self.lo.lerp_(lo, self.momentum)
            self.hi.lerp_(hi, self.momentum)
        scale = ((self.hi - self.lo) / 255.0).clamp_min(1e-8)
        self.scale.copy_(scale.reshape(1))
        self.zero_point.copy_((-self.lo / scale).round().clamp(0, 255).to(torch.int32).reshape(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._observe(x)
        if self.observe_only:
            return x
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)


class _WeightFakeQuant(nn.Module):
    """Mixin body for Conv1d / Conv2d / Linear: per-output-channel symmetric int8 weight fake-quant."""

    def _init_wq(self) -> None:
        self.register_buffer("w_scale", torch.ones(self.weight.shape[0]))
        self.register_buffer("w_zero", torch.zeros(self.weight.shape[0], dtype=torch.int32))
        self._update_scale()

    @torch.no_grad()
    def _update_scale(self) -> None:
        amax = self.weight.detach().abs().reshape(self.weight.shape[0], -1).amax(1)
        self.w_scale.copy_((amax / 127.0).clamp_min(1e-8))

    def quantized_weight(self) -> torch.Tensor:
        if self.training:
            self._update_scale()
        return torch.fake_quantize_per_channel_affine(self.weight, self.w_scale, self.w_zero, 0, -128, 127)


class QConv1d(nn.Conv1d, _WeightFakeQuant):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QConv2d(nn.Conv2d, _WeightFakeQuant):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QLinear(nn.Linear, _WeightFakeQuant):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


#: the layers whose weights are fake-quantized, and their quantized twins
_QUANTIZED: dict[type, type] = {nn.Conv1d: QConv1d, nn.Conv2d: QConv2d, nn.Linear: QLinear}


def _as_quantized(m: nn.Module) -> nn.Module:
    cls = _QUANTIZED[type(m)]
    q = cls.__new__(cls)
    # same parameters and settings, new forward (registries copied, not shared with ``m``)
    q.__dict__ = {k: (v.copy() if isinstance(v, dict) else v) for k, v in m.__dict__.items()}
    q._init_wq()
    return q


def _target(gm: fx.GraphModule, node: fx.Node):
    if node.op == "call_module":
        return gm.get_submodule(node.target)
    return node.target


def _is(gm: fx.GraphModule, node: fx.Node, kinds: tuple) -> bool:
    t = _target(gm, node)
    return any((isinstance(k, type) and isinstance(t, k)) or t is k or t == k for k in kinds)


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Fold each BatchNorm that directly follows a Conv1d/Conv2d/Linear (its only user) into it."""
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target),
                                                      nn.BatchNorm1d | nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        layer, bn = gm.get_submodule(prev.target), gm.get_submodule(node.target)
        if (isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)) or (
                isinstance(layer, nn.Conv1d) and isinstance(bn, nn.BatchNorm1d)):
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval())
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
        else:
            continue
        parent, _, child = prev.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, child, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


def prepare_qat(model: nn.Module) -> fx.GraphModule:
    """A fake-quantized copy of ``model`` (BN folded, observers uninitialized) to fine-tune."""
    recurrent = [type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)]
    if recurrent:  # its op returns (output, state) and its weights are no Conv/Linear
        raise TrainError(f"QAT fake-quantizes Conv1d/Conv2d/Linear graphs, not {recurrent[0]} layers")
    try:
        gm = fx.symbolic_trace(model.eval())
    except Exception as exc:
        raise TrainError(f"QAT needs a torch.fx-traceable model: {type(exc).__name__}: {exc}") from exc
    fold_batchnorm(gm)
    for name, m in list(gm.named_modules()):
        if type(m) in _QUANTIZED:
            parent, _, child = name.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, child, _as_quantized(m))
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        if node.op in ("output", "get_attr"):
            continue
        if node.op != "placeholder":
            if _is(gm, node, _PASSTHROUGH):
                continue
            if node.users and all(_is(gm, u, _RELUS) for u in node.users):
                continue  # quantize after the ReLU: ORT folds the ReLU into the Q's zero point
        name = f"act_fq_{count}"
        count += 1
        gm.add_submodule(name, FakeQuant())
        with graph.inserting_after(node):
            fq = graph.call_module(name, (node,))
        node.replace_all_uses_with(fq, delete_user_cb=lambda u, fq=fq: u is not fq)
    graph.lint()
    gm.recompile()
    return gm


@torch.no_grad()
def calibrate(model: nn.Module, x: np.ndarray, batch: int = 64) -> None:
    """Initialize the activation observers on real data before fake-quant training starts."""
    fqs = [m for m in model.modules() if isinstance(m, FakeQuant)]
    for m in fqs:
        m.observe_only = True
    model.train()  # observers update in train mode; BN is folded, so nothing else changes
    for i in range(0, len(x), batch):
        model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch])))
    for m in fqs:
        m.observe_only = False
    model.eval()


def fold_weight_quantize(model) -> int:
    """Replace QuantizeLinear(float initializer) by its int8 result: int8 weights on disk."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type in ("Identity", "Constant")}

    def value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = consts.get(name)
        if node is not None and node.op_type == "Identity":
            return value(node.input[0])
        if node is not None:
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    folded = 0
    for node in list(model.graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        w, scale, zp = (value(n) for n in node.input[:3])
        if scale is None or zp is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.size > 1:
            shape[axis] = -1
        info = np.iinfo(zp.dtype)
        q = np.round(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.int64)
        q = np.clip(q, info.min, info.max)
        name = node.output[0]
        model.graph.initializer.append(numpy_helper.from_array(q.astype(zp.dtype), name))
        model.graph.node.remove(node)
        folded += 1
    used = {i for n in model.graph.node for i in n.input}
    for t in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(t)
    return folded


def simplify_qdq(model) -> None:
    """Make the exported QDQ graph look like ORT's own: ORT's QDQ fusions (QLinearAdd among
    them) want constant *scalar* per-tensor scales and zero points (torch exports shape [1]) and
    no ReLU between an op and its Q; Identity nodes on constants are bypassed, and each ReLU
    whose only consumer is a uint8 Q with zero point 0 is dropped (the Q clips at 0 already)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for name in n.input[1:3]:
                t = inits.get(name)
                if t is not None and list(t.dims) == [1]:
                    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).reshape(()), name))
    alias = {n.output[0]: n.input[0] for n in model.graph.node
             if n.op_type == "Identity" and n.input[0] in inits}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    users: dict[str, list] = {}
    for n in model.graph.node:
        for name in n.input:
            users.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in model.graph.output}
    drop = {id(n) for n in model.graph.node if n.op_type == "Identity" and n.output[0] in alias}
    for n in model.graph.node:
        if n.op_type != "Relu" or n.output[0] in graph_outputs:
            continue
        consumers = users.get(n.output[0], [])
        if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear" or len(consumers[0].input) < 3:
            continue
        zp = inits.get(consumers[0].input[2])
        if zp is None or zp.data_type != onnx_uint8() or numpy_helper.to_array(zp).any():
            continue
        consumers[0].input[0] = n.input[0]
        drop.add(id(n))
    kept = [n for n in model.graph.node if id(n) not in drop]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def onnx_uint8() -> int:
    import onnx

    return onnx.TensorProto.UINT8


def export_qat(model: nn.Module, example: torch.Tensor, path: Path) -> Artifact:
    """Export a QAT model as a self-contained QDQ ONNX file with int8 weights."""
    import onnx

    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.qdq")
    export_onnx(model, example, tmp)
    try:
        proto = onnx.load(str(tmp))
        simplify_qdq(proto)
        fold_weight_quantize(proto)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"QAT export failed: {type(exc).__name__}: {exc}") from exc
    os.replace(tmp, path)
    return Artifact.of(path)


def _qat_matters(c) -> bool:
    """QAT fake-quantizes during a fine-tune and exports ORT's static QDQ format itself: without
    epochs it would be plain PTQ, and only a backend whose quantizer is ORT's reads its file."""
    return (c.precision is Precision.INT8_STATIC and c.epochs > 0
            and c.backend.quantizer == OrtQuantization.name)


class QuantAwareTraining(Pass):
    name = "qat"
    genes = (
        Gene("qat", (False, True), False, Stage.TORCH, when=_qat_matters, keyed_at_default=False,
             help="quantization-aware fine-tune exported as QDQ"),
    )

    def applies(self, model, example, backend) -> str | None:
        def qat(m: nn.Module) -> nn.Module:
            gm = prepare_qat(m)
            calibrate(gm, example.numpy())
            return gm

        return try_on_copy(model, example, qat, what="quantization-aware training",
                           export=export_qat)
