"""What only OpenVINO has: IR input, honest f32 by default, bf16 as a choice, one-line errors."""

import numpy as np
import pytest
import torch

from petra.errors import CompileError, ConfigError
from petra.exporters import to_ir
from petra.runtimes import InferencePrecision, OpenVinoRuntime

pytestmark = pytest.mark.skipif(not OpenVinoRuntime.available()[0], reason="openvino not installed")


@pytest.fixture(scope="module")
def ir(tiny_onnx, tmp_path_factory):
    return to_ir(tiny_onnx, tmp_path_factory.mktemp("ir") / "model.xml")


def _ref(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_ir_compiles_and_matches_torch(ir, tiny_task, tiny_teacher):
    assert ir.path.with_suffix(".bin").is_file()
    assert ir.size_bytes == ir.path.stat().st_size + ir.path.with_suffix(".bin").stat().st_size
    x = tiny_task.val.x[:8]
    np.testing.assert_allclose(OpenVinoRuntime().compile(ir.path).run(x), _ref(tiny_teacher, x), atol=1e-4)


def test_ir_keeps_fp32_weights(ir, tiny_onnx):
    import openvino as ov

    model = ov.Core().read_model(str(ir.path))
    consts = [op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_output_size()
              and np.prod(list(op.get_output_shape(0))) >= 64]
    assert consts and all(c.get_output_element_type(0) == ov.Type.f32 for c in consts)


def test_default_precision_is_f32_even_where_bf16_is_native(tiny_onnx):
    """The plugin's own default here is bf16; petra must never inherit it silently."""
    assert OpenVinoRuntime().compile(tiny_onnx.path).settings["precision"] == "f32"


@pytest.mark.skipif(InferencePrecision.BF16 not in OpenVinoRuntime.supported_precisions(),
                    reason="CPU without native bf16")
def test_bf16_is_applied(tiny_onnx, tiny_task, tiny_teacher):
    x = tiny_task.val.x
    session = OpenVinoRuntime().compile(tiny_onnx.path, precision="bf16")
    assert session.settings["precision"] == "bf16"
    out, ref = session.run(x), _ref(tiny_teacher, x)
    assert np.abs(out - ref).max() > 1e-3  # bf16 really ran: an 8-bit mantissa shows
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.97


def test_streams_split_a_batch_and_keep_order(tiny_onnx, tiny_task, tiny_teacher):
    session = OpenVinoRuntime().compile(tiny_onnx.path, hint="throughput", streams=2, threads=2)
    x = tiny_task.val.x[:33]  # odd size: uneven chunks
    np.testing.assert_allclose(session.run(x), _ref(tiny_teacher, x), atol=1e-4)


def test_ir_without_bin_is_one_line_compile_error(ir, tmp_path):
    lone = tmp_path / "lone.xml"
    lone.write_bytes(ir.path.read_bytes())
    with pytest.raises(CompileError, match="no weights file lone.bin") as info:
        OpenVinoRuntime().compile(lone)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("settings, words", [
    ({"hint": "fastest"}, "unknown performance hint"),
    ({"precision": "int4"}, "unsupported inference precision"),
])
def test_bad_settings_name_the_choices(tiny_onnx, settings, words):
    with pytest.raises(ConfigError, match=words):
        OpenVinoRuntime().compile(tiny_onnx.path, **settings)


def test_precision_not_native_is_refused(tiny_onnx):
    missing = [p for p in InferencePrecision if p not in OpenVinoRuntime.supported_precisions()]
    if not missing:
        pytest.skip("this CPU runs every precision natively")
    with pytest.raises(ConfigError, match="not native"):
        OpenVinoRuntime().compile(tiny_onnx.path, precision=missing[0])


def test_same_array_mutated_in_place_is_read_again(tiny_onnx, tiny_task, tiny_teacher):
    """The input tensor is bound once per array: an in-place change must still be seen."""
    session = OpenVinoRuntime().compile(tiny_onnx.path)
    x = np.ascontiguousarray(tiny_task.val.x[:1])
    first = session.run(x)
    x[...] = tiny_task.val.x[1:2]
    np.testing.assert_allclose(session.run(x), _ref(tiny_teacher, tiny_task.val.x[1:2]), atol=1e-4)
    assert not np.allclose(first, session.run(x))
