"""Low-rank SVD factorization: exact at full rank, smaller when cut, trainable, exportable."""

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from petra.compression.lowrank import (
    LowRankRegularizer,
    SVDLayer,
    factorize,
    low_rank,
    rank_for,
    svd_layers,
    truncate,
)
from petra.compression.pruning import count_params
from petra.compression.regularizers import CrossEntropy
from petra.compression.training import fit, predict
from petra.exporters import export_onnx


def _macs(path) -> int:
    """Multiply-accumulates of the Conv/Gemm nodes of an ONNX file at batch 1 (8x8 digits)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            out = shapes[n.output[0]]
            w = inits[n.input[1]]
            total += int(np.prod(w)) * (int(np.prod(out[2:])) if n.op_type == "Conv" else 1)
    return total


def test_rank_for_skips_layers_where_factorizing_does_not_pay():
    assert rank_for((64, 64, 3, 3), 0.25) == 16  # 16 * (576 + 64) << 576 * 64
    assert rank_for((8, 1, 3, 3), 0.5) is None  # 4 * (9 + 8) = 68 > 0.8 * 72: nothing saved
    assert rank_for((10, 16), 0.9) is None  # a full-rank classifier would grow


def test_factorize_is_exact_then_truncate_shrinks(tiny_task, tiny_model):
    dense = count_params(tiny_model)
    x = torch.from_numpy(tiny_task.val.x[:32])
    with torch.no_grad():
        ref = tiny_model(x)
    names = factorize(tiny_model, 0.5)
    assert names and "stem.0" not in names  # 1 -> 8 channels: no saving, left alone
    with torch.no_grad():
        np.testing.assert_allclose(tiny_model(x).numpy(), ref.numpy(), atol=1e-4)
    truncate(tiny_model, 0.5)
    assert not svd_layers(tiny_model)
    assert count_params(tiny_model) < 0.8 * dense


def test_low_rank_model_exports_and_runs_in_ort_with_fewer_macs(tiny_task, tiny_teacher, tmp_path):
    dense = export_onnx(copy.deepcopy(tiny_teacher), tiny_task.example_input, tmp_path / "dense.onnx")
    model = low_rank(copy.deepcopy(tiny_teacher), 0.25)
    assert count_params(model) < 0.6 * count_params(tiny_teacher)
    art = export_onnx(model, tiny_task.example_input, tmp_path / "lr.onnx")
    assert art.size_bytes < dense.size_bytes
    assert _macs(art.path) < 0.6 * _macs(dense.path)
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    x = tiny_task.val.x[:5]
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(out, predict(model, x), atol=1e-4)


def test_regularizers_are_finite_and_decrease_when_trained(tiny_task, tiny_model):
    factorize(tiny_model, 0.5)
    reg = LowRankRegularizer(CrossEntropy(), hoyer=1.0, ortho=1.0)
    with torch.no_grad():
        # perturb the factors so the orthogonality penalty starts above its SVD minimum of 0
        for m in svd_layers(tiny_model):
            m.u.add_(0.05 * torch.randn_like(m.u))
        h0, o0 = (float(v) for v in reg.penalties(tiny_model))
    assert np.isfinite(h0) and np.isfinite(o0) and o0 > 0
    # the penalties alone: training must lower both
    penalty_only = LowRankRegularizer(lambda *a: torch.zeros(()), hoyer=1.0, ortho=1.0)
    fit(tiny_model, tiny_task.train, epochs=1, lr=1e-3, loss=penalty_only)
    with torch.no_grad():
        h1, o1 = (float(v) for v in reg.penalties(tiny_model))
    assert h1 < h0 and o1 < o0


def test_hoyer_is_lower_for_sparser_spectra():
    layer = SVDLayer(nn.Linear(8, 8))
    with torch.no_grad():
        layer.s.copy_(torch.ones(8))
        flat = float(layer.hoyer())
        layer.s.copy_(torch.tensor([1.0] + [0.0] * 7))
        assert float(layer.hoyer()) == pytest.approx(1.0) and flat == pytest.approx(8**0.5)
