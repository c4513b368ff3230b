"""The candidate pipeline: stage cache keys and the cache's reuse across runs."""

import copy

import onnx
import torch

from petra.exporters import Precision
from petra.models.digits import digits_task
from petra.optimizer.genome import CandidateConfig
from petra.pipeline import CandidateBuilder
from petra.runtimes import get_runtime


def _builder(task, teacher, tmp_path, seed=0, **kwargs):
    return CandidateBuilder(task, teacher, get_runtime("onnxruntime"), tmp_path, seed=seed, **kwargs)


def test_stage_key_changes_with_every_input(tiny_task, tiny_teacher, tmp_path):
    cfg = CandidateConfig(prune_ratio=0.5, epochs=1)
    b = _builder(tiny_task, tiny_teacher, tmp_path)
    key = b.stage_key(cfg)
    assert key == _builder(tiny_task, tiny_teacher, tmp_path).stage_key(cfg)  # deterministic
    # quantization and runtime genes do not enter the torch stage
    assert key == b.stage_key(CandidateConfig(prune_ratio=0.5, epochs=1, precision=Precision.INT8_STATIC,
                                              threads=2))
    assert key != b.stage_key(CandidateConfig(prune_ratio=0.5, epochs=2))  # its config
    other_teacher = copy.deepcopy(tiny_teacher)
    with torch.no_grad():
        other_teacher.fc.bias.add_(1e-3)
    assert key != _builder(tiny_task, other_teacher, tmp_path).stage_key(cfg)  # its input artifact
    assert key != _builder(tiny_task, tiny_teacher, tmp_path, seed=1).stage_key(cfg)
    other_data = digits_task(width=8)
    other_data.train.x[0, 0, 0, 0] += 0.5  # one pixel of the training data
    assert key != _builder(other_data, tiny_teacher, tmp_path).stage_key(cfg)
    fp32 = _builder(tiny_task, tiny_teacher, tmp_path, train_precision="fp32")
    bf16 = _builder(tiny_task, tiny_teacher, tmp_path, train_precision="bf16")
    assert fp32.stage_key(cfg) != bf16.stage_key(cfg)  # the fine-tune's arithmetic
    # the choice travels unresolved, for the process that trains to resolve
    assert CandidateBuilder.from_recipe(bf16.recipe()).train_bf16 and not fp32.train_bf16


def test_stage_key_changes_with_the_stage_code(tiny_task, tiny_teacher, tmp_path, monkeypatch):
    """An edit of the pruning / training / export code must not reuse the old code's weights."""
    import petra.pipeline as pipeline

    cfg = CandidateConfig(prune_ratio=0.5, epochs=1)
    key = _builder(tiny_task, tiny_teacher, tmp_path).stage_key(cfg)
    assert len(pipeline.stage_code_hash()) == 16
    monkeypatch.setattr(pipeline, "stage_code_hash", lambda: "edited")
    assert _builder(tiny_task, tiny_teacher, tmp_path).stage_key(cfg) != key


def test_torch_stage_is_reused_across_runs(tiny_task, tiny_teacher, tmp_path):
    cfg = CandidateConfig(prune_ratio=0.3, epochs=1, precision=Precision.FP32)
    first, second = {}, {}
    a = _builder(tiny_task, tiny_teacher, tmp_path / "run1").build(cfg, first)
    b = _builder(tiny_task, tiny_teacher, tmp_path / "run2").build(
        CandidateConfig(prune_ratio=0.3, epochs=1, precision=Precision.INT8_STATIC), second)
    assert "finetune_s" in first and "torch_cached" not in first
    assert second.get("torch_cached") == 1.0 and "finetune_s" not in second  # never retrained
    assert a.path.parent.parent.parent.name == "run1" and b.path.parent.parent.parent.name == "run2"
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(b.path)).graph.node}
