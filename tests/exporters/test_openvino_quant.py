"""ONNX -> IR and NNCF INT8: real quantization of the tiny model on the task's own data."""

import numpy as np
import pytest

from petra.errors import QuantizeError
from petra.exporters import AccuracyControl, Artifact, NncfPreset, quantize_nncf, to_ir
from petra.runtimes import OpenVinoRuntime

pytestmark = pytest.mark.skipif(not OpenVinoRuntime.available()[0], reason="openvino not installed")


def _ops(path):
    import openvino as ov

    return [op.get_type_name() for op in ov.Core().read_model(str(path)).get_ops()]


@pytest.fixture(scope="module")
def int8(tiny_task, tiny_onnx, tmp_path_factory):
    return quantize_nncf(tiny_onnx, tmp_path_factory.mktemp("q") / "model.xml",
                         calibration_data=tiny_task.train.x[:128], subset_size=64)


def test_int8_ir_is_quantized_smaller_and_agrees(int8, tiny_task, tiny_onnx):
    assert "FakeQuantize" in _ops(int8.path) and sorted(f.suffix for f in int8.files) == [".bin", ".xml"]
    fp32 = OpenVinoRuntime().compile(tiny_onnx.path).run(tiny_task.val.x)
    q = OpenVinoRuntime().compile(int8.path).run(tiny_task.val.x)
    assert (q.argmax(1) == fp32.argmax(1)).mean() > 0.95
    assert not np.allclose(q, fp32, atol=1e-4)  # INT8 really changed the arithmetic


def test_int8_weights_are_stored_as_int8(int8, tiny_task, tiny_onnx, tmp_path):
    fp32_ir = to_ir(tiny_onnx, tmp_path / "f.xml")
    bins = {a: a.path.with_suffix(".bin").stat().st_size for a in (int8, fp32_ir)}
    assert bins[int8] < 0.5 * bins[fp32_ir]


def test_presets_give_different_models(tiny_task, tiny_onnx, int8, tmp_path):
    mixed = quantize_nncf(tiny_onnx, tmp_path / "m.xml", calibration_data=tiny_task.train.x[:128],
                          subset_size=64, preset=NncfPreset.MIXED)
    assert mixed.sha256 != int8.sha256


def test_artifact_hash_covers_the_weights(int8, tmp_path):
    copy = tmp_path / "c.xml"
    copy.write_bytes(int8.path.read_bytes())
    weights = bytearray(int8.path.with_suffix(".bin").read_bytes())
    weights[-1] ^= 0xFF
    copy.with_suffix(".bin").write_bytes(bytes(weights))
    assert Artifact.of(copy).sha256 != int8.sha256


def test_accuracy_control_keeps_the_drop_within_bounds(tiny_task, tiny_onnx, tmp_path):
    val = tiny_task.val
    ac = AccuracyControl(val.x, val.y, tiny_task.metric, max_drop=0.0)
    q = quantize_nncf(tiny_onnx, tmp_path / "ac.xml", calibration_data=tiny_task.train.x[:128],
                      subset_size=64, accuracy_control=ac)
    plain = quantize_nncf(tiny_onnx, tmp_path / "p.xml", calibration_data=tiny_task.train.x[:128],
                          subset_size=64)
    rt = OpenVinoRuntime()
    base = tiny_task.metric(rt.compile(tiny_onnx.path).run(val.x), val.y)
    got = tiny_task.metric(rt.compile(q.path).run(val.x), val.y)
    lost = base - tiny_task.metric(rt.compile(plain.path).run(val.x), val.y)
    # NNCF validates in its own compile (bf16 on this CPU): allow one sample of rounding
    assert base - got <= max(0.0, lost) and base - got <= 100 / len(val.y) + 1e-9
    assert "FakeQuantize" in _ops(q.path)


def test_no_calibration_data_is_a_quantize_error(tiny_onnx, tmp_path):
    with pytest.raises(QuantizeError, match="calibration data"):
        quantize_nncf(tiny_onnx, tmp_path / "q.xml", calibration_data=np.zeros((0, 1, 8, 8), np.float32))


def test_unreadable_model_is_a_quantize_error(tiny_task, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(QuantizeError):
        quantize_nncf(Artifact.of(bad), tmp_path / "q.xml", calibration_data=tiny_task.train.x[:8])
