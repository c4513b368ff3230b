"""The run's search space is probed on the model: what cannot apply leaves with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from petra.compression.pruning import Importance
from petra.compression.regularizers import Regularizer
from petra.errors import ConfigError
from petra.models.base import Task
from petra.models.cdnow import cdnow_task
from petra.models.onnx_task import onnx_task
from petra.optimizer.genome import SearchSpace
from petra.optimizer.space import assemble
from tests import user_models

ORT = ("onnxruntime",)


def _assemble(task, space=None, runtimes=ORT):
    return assemble(task, task.build_model(), runtimes, 1, space)


def test_gru_model_keeps_what_its_recurrent_passes_can_do():
    task = cdnow_task(hidden=8, layers=1, limit=600, max_epochs=1)
    space, removed = _assemble(task)
    reasons = dict(removed)
    assert set(space.importance) == {Importance.L1, Importance.L2} and "L1/L2" in reasons["importance"]
    assert set(space.regularizer) == {Regularizer.NONE, Regularizer.KD}
    assert "BatchNorm" in reasons["regularizer"]
    assert space.unroll_recurrent == (False, True)
    assert space.qat == (False,) and "GRU" in reasons["qat"]
    assert len(space.prune_ratio) > 1  # hidden-unit pruning applies
    bad = Task("t", task.build_model, task.train, task.val, task.test, gene_choices={"nope": (1,)})
    with pytest.raises(ConfigError, match="unknown gene 'nope'"):
        _assemble(bad)


def test_two_layer_lstm_loses_the_genes_that_cannot_apply_each_with_its_reason():
    space, removed = _assemble(user_models.lstm_task())
    reasons = dict(removed)
    # torch-pruning asserts num_layers == 1; petra's hidden-unit pruning takes the 2-layer LSTM
    assert len(space.prune_ratio) > 1 and "prune_ratio" not in reasons
    assert set(space.importance) == {Importance.L1, Importance.L2} and "L1/L2" in reasons["importance"]
    assert space.qat == (False,) and "LSTM" in reasons["qat"]
    assert space.unroll_recurrent == (False,) and "nn.GRU" in reasons["unroll_recurrent"]
    assert space.nncf_preset == (space.nncf_preset[0],) and "NNCF" in reasons["nncf_preset"]
    assert len(space.precision) == 3 and len(space.epochs) > 1  # what applies stays open
    assert all(r and "\n" not in r for _, r in removed)


def test_transformer_that_torchscript_cannot_export_is_probed_through_dynamo():
    space, removed = _assemble(user_models.transformer_task())
    assert len(space.precision) == 3 and len(space.epochs) > 1
    assert len(space.prune_ratio) > 1  # heads and FFN neurons (torch-pruning cannot change num_heads)
    assert set(space.importance) == {Importance.L1, Importance.L2}
    assert len(space.transformer_fusion) == 2  # ORT fuses its LayerNorms
    assert all(r for _, r in removed)


def test_depthwise_cnn_prunes_with_groups_kept_consistent():
    space, removed = _assemble(user_models.depthwise_task())
    assert len(space.prune_ratio) > 1 and "prune_ratio" not in dict(removed)


def test_a_model_no_exporter_takes_stops_before_training():
    with pytest.raises(ConfigError, match="does not export to ONNX") as err:
        _assemble(user_models.unexportable_task())
    assert "\n" not in str(err.value)


def test_onnx_task_loses_every_torch_gene(tmp_path, tiny_onnx, tiny_task):
    data = tmp_path / "calib.npz"
    np.savez(data, x=tiny_task.val.x[:120])
    task = onnx_task(tiny_onnx.path, data)
    space, removed = assemble(task, None, ORT, 1, SearchSpace(threads=(1,)))
    assert space.prune_ratio == (0.0,) and space.epochs == (0,) and space.lowrank_ratio == (0.0,)
    assert "ONNX file" in dict(removed)["prune_ratio"]
    assert len(space.precision) == 3


def test_openvino_run_drops_ort_only_genes_and_clamps_precision():
    space, removed = assemble(user_models.depthwise_task(), user_models.DepthwiseCNN(), ("openvino",), 1)
    reasons = dict(removed)
    assert space.calibration == (space.calibration[0],) and "ORT's quantizer" in reasons["calibration"]
    assert len(space.nncf_preset) > 1


def test_a_model_that_exports_to_another_function_stops_before_training():
    with pytest.raises(ConfigError, match="disagrees with the torch model") as err:
        _assemble(user_models.stateful_task())
    assert "\n" not in str(err.value)


def test_the_one_thread_twin_seeds_only_a_search_that_does_not_screen_threads():
    from petra.optimizer.space import seed_configs

    unscreened = seed_configs(2, screened=False)
    screened = seed_configs(2)
    assert [c.threads for c in unscreened[-2:]] == [2, 1] and len(unscreened) == len(screened) + 1
    assert len({c.key for c in screened}) == len(screened)


def test_ptq_alone_comes_with_both_weight_scales_on_onnx_runtime_and_once_on_openvino():
    """ONNX Runtime's own defaults (per-tensor) are among the single techniques petra measures,
    so its front holds at least what INT8 alone gives; OpenVINO has no such gene."""
    from petra.exporters import Precision
    from petra.optimizer.genome import OPENVINO, ORT
    from petra.optimizer.space import ptq_configs

    both = (Precision.INT8_STATIC, Precision.INT8_DYNAMIC)
    ort_configs = ptq_configs(2, ORT, (Precision.FP32, *both))
    assert {(c.precision, c.per_channel) for c in ort_configs} == {
        (p, pc) for p in both for pc in (True, False)}
    assert len({c.key for c in ort_configs}) == 4
    ov = ptq_configs(2, OPENVINO, (Precision.INT8_STATIC,))
    assert len(ov) == 1 and ov[0].precision is Precision.INT8_STATIC


def test_the_hand_made_seed_takes_the_weight_scale_that_ptq_kept():
    from petra.exporters import Precision
    from petra.optimizer.space import seed_configs

    seeds = seed_configs(2, precision=Precision.INT8_STATIC, per_channel=False)
    int8 = [c for c in seeds if c.precision is Precision.INT8_STATIC]
    assert int8 and all(c.per_channel is False for c in int8)
    assert any(c.prune_ratio == 0.5 and c.epochs == 4 for c in int8)
    assert len({c.key for c in seeds}) == len(seeds)


def test_sensitive_exclusion_is_not_offered_past_its_weight_limit(monkeypatch):
    """Read off the exported graph: a model with more weights than the sensitivity ranking
    takes loses that one choice with the count, and keeps the other exclusions."""
    import importlib

    from petra.exporters.quantize import QuantExclude

    q = importlib.import_module("petra.exporters.quantize")
    task = user_models.lstm_task()
    space, _ = _assemble(task)
    assert QuantExclude.SENSITIVE in space.quant_exclude
    monkeypatch.setattr(q, "MAX_SENSITIVITY_LAYERS", 1)
    space, removed = _assemble(task)
    assert QuantExclude.SENSITIVE not in space.quant_exclude
    assert QuantExclude.FIRST_LAST in space.quant_exclude
    assert "(limit 1)" in dict(removed)["quant_exclude"]
    space, removed = _assemble(task, runtimes=("openvino",))  # not ORT's quantizer: nothing to narrow
    assert "(limit 1)" not in dict(removed).get("quant_exclude", "")


def test_a_precision_too_slow_everywhere_leaves_the_space():
    from types import SimpleNamespace

    from petra.exporters import Precision
    from petra.optimizer.search import GenerationLoop
    from petra.optimizer.space import SLOW_PTQ, slow_precisions

    # fashion-mnist's ResNet on ORT: dynamic INT8 (ConvInteger) 5.6x FP32 with either weight scale
    ratios = {Precision.INT8_DYNAMIC: [5.57, 5.52], Precision.INT8_STATIC: [0.33, 0.34]}
    assert slow_precisions(ratios) == {Precision.INT8_DYNAMIC: 5.52}
    # fast on one runtime, or not measured (its PTQ build failed): it stays
    assert slow_precisions({Precision.INT8_STATIC: [3.0, SLOW_PTQ - 0.01], Precision.INT8_DYNAMIC: []}) == {}
    assert slow_precisions({Precision.FP32: [2.0]}) == {}

    seen = []
    loop = SimpleNamespace(space=SearchSpace(), _ptq_ratios=ratios, removed=[("qat", "why")],
                           events=SimpleNamespace(genes_removed=seen.append))
    kept = GenerationLoop._drop_slow_precisions(loop)
    assert Precision.INT8_DYNAMIC not in kept and kept == loop.space.precision
    assert Precision.FP32 in kept and Precision.INT8_STATIC in kept
    assert loop.removed[0] == ("qat", "why") and loop.removed[1][0] == "precision"
    assert "int8_dynamic" in loop.removed[1][1] and "5.5x" in loop.removed[1][1]
    assert seen == [loop.removed[1:]]
    # nothing slow: the space is left as it was
    loop = SimpleNamespace(space=SearchSpace(), _ptq_ratios={Precision.INT8_STATIC: [0.3]}, removed=[])
    assert GenerationLoop._drop_slow_precisions(loop) == SearchSpace().precision and not loop.removed
