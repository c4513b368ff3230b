"""Head and FFN pruning of attention blocks (encoder layers and hand-written q/k/v attention):
real shrinkage, same function for kept heads, one ratio per block when asked."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from petra.compression.attention import (
    HeadPrunedAttention,
    attention_blocks,
    encoder_layers,
    has_attention,
    prune_attention,
)
from petra.compression.probe import count_params
from petra.errors import PruneError
from petra.exporters import export_onnx
from petra.runtimes import get_runtime
from tests.user_models import QKVAttentionClassifier, QKVBlock, TransformerClassifier


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


def _qkv_model() -> nn.Module:
    torch.manual_seed(0)
    return QKVAttentionClassifier(1).eval()


def test_attention_blocks_are_encoder_layers_and_qkv_self_attention():
    t, q = TransformerClassifier(1), _qkv_model()
    assert attention_blocks(t) == list(t.encoder.layers) and encoder_layers(t) == list(t.encoder.layers)
    assert attention_blocks(q) == [q.blocks[0].attn, q.blocks[1].attn] and has_attention(q)
    pruned = prune_attention(t, ratio=0.5)  # a HeadPrunedAttention belongs to its layer
    assert attention_blocks(pruned) == list(t.encoder.layers)
    assert not has_attention(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))


def _kill_heads_and_neurons(model: nn.Module) -> None:
    """Heads 1 and 3 and the odd FFN neurons of every block contribute nothing and weigh 0."""
    rows = torch.cat([torch.arange(h * 8, (h + 1) * 8) for h in (1, 3)])
    with torch.no_grad():
        for block in model.blocks:
            for lin in (block.attn.q, block.attn.k, block.attn.v):
                lin.weight[rows] = 0
                lin.bias[rows] = 0
            block.attn.out.weight[:, rows] = 0
            block.fc1.weight[1::2] = 0
            block.fc1.bias[1::2] = 0
            block.fc2.weight[:, 1::2] = 0


def test_qkv_attention_loses_exactly_its_dead_heads_and_neurons():
    model = _qkv_model()
    x = torch.randn(5, 1, 24)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(prune_attention(copy.deepcopy(model), ratio=0.0)(x), ref)
        _kill_heads_and_neurons(model)
        before = model(x)
        pruned = prune_attention(copy.deepcopy(model), ratio=0.5, round_to=8)
        for block in pruned.blocks:
            assert block.attn.num_heads == 2 and block.attn.head_dim == 8
            assert block.attn.q.out_features == block.attn.out.in_features == 16
            assert block.fc1.out_features == block.fc2.in_features == 32
        torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-5)


def _ort(path, x: torch.Tensor) -> np.ndarray:
    return get_runtime("onnxruntime").compile(path).run(x.numpy())


def test_per_block_ratios_on_qkv_attention_export_with_parity(tmp_path):
    model, x = _qkv_model(), torch.randn(6, 1, 24)
    before = count_params(model)
    pruned = prune_attention(copy.deepcopy(model), ratio=0.0, round_to=8, layer_ratios=[0.25, 0.5])
    assert [b.attn.num_heads for b in pruned.blocks] == [3, 2]
    assert [b.fc1.out_features for b in pruned.blocks] == [48, 32]
    assert count_params(pruned) < before
    with torch.no_grad():
        ref = pruned(x)
    assert ref.shape == (6, 2)
    art = export_onnx(pruned, x[:1], tmp_path / "qkv.onnx")
    np.testing.assert_allclose(_ort(art.path, x), ref.numpy(), atol=1e-4)
    from petra.compression.pruning import StructuredPruning

    assert StructuredPruning().applies(model, x[:1], None) is None


def test_per_block_ratios_on_a_transformer_encoder(tmp_path):
    torch.manual_seed(0)
    model, x = TransformerClassifier(1).eval(), torch.randn(6, 1, 24)
    pruned = prune_attention(copy.deepcopy(model), ratio=0.0, round_to=8, layer_ratios=[0.25, 0.5])
    layers = pruned.encoder.layers
    assert [layer.self_attn.num_heads for layer in layers] == [3, 2]
    assert [layer.linear1.out_features for layer in layers] == [48, 32]
    with torch.no_grad():
        ref = pruned(x)
    assert ref.shape == (6, 2)
    art = export_onnx(pruned, x[:1], tmp_path / "enc.onnx")
    np.testing.assert_allclose(_ort(art.path, x), ref.numpy(), atol=1e-4)
    again = prune_attention(pruned, ratio=0.0, layer_ratios=[0.5, 0.0])  # a pruned layer again
    assert [layer.self_attn.num_heads for layer in again.encoder.layers] == [2, 2]
    assert again(x).shape == (6, 2)


class FusedAttention(nn.Module):
    """One qkv Linear: not a recognised form, so pruning leaves it alone."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.num_heads = 1
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return x + self.out(torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v)


class Uneven(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_heads = 4
        self.q, self.k, self.v = nn.Linear(32, 30), nn.Linear(32, 30), nn.Linear(32, 30)
        self.out = nn.Linear(30, 32)


def test_unrecognised_attention_is_left_alone_and_bad_shapes_refused():
    torch.manual_seed(0)
    model = nn.Sequential(QKVBlock(32, 4, 64), FusedAttention()).eval()
    fused = copy.deepcopy(model[1].state_dict())
    assert attention_blocks(model) == [model[0].attn]
    prune_attention(model, ratio=0.5)
    assert model[0].attn.num_heads == 2 and model(torch.randn(2, 5, 32)).shape == (2, 5, 32)
    assert all(torch.equal(w, fused[k]) for k, w in model[1].state_dict().items())
    with pytest.raises(PruneError, match="heads x head_dim"):
        prune_attention(Uneven(), ratio=0.5)
    with pytest.raises(PruneError, match="3 ratios for 2 layers"):
        prune_attention(_qkv_model(), ratio=0.0, layer_ratios=[0.5, 0.5, 0.5])
    with pytest.raises(PruneError, match="no attention block"):
        prune_attention(FusedAttention(), ratio=0.5)
