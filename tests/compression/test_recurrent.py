"""Recurrent compression on real GRUs: pruning removes units for real, unrolling keeps the
function, and only the unrolled form gives INT8 something to quantize."""

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from petra.compression.recurrent import UnrolledGRU, prune_gru_units, unroll_gru
from petra.errors import PruneError
from petra.exporters import Precision, export_onnx, quantize
from petra.models.cdnow import GRUEncoder


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return GRUEncoder(features=3, hidden=32, layers=2, num_classes=2).eval()


def test_unrolled_gru_is_the_same_function(encoder):
    x = torch.randn(6, 11, 3)
    unrolled = unroll_gru(copy.deepcopy(encoder))
    assert isinstance(unrolled.gru, UnrolledGRU)
    torch.testing.assert_close(unrolled(x), encoder(x), atol=1e-5, rtol=1e-5)


def test_pruning_dead_units_changes_nothing(encoder):
    """Units whose weights are all zero stay at h=0: removing them must be exact, and the
    magnitude criterion must pick exactly them."""
    dead = torch.arange(0, 32, 2)  # half the units
    g, h = encoder.gru, 32
    with torch.no_grad():
        for layer in range(2):
            rows = torch.cat([dead + k * h for k in range(3)])
            for kind in ("ih", "hh"):
                getattr(g, f"weight_{kind}_l{layer}")[rows] = 0
                getattr(g, f"bias_{kind}_l{layer}")[rows] = 0
            getattr(g, f"weight_hh_l{layer}")[:, dead] = 0
        g.weight_ih_l1[:, dead] = 0
        encoder.head.weight[:, dead] = 0
    x = torch.randn(5, 9, 3)
    before = encoder(x)
    pruned = prune_gru_units(copy.deepcopy(encoder), ratio=0.5, round_to=8)
    assert pruned.gru.hidden_size == 16 and pruned.head.in_features == 16
    assert pruned.gru.weight_ih_l1.shape == (48, 16) and pruned.gru.weight_hh_l0.shape == (48, 16)
    torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-5)


def test_round_to_and_parameter_count(encoder):
    n0 = sum(p.numel() for p in encoder.parameters())
    pruned = prune_gru_units(copy.deepcopy(encoder), ratio=0.3, round_to=8)
    assert pruned.gru.hidden_size == 24  # 32 * 0.7 = 22.4 -> rounded up to a multiple of 8
    assert sum(p.numel() for p in pruned.parameters()) < 0.7 * n0
    assert prune_gru_units(copy.deepcopy(encoder), ratio=0.0).gru.hidden_size == 32


def test_unsupported_shapes_are_errors_not_no_ops():
    bi = nn.Sequential()
    bi.gru = nn.GRU(3, 8, batch_first=True, bidirectional=True)
    bi.fc = nn.Linear(16, 2)
    with pytest.raises(PruneError, match="unidirectional"):
        prune_gru_units(bi, ratio=0.5)
    with pytest.raises(PruneError, match="no nn.GRU"):
        prune_gru_units(nn.Sequential(nn.Linear(3, 2)), ratio=0.5)


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_reaches_the_unrolled_form_only(encoder, tmp_path):
    x = torch.randn(1, 13, 3)
    plain = export_onnx(copy.deepcopy(encoder), x, tmp_path / "gru.onnx")
    unrolled = export_onnx(unroll_gru(copy.deepcopy(encoder)), x, tmp_path / "unrolled.onnx")
    assert "GRU" in _ops(plain.path) and "GRU" not in _ops(unrolled.path)
    q_plain = quantize(plain, tmp_path / "q_gru.onnx", precision=Precision.INT8_DYNAMIC)
    q_unrolled = quantize(unrolled, tmp_path / "q_unrolled.onnx", precision=Precision.INT8_DYNAMIC)
    assert "GRU" in _ops(q_plain.path)  # the recurrent op stays float
    assert "MatMulInteger" in _ops(q_unrolled.path)  # the recurrent MatMuls are INT8
    import onnxruntime as ort

    sess = ort.InferenceSession(str(q_unrolled.path), providers=["CPUExecutionProvider"])
    xs = np.random.default_rng(0).standard_normal((4, 13, 3)).astype(np.float32)
    out = sess.run(None, {sess.get_inputs()[0].name: xs})[0]
    np.testing.assert_allclose(out, encoder(torch.from_numpy(xs)).detach().numpy(), atol=0.1)


def test_pruned_gru_fine_tunes(encoder, rng):
    """The replaced parameters must be the ones the GRU computes with (flat weights refreshed)."""
    from petra.compression.training import fit
    from petra.models.base import Split

    pruned = prune_gru_units(copy.deepcopy(encoder), ratio=0.5, round_to=8)
    split = Split(rng.standard_normal((64, 10, 3)).astype(np.float32), rng.integers(0, 2, 64))
    x = torch.from_numpy(split.x[:4])
    before_w, before_out = pruned.gru.weight_hh_l1.clone(), pruned(x).detach()
    fit(pruned, split, epochs=1, lr=1e-2)
    assert (pruned.gru.weight_hh_l1 - before_w).abs().max() > 0
    assert (pruned(x) - before_out).abs().max() > 0
