"""Head and FFN pruning of transformer encoders: real shrinkage, same function for kept heads."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from petra.compression.attention import HeadPrunedAttention, prune_attention
from petra.compression.probe import count_params
from petra.exporters import export_onnx
from petra.runtimes import get_runtime
from tests.user_models import TransformerClassifier


def _encoder(batch_first: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=batch_first)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()


@pytest.mark.parametrize("batch_first", [True, False])
def test_keeping_every_head_is_the_same_function(batch_first):
    enc = _encoder(batch_first)
    x = torch.randn(3, 5, 32) if batch_first else torch.randn(5, 3, 32)
    with torch.no_grad():
        ref = enc(x)
        for layer in enc.layers:
            layer.self_attn = HeadPrunedAttention(layer.self_attn, torch.arange(4))
        torch.testing.assert_close(enc(x), ref, atol=1e-5, rtol=1e-5)
        mask = torch.zeros(3, 5, dtype=torch.bool)
        mask[:, -2:] = True  # padded keys
        ref_masked = _encoder(batch_first)(x, src_key_padding_mask=mask)
        torch.testing.assert_close(enc(x, src_key_padding_mask=mask)[~mask.T if not batch_first else ~mask],
                                   ref_masked[~mask.T if not batch_first else ~mask], atol=1e-5, rtol=1e-5)


def test_half_the_heads_and_neurons_go_and_the_model_exports(tmp_path):
    model = TransformerClassifier(1).eval()
    x = torch.randn(6, 1, 24)
    before = count_params(model)
    pruned = prune_attention(copy.deepcopy(model), ratio=0.5, round_to=8)
    attn = pruned.encoder.layers[0].self_attn
    assert isinstance(attn, HeadPrunedAttention) and attn.num_heads == 2
    assert pruned.encoder.layers[0].linear1.out_features == 32
    assert count_params(pruned) < 0.75 * before
    art = export_onnx(pruned, x[:1], tmp_path / "p.onnx")
    with torch.no_grad():
        ref = pruned(x).numpy()
    np.testing.assert_allclose(get_runtime("onnxruntime").compile(art.path).run(x.numpy()), ref, atol=1e-4)


def test_pruning_pass_applies_to_a_transformer_now():
    from petra.compression.pruning import StructuredPruning

    model = TransformerClassifier(1).eval()
    assert StructuredPruning().applies(model, torch.randn(1, 1, 24), None) is None
