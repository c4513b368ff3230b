"""Architecture genes: residual blocks removed per depth stage, the least useful first; the
shortened model still runs and exports."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from petra.compression.depth import BlockRemoval, depth_stages, drop_blocks, removable_blocks
from petra.compression.probe import count_params
from petra.compression.recurrent import prune_recurrent_units, unroll_gru
from petra.exporters import export_onnx
from petra.models.cdnow import GRUEncoder
from petra.models.digits import DigitsResNet
from petra.runtimes import get_runtime
from tests.user_models import DepthwiseCNN, InvertedResidual, LSTMClassifier, TransformerClassifier

torch.manual_seed(0)


class Plain(nn.Module):
    """Shape-keeping layers in a Sequential, but no skip: removing one changes the function."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1),
                                  nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


def test_only_residual_shape_keeping_blocks_are_removable():
    x = torch.randn(2, 1, 8, 8)
    assert [type(c[i]).__name__ for c, i in removable_blocks(DepthwiseCNN(), x)] == ["InvertedResidual"] * 2
    assert depth_stages(DigitsResNet(8), x) == [1, 1, 1]  # the strided block with a conv shortcut stays
    assert removable_blocks(Plain(), x) == []
    assert BlockRemoval().applies(Plain(), x, None).startswith("the model has no residual or composite block")
    assert depth_stages(TransformerClassifier(1), torch.randn(2, 1, 12)) == [1, 1]


def test_the_block_that_changes_its_input_least_goes_first():
    model, x = DepthwiseCNN().eval(), torch.randn(4, 1, 8, 8)
    model.blocks = nn.Sequential(*(InvertedResidual(16) for _ in range(5))).eval()
    sizes = depth_stages(model, x)
    stage = sizes.index(2)  # five blocks in four stages: one stage holds two
    later = sum(sizes[:stage]) + 1  # the second block of that stage
    with torch.no_grad():  # it becomes the identity, so of its stage's two blocks it must go
        model.blocks[later].block[-1].weight.zero_()
        model.blocks[later].block[-1].bias.zero_()
        expected = model(x)
    drop_blocks(model, x, tuple(int(i == stage) for i in range(4)), inputs=x)
    assert [i for i, b in enumerate(model.blocks) if isinstance(b, nn.Identity)] == [later]
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


def test_removed_blocks_shrink_the_model_and_it_exports(tmp_path):
    model, x = DigitsResNet(8).eval(), torch.randn(2, 1, 8, 8)
    before = count_params(model)
    drop_blocks(model, x, (1, 0, 1, 0))
    assert count_params(model) < before
    art = export_onnx(model, x, tmp_path / "m.onnx")
    with torch.no_grad():
        expected = model(x).numpy()
    got = get_runtime("onnxruntime").compile(art.path).run(x.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_transformer_keeps_at_least_one_layer():
    model, x = TransformerClassifier(1).eval(), torch.randn(2, 1, 12)
    drop_blocks(model, x, (2, 2, 2, 2))
    assert len(model.encoder.layers) == 1 and model.encoder.num_layers == 1
    assert model(x).shape == (2, 2)


def test_a_stacked_recurrent_layer_is_a_block_and_the_top_one_goes_first():
    """Layers 1.. of an LSTM read what they write; layer 0 (3 inputs -> 8 units) does not."""
    model, x = LSTMClassifier(3, hidden=8, layers=3).eval(), torch.randn(2, 3, 5)
    old = {n: p.detach().clone() for n, p in model.lstm.named_parameters()}
    assert [(type(m).__name__, j) for m, j in removable_blocks(model, x)] == [("LSTM", 1), ("LSTM", 2)]
    assert depth_stages(model, x) == [1, 1]
    drop_blocks(model, x, (0, 1))
    assert isinstance(model.lstm, nn.LSTM) and model.lstm.num_layers == 2
    for name in ("weight_ih_l0", "weight_hh_l1", "bias_hh_l1"):  # layers 0 and 1 kept, as they were
        torch.testing.assert_close(getattr(model.lstm, name), old[name])
    drop_blocks(model, x, (1,))
    assert model.lstm.num_layers == 1 and model(x).shape == (2, 2)


def test_a_gru_without_its_top_layer_computes_its_first_layer_and_exports(tmp_path):
    """cdnow's shape: a 2-layer GRU read at its last step by a Linear head. Without layer 1 the
    head reads layer 0, exactly, in torch and in ONNX Runtime; pruning and unrolling still run."""
    model, x = GRUEncoder(3, 16, 2, 6).eval(), torch.randn(4, 7, 3)
    first = nn.GRU(3, 16, 1, batch_first=True)
    first.load_state_dict({n: p for n, p in model.gru.state_dict().items() if n.endswith("_l0")})
    with torch.no_grad():
        expected = model.head(first(x)[0][:, -1])
    assert BlockRemoval().applies(model, x, None) is None
    drop_blocks(model, x, (1, 0, 0, 0))
    assert model.gru.num_layers == 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    art = export_onnx(model, x, tmp_path / "m.onnx")
    got = get_runtime("onnxruntime").compile(art.path).run(x.numpy())
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    prune_recurrent_units(model, ratio=0.5)
    unroll_gru(model)
    assert model(x).shape == (4, 6)


def test_composite_blocks_without_a_skip_are_removable_and_keep_their_places(tmp_path):
    """InceptionTime's modules keep their shape but add no skip (the shortcut spans three): each
    but the first (1 -> 4 x nf channels) is a block; it becomes an Identity in its ModuleList, so
    the owner's every-third-module shortcut still follows the same modules."""
    from petra.models.ucr import InceptionTime

    model, x = InceptionTime(1, 3, nf=4, depth=6).eval(), torch.randn(2, 1, 40)
    assert [i for _, i in removable_blocks(model, x)] == [1, 2, 3, 4, 5]
    conv_bn_relu = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
                                 nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()))
    assert removable_blocks(conv_bn_relu, torch.randn(1, 4, 6, 6)) == []  # one layer each: pruning's
    drop_blocks(model, x, (1, 1, 0, 1))
    assert len(model.modules_) == 6
    assert [i for i, m in enumerate(model.modules_) if isinstance(m, nn.Identity)] == [1, 2, 5]
    art = export_onnx(model, x, tmp_path / "m.onnx")
    with torch.no_grad():
        expected = model(x).numpy()
    got = get_runtime("onnxruntime").compile(art.path).run(x.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4)
