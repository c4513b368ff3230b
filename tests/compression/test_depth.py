"""Architecture genes: residual blocks removed per depth stage, the least useful first; the
shortened model still runs and exports."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from petra.compression.depth import BlockRemoval, depth_stages, drop_blocks, removable_blocks
from petra.compression.probe import count_params
from petra.exporters import export_onnx
from petra.models.digits import DigitsResNet
from petra.runtimes import get_runtime
from tests.user_models import DepthwiseCNN, InvertedResidual, TransformerClassifier

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
    assert BlockRemoval().applies(Plain(), x, None).startswith("the model has no residual block")
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
