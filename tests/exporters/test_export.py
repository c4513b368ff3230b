import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from petra.errors import ExportError, QuantizeError
from petra.exporters import Calibration, Precision, QuantExclude, export_onnx, quantize
from petra.exporters.artifact import sha256_file
from petra.exporters.quantize import calibration_batches, weight_groups, weighted_nodes


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("method", ["torchscript", "dynamo"])
def test_export_is_one_file_opset18_dynamic_batch(tiny_task, tiny_teacher, tmp_path, method):
    art = export_onnx(copy.deepcopy(tiny_teacher), tiny_task.example_input, tmp_path / "m.onnx",
                      method=method)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no external data
    model = onnx.load(str(art.path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert art.sha256 == sha256_file(art.path) and art.size_bytes == art.path.stat().st_size
    x = tiny_task.val.x[:7]  # batch 7 was never seen at export time
    with __import__("torch").no_grad():
        ref = tiny_teacher(__import__("torch").from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(art.path, x), ref, atol=1e-4)


def test_export_rejects_low_opset(tiny_task, tiny_teacher, tmp_path):
    with pytest.raises(ExportError, match=">= 18"):
        export_onnx(tiny_teacher, tiny_task.example_input, tmp_path / "m.onnx", opset=17)


@pytest.mark.parametrize("n, sizes", [(256, [32] * 8), (36, [18, 18]), (37, [18, 18]), (71, [23] * 3),
                                      (5, [5]), (0, [])])
def test_calibration_batches_are_equal_and_at_most_32(n, sizes):
    batches = calibration_batches(n, 32)
    assert [s.stop - s.start for s in batches] == sizes
    assert all(b.start == a.stop for a, b in zip(batches, batches[1:]))  # consecutive, no overlap


@pytest.mark.parametrize("calibration", list(Calibration))
def test_static_int8_is_smaller_and_agrees(tiny_task, tiny_onnx, tmp_path, calibration):
    # 71 samples, not a multiple of the calibration batch: a short last batch broke ORT's
    # entropy and percentile calibrators ("setting an array element with a sequence")
    q = quantize(tiny_onnx, tmp_path / "q.onnx", precision=Precision.INT8_STATIC,
                 calibration=calibration, calibration_data=tiny_task.train.x[:71])
    # on an 8-channel model the QDQ graph's own bytes weigh; the weights themselves are int8
    assert q.size_bytes < 0.8 * tiny_onnx.size_bytes
    graph = onnx.load(str(q.path)).graph
    big = [t for t in graph.initializer if np.prod(t.dims) >= 64]
    assert big and all(t.data_type == onnx.TensorProto.INT8 for t in big)
    ops = {n.op_type for n in graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    x = tiny_task.val.x
    agree = (_run(q.path, x).argmax(1) == _run(tiny_onnx.path, x).argmax(1)).mean()
    assert agree > 0.95


def test_dynamic_int8_and_fp32_copy(tiny_task, tiny_onnx, tmp_path):
    d = quantize(tiny_onnx, tmp_path / "d.onnx", precision=Precision.INT8_DYNAMIC)
    assert d.size_bytes < tiny_onnx.size_bytes
    f = quantize(tiny_onnx, tmp_path / "f.onnx", precision=Precision.FP32)
    assert f.sha256 == tiny_onnx.sha256
    assert _run(d.path, tiny_task.val.x[:4]).shape == (4, 10)


def test_static_without_calibration_data_fails(tiny_onnx, tmp_path):
    with pytest.raises(QuantizeError, match="calibration data"):
        quantize(tiny_onnx, tmp_path / "q.onnx", precision=Precision.INT8_STATIC)


def _float_layers(path):
    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits
            and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT]


@pytest.mark.parametrize("rule, kept", [
    (QuantExclude.NONE, []), (QuantExclude.FIRST, [0]), (QuantExclude.LAST, [-1]),
    (QuantExclude.FIRST_LAST, [0, -1]),
])
def test_exclusions_keep_named_layers_in_float(tiny_task, tiny_onnx, tmp_path, rule, kept):
    layers = weighted_nodes(tiny_onnx.path)
    q = quantize(tiny_onnx, tmp_path / "q.onnx", precision=Precision.INT8_STATIC,
                 calibration_data=tiny_task.train.x[:64], exclude=rule)
    assert _float_layers(q.path) == [layers[i] for i in kept]
    assert _run(q.path, tiny_task.val.x[:4]).shape == (4, 10)


def test_sensitive_exclusion_keeps_the_layer_that_moves_outputs_most(tiny_task, tiny_onnx, tmp_path):
    from petra.exporters.quantize import _Quantizer, layer_sensitivity

    data = tiny_task.train.x[:64]
    scores = layer_sensitivity(tiny_onnx.path, _Quantizer(Precision.INT8_STATIC, Calibration.MINMAX, True,
                                                          data, 32), data)
    groups = weight_groups(tiny_onnx.path)  # a CNN: one layer per weight
    assert all(len(nodes) == 1 for nodes in groups.values())
    assert set(scores) == set(groups) and all(s >= 0 for s in scores.values())
    q = quantize(tiny_onnx, tmp_path / "q.onnx", precision=Precision.INT8_STATIC,
                 calibration_data=data, exclude=QuantExclude.SENSITIVE)
    assert _float_layers(q.path) == groups[max(scores, key=scores.get)]
    # explicit node names work too, and dynamic quantization honours them
    name = weighted_nodes(tiny_onnx.path)[1]
    d = quantize(tiny_onnx, tmp_path / "d.onnx", precision=Precision.INT8_DYNAMIC, exclude=[name])
    assert name in _float_layers(d.path)


def test_sensitive_exclusion_with_dynamic_int8(tiny_task, tiny_onnx, tmp_path):
    """Dynamic INT8 needs no calibration, but ranking layers by sensitivity does: with the
    task's samples it keeps one layer in float; without them it is a one-line QuantizeError."""
    from petra.errors import QuantizeError

    data = tiny_task.train.x[:64]
    q = quantize(tiny_onnx, tmp_path / "q.onnx", precision=Precision.INT8_DYNAMIC,
                 calibration_data=data, exclude=QuantExclude.SENSITIVE)
    assert len(_float_layers(q.path)) == 1
    assert _run(q.path, tiny_task.val.x[:4]).shape == (4, 10)
    with pytest.raises(QuantizeError, match="calibration data"):
        quantize(tiny_onnx, tmp_path / "n.onnx", precision=Precision.INT8_DYNAMIC,
                 exclude=QuantExclude.SENSITIVE)


def test_sensitive_exclusion_refuses_graphs_with_too_many_layers(tiny_task, tiny_onnx, tmp_path, monkeypatch):
    """One quantization per layer is quadratic in graph size: past the limit the candidate
    fails at once with a reason naming the other choices, instead of running for minutes."""
    import importlib

    from petra.errors import QuantizeError

    q = importlib.import_module("petra.exporters.quantize")  # the package re-exports a function of that name
    monkeypatch.setattr(q, "MAX_SENSITIVITY_LAYERS", 1)
    with pytest.raises(QuantizeError, match="has [0-9]+ \\(limit 1\\).*first_last"):
        quantize(tiny_onnx, tmp_path / "q.onnx", precision=Precision.INT8_STATIC,
                 calibration_data=tiny_task.train.x[:64], exclude=QuantExclude.SENSITIVE)
