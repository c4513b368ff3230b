"""QAT: fake-quant fine-tune exported as QDQ ONNX that ORT runs with integer kernels."""

import copy
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from petra.compression.qat import FakeQuant, calibrate, export_qat, prepare_qat
from petra.compression.training import fit, predict
from petra.errors import TrainError
from petra.exporters import Precision, quantize


def _session(path, optimized=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def qat_artifact(tiny_task, tiny_teacher, tmp_path_factory):
    model = prepare_qat(copy.deepcopy(tiny_teacher))
    calibrate(model, tiny_task.train.x[:256])
    fit(model, tiny_task.train, epochs=1, lr=1e-4)
    path = tmp_path_factory.mktemp("qat") / "qat.onnx"
    return model, export_qat(model, tiny_task.example_input, path)


def test_prepare_folds_batchnorm_and_keeps_outputs(tiny_task, tiny_teacher):
    model = prepare_qat(copy.deepcopy(tiny_teacher))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    fqs = [m for m in model.modules() if isinstance(m, FakeQuant)]
    assert len(fqs) > 10
    calibrate(model, tiny_task.train.x[:256])
    assert all(bool(m.initialized) and float(m.scale) > 0 for m in fqs)
    x = tiny_task.val.x
    agree = (predict(model, x).argmax(1) == predict(tiny_teacher, x).argmax(1)).mean()
    assert agree > 0.95  # 8-bit fake quant barely moves a calibrated model


def test_qat_exports_qdq_with_int8_weights_that_ort_fuses(tiny_task, tiny_onnx, qat_artifact, tmp_path):
    model, art = qat_artifact
    graph = onnx.load(str(art.path)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] > 5 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    big = [t for t in graph.initializer if np.prod(t.dims) >= 64]
    assert big and all(t.data_type == onnx.TensorProto.INT8 for t in big)  # weights stored as int8
    assert art.size_bytes < 0.8 * tiny_onnx.size_bytes
    # ORT runs it with integer kernels, as it does the PTQ artifact
    _session(art.path, tmp_path / "opt.onnx")
    fused = Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert fused["QLinearConv"] == ops["Conv"] and fused["QLinearAdd"] == ops["Add"] and fused["QGemm"] == 1
    assert "Conv" not in fused
    # and computes what the fake-quantized torch model computes
    x = tiny_task.val.x
    sess = _session(art.path)
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert (out.argmax(1) == predict(model, x).argmax(1)).mean() > 0.98
    assert (out.argmax(1) == tiny_task.val.y).mean() > 0.9


def test_qat_accuracy_is_on_par_with_ptq(tiny_task, tiny_onnx, qat_artifact, tmp_path):
    ptq = quantize(tiny_onnx, tmp_path / "ptq.onnx", precision=Precision.INT8_STATIC,
                   calibration_data=tiny_task.train.x[:256])

    def acc(path):
        s = _session(path)
        out = s.run(None, {s.get_inputs()[0].name: tiny_task.test.x})[0]
        return (out.argmax(1) == tiny_task.test.y).mean()

    assert acc(qat_artifact[1].path) >= acc(ptq.path) - 0.02


def test_untraceable_model_is_a_train_error():
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(TrainError, match="fx-traceable"):
        prepare_qat(Branchy())


def test_recurrent_model_is_a_train_error_and_the_pass_does_not_apply():
    """A GRU's op returns (output, state): QAT says so instead of failing inside an observer,
    and its probe removes the qat gene from such a model's search space with that reason."""
    from petra.compression.qat import QuantAwareTraining
    from petra.models.cdnow import GRUEncoder

    with pytest.raises(TrainError, match="not GRU layers"):
        prepare_qat(GRUEncoder(3, 8, 1, 2))
    reason = QuantAwareTraining().applies(GRUEncoder(3, 8, 1, 2), torch.zeros(1, 5, 3), None)
    assert reason is not None and "GRU" in reason


def test_qat_of_a_1d_cnn_stores_int8_conv1d_weights(tmp_path):
    """Conv1d is weight-quantized like Conv2d (its BN folded): a UCR CNN's QAT file once kept
    float weights and was 1.01x the FP32 size on GunPoint (now 0.28x)."""
    from petra.models.ucr import ucr_task

    task = ucr_task("ArrowHead", nf=4, depth=3, max_epochs=4)
    teacher = task.baseline(log=lambda s: None)
    model = prepare_qat(copy.deepcopy(teacher))
    assert any(isinstance(m, torch.nn.Conv1d) and hasattr(m, "w_scale") for m in model.modules())
    calibrate(model, task.train.x[:128])
    art = export_qat(model, task.example_input, tmp_path / "qat1d.onnx")
    inits = onnx.load(str(art.path)).graph.initializer
    conv_w = [t for t in inits if len(t.dims) == 3 and np.prod(t.dims) >= 64]  # Conv1d weights
    assert conv_w and all(t.data_type == onnx.TensorProto.INT8 for t in conv_w)
    x = task.val.x
    sess = _session(art.path)
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    fq = predict(model, x)  # ORT runs the function that was fake-quantized (argmax would flip on
    assert np.corrcoef(out.ravel(), fq.ravel())[0, 1] > 0.99  # near-tied logits of a 4-epoch model)
    assert np.abs(out - fq).max() < 0.5 * fq.std()
