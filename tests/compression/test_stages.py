"""Non-uniform pruning: each depth stage pruned at its own ratio, on conv, recurrent and attention
models; the uniform ratio is one point of that space and keeps its old key."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from petra.candidate import CandidateConfig
from petra.compression.pruning import STAGE_GENES, StructuredPruning, output_layers, stage_ratios
from petra.compression.stages import channel_groups, chunks, per_unit
from tests.user_models import DepthwiseCNN, LSTMClassifier, QKVAttentionClassifier, TransformerClassifier

torch.manual_seed(0)


def _convs(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_chunks_are_contiguous_and_near_equal():
    assert sorted(len(c) for c in chunks(list(range(6)))) == [1, 1, 2, 2]
    assert sum(chunks(list(range(23))), []) == list(range(23))
    assert chunks([1, 2]) == [[1], [2]] and chunks([]) == []
    ratios = (0.1, 0.5, 0.2, 0.3)
    assert per_unit(ratios, 2) == [0.1, 0.5]  # two units: two stages
    assert per_unit(ratios, 8) == [0.1, 0.1, 0.5, 0.5, 0.2, 0.2, 0.3, 0.3]


def test_a_residual_stream_is_the_first_stage_however_late_torch_pruning_roots_it():
    model, x = DepthwiseCNN(), torch.randn(2, 1, 8, 8)
    groups = channel_groups(model, x, output_layers(model, x))
    assert len(groups) == 3
    assert model.stem[0] in groups[0]  # the stem, both blocks' projections: one coupled stream
    assert model.blocks[0].block[0] in groups[1] and model.blocks[1].block[0] in groups[2]


def test_each_stage_loses_its_own_share():
    model, x = DepthwiseCNN(), torch.randn(2, 1, 8, 8)
    StructuredPruning.prune(model, x, ratio=0.5, round_to=1, stage_ratios=(0.0, 0.75, 0.25, 0.5))
    stem, e1, dw1, _, e2, dw2, _ = _convs(model)
    assert stem == 16 and e1 == dw1 == 16 and e2 == dw2 == 48  # 64 * (1 - ratio) per block
    assert model(x).shape == (2, 10)


def test_uniform_stage_ratios_build_what_the_global_ratio_builds():
    base, x = DepthwiseCNN(), torch.randn(2, 1, 8, 8)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    StructuredPruning.prune(a, x, ratio=0.5, round_to=1)
    StructuredPruning.prune(b, x, ratio=0.5, round_to=1, stage_ratios=(0.5,) * 4)
    assert _convs(a) == _convs(b)
    assert torch.equal(a(x), b(x))


def test_a_stage_at_the_global_ratio_is_the_global_ratio_and_keys_are_kept():
    old = CandidateConfig(prune_ratio=0.5, epochs=4)
    assert old.replace(prune_stage1=0.5).key == old.key  # clamped back to "inherit"
    assert old.replace(prune_stage1=0.7).key != old.key
    assert stage_ratios(old.replace(prune_stage1=0.7)) == (0.5, 0.7, 0.5, 0.5)
    only_one = CandidateConfig(prune_stage2=0.6).canonical()  # a stage alone makes pruning matter
    assert only_one.round_to == 8 and only_one.prune_stage2 == 0.6


def test_narrow_closes_stages_the_model_does_not_have():
    model, x = DepthwiseCNN(), torch.randn(2, 1, 8, 8)
    narrowed = StructuredPruning().narrow(model, x)
    assert set(narrowed) & set(STAGE_GENES) == {"prune_stage3"}
    assert "3 depth stages" in narrowed["prune_stage3"][1]


def _shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in model.parameters()]


@pytest.mark.parametrize("make", [lambda: LSTMClassifier(1), lambda: TransformerClassifier(1),
                                  lambda: QKVAttentionClassifier(1)])
def test_recurrent_and_attention_layers_take_their_stage_ratio(make):
    x = torch.randn(3, 1, 24)
    shallow_first, deep_first = make().eval(), make().eval()
    StructuredPruning.prune(shallow_first, x, ratio=0.0, round_to=1, stage_ratios=(0.25, 0.75, 0.0, 0.0))
    StructuredPruning.prune(deep_first, x, ratio=0.0, round_to=1, stage_ratios=(0.75, 0.25, 0.0, 0.0))
    assert shallow_first(x).shape == deep_first(x).shape == (3, 2)
    assert _shapes(shallow_first) != _shapes(deep_first) != _shapes(make())
    assert sum(p.numel() for p in shallow_first.parameters()) < sum(p.numel() for p in make().parameters())
