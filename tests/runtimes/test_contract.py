"""One contract every runtime backend passes (a parametrized fixture over ``RUNTIMES``)."""

import numpy as np
import pytest
import torch

from petra.errors import CompileError, ConfigError
from petra.runtimes import RUNTIMES, get_runtime
from petra.runtimes.base import Session


@pytest.fixture(params=sorted(RUNTIMES))
def runtime(request):
    ok, why = RUNTIMES[request.param].available()
    if not ok:
        pytest.skip(why)
    return get_runtime(request.param)


def test_compile_and_run_matches_torch(runtime, tiny_task, tiny_teacher, tiny_onnx):
    session = runtime.compile(tiny_onnx.path)
    assert isinstance(session, Session) and session.compile_s >= 0
    x = tiny_task.val.x[:16]
    with torch.no_grad():
        ref = tiny_teacher(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(x), ref, atol=1e-4)
    np.testing.assert_allclose(session.run_batched(tiny_task.val.x, batch=50)[:16], ref, atol=1e-4)


def test_settings_are_applied_and_reported(runtime, tiny_onnx):
    session = runtime.compile(tiny_onnx.path, threads=2)
    assert session.settings["threads"] == 2


def test_bad_model_raises_typed_error(runtime, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(CompileError):
        runtime.compile(bad)


def test_bad_settings_raise_config_error(runtime, tiny_onnx):
    with pytest.raises(ConfigError):
        runtime.compile(tiny_onnx.path, threads=0)


def test_unknown_runtime():
    with pytest.raises(ConfigError, match="unknown runtime"):
        get_runtime("tensorflow-lite")
