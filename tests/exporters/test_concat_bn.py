"""The BN-after-Concat fold: exact on the branch shapes it rewrites, hands off every other one."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from petra.exporters import export_onnx
from petra.models.ucr import InceptionTime, load_ucr


class Branches(nn.Module):
    """Concat of branches, then BN (+ ReLU): ``kind`` picks what feeds the Concat."""

    def __init__(self, kind: str, relu: bool = True) -> None:
        super().__init__()
        self.kind, self.relu = kind, relu
        self.a = nn.Conv1d(3, 4, 5, padding=2, bias=False)
        self.b = nn.Sequential(nn.MaxPool1d(3, 1, 1), nn.Conv1d(3, 2, 1))
        width = {"convs": 6, "shared": 8, "skip": 7, "twice": 8}[kind]
        self.bn = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        if self.kind == "convs":
            parts = [self.a(x), self.b(x)]
        elif self.kind == "shared":  # one Conv module called twice: one weight, two Conv nodes
            parts = [self.a(x), self.a(x.flip(-1))]
        elif self.kind == "skip":  # DenseNet style: the input itself is a branch
            parts = [x, self.a(x)]
        else:  # the same Conv output concatenated twice
            y = self.a(x)
            parts = [y, y]
        y = self.bn(torch.cat(parts, dim=1))
        y = torch.relu(y) if self.relu else y
        return self.head(y.mean(-1))


def _randomised(model: nn.Module) -> nn.Module:
    """BN with statistics and affine terms far from the identity, so a wrong fold shows."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) * 2 - 0.5
            m.bias.data = torch.randn(n, generator=gen)
            m.running_mean = torch.randn(n, generator=gen)
            m.running_var = torch.rand(n, generator=gen) + 0.1
    return model.eval()


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _agree(model, path, x) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["torchscript", "dynamo"])
@pytest.mark.parametrize("relu", [True, False])
def test_bn_after_a_concat_of_convs_folds_exactly(tmp_path, method, relu):
    torch.manual_seed(0)
    model = _randomised(Branches("convs", relu))
    x = np.random.default_rng(0).normal(size=(5, 3, 16)).astype(np.float32)
    art = export_onnx(model, torch.from_numpy(x[:2]), tmp_path / "m.onnx", method=method)
    ops = _ops(art.path)
    assert "BatchNormalization" not in ops
    graph = onnx.load(str(art.path)).graph
    concat = next(n for n in graph.node if n.op_type == "Concat")
    producers = {o: n.op_type for n in graph.node for o in n.output}
    # the ReLU went into the branches, ahead of the Concat; without one the Convs feed it directly
    assert {producers[i] for i in concat.input} == {"Relu" if relu else "Conv"}
    used = {i for n in graph.node for i in n.input}
    assert all(t.name in used for t in graph.initializer)  # the replaced weights are gone
    _agree(model, art.path, x)


@pytest.mark.parametrize("kind, folds", [("shared", True), ("skip", False), ("twice", False)])
def test_only_branches_that_are_each_their_own_conv_fold(tmp_path, kind, folds):
    torch.manual_seed(0)
    model = _randomised(Branches(kind))
    x = np.random.default_rng(1).normal(size=(4, 3, 16)).astype(np.float32)
    art = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "m.onnx")
    assert ("BatchNormalization" not in _ops(art.path)) is folds
    _agree(model, art.path, x)


def test_inception_time_loses_every_module_bn(tmp_path):
    """The zoo model the rewrite was measured on, on its own data; its parameters are shared by
    value across modules before training, which the exporter turns into Identity nodes."""
    torch.manual_seed(0)
    train, val, _ = load_ucr("OSULeaf")
    model = InceptionTime(1, 6, nf=8)
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(train.x[:32]))
    model.eval()
    art = export_onnx(model, torch.from_numpy(val.x[:1]), tmp_path / "m.onnx")
    ops = _ops(art.path)
    assert "BatchNormalization" not in ops and ops["Concat"] == 6 and "Identity" not in ops
    _agree(model, art.path, val.x[:8])
