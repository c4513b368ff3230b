"""THE contract every runtime backend passes: one suite, a parametrized fixture over ``RUNTIMES``.

A new backend registers in ``RUNTIMES`` and adds one row to ``CONTRACT`` (settings that differ
from its defaults, and settings it must refuse); ``test_every_runtime_has_a_contract_row``
fails until it does, so no backend can skip the suite.
"""

import numpy as np
import pytest
import torch

from petra.errors import CandidateError, CompileError, ConfigError
from petra.runtimes import RUNTIMES, get_runtime
from petra.runtimes.base import Session

#: runtime -> (non-default settings and what the session must report for them, refused settings,
#: settings its screen must never hold for a quantized (QDQ) file: they cannot win there)
CONTRACT = {
    "onnxruntime": (
        {"graph_opt": "basic", "threads": 2},
        [{"threads": 0}, {"graph_opt": "turbo"}],
        {"graph_opt": "basic"},  # BASIC never fuses QDQ pairs: 4-7x slower than ALL
    ),
    "openvino": (
        {"hint": "throughput", "streams": 2, "threads": 2, "precision": "f32"},
        [{"threads": 0}, {"hint": "fastest"}, {"precision": "int4"}, {"streams": -1}],
        {},
    ),
}


@pytest.fixture(params=sorted(RUNTIMES))
def runtime(request):
    ok, why = RUNTIMES[request.param].available()
    if not ok:
        pytest.skip(why)
    return get_runtime(request.param)


def _torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_every_runtime_has_a_contract_row():
    assert set(CONTRACT) == set(RUNTIMES)


def test_compile_and_run_matches_torch(runtime, tiny_task, tiny_teacher, tiny_onnx):
    session = runtime.compile(tiny_onnx.path)
    assert isinstance(session, Session) and session.compile_s >= 0
    x = tiny_task.val.x[:16]
    ref = _torch(tiny_teacher, x)
    np.testing.assert_allclose(session.run(x), ref, atol=1e-4)
    np.testing.assert_allclose(session.run(x[:1]), ref[:1], atol=1e-4)  # batch 1: the latency call
    np.testing.assert_allclose(session.run_batched(tiny_task.val.x, batch=50)[:16], ref, atol=1e-4)


def test_outputs_are_not_overwritten_by_the_next_call(runtime, tiny_task, tiny_onnx):
    """A session reusing its output buffer must hand out copies, or a metric mixes batches."""
    session = runtime.compile(tiny_onnx.path)
    a = session.run(tiny_task.val.x[:4])
    a_copy = a.copy()
    session.run(tiny_task.val.x[4:8])
    np.testing.assert_array_equal(a, a_copy)


def test_settings_are_applied_and_reported(runtime, tiny_task, tiny_teacher, tiny_onnx):
    settings = CONTRACT[runtime.name][0]
    session = runtime.compile(tiny_onnx.path, **settings)
    for k, v in settings.items():
        assert session.settings[k] == v, k
    # non-default settings still compute the same function (f32 everywhere in the row)
    x = tiny_task.val.x[:40]
    np.testing.assert_allclose(session.run(x), _torch(tiny_teacher, x), atol=1e-4)


def test_default_settings_are_reported(runtime, tiny_onnx):
    session = runtime.compile(tiny_onnx.path)
    assert session.settings["threads"] == 1
    assert set(CONTRACT[runtime.name][0]) <= set(session.settings)


def test_bad_model_raises_typed_error(runtime, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(CompileError) as info:
        runtime.compile(bad)
    assert "\n" not in str(info.value)  # recorded as the trial's one-line reason


def test_missing_model_raises_typed_error(runtime, tmp_path):
    with pytest.raises(CompileError):
        runtime.compile(tmp_path / "absent.onnx")


def test_bad_settings_raise_config_error(runtime, tiny_onnx):
    for bad in CONTRACT[runtime.name][1]:
        with pytest.raises(ConfigError) as info:
            runtime.compile(tiny_onnx.path, **bad)
        assert "\n" not in str(info.value), bad


def test_wrong_input_shape_is_a_candidate_error(runtime, tiny_onnx):
    session = runtime.compile(tiny_onnx.path)
    with pytest.raises(CandidateError):
        session.run(np.zeros((1, 3, 5, 5), dtype=np.float32))


def test_timed_call_runs_and_fails_before_the_loop(runtime, tiny_task, tiny_teacher, tiny_onnx):
    """``call`` is what the timing loop repeats: it must run at the latency and throughput
    batch under every setting row, leave ``run`` correct, and reject a bad input up front."""
    for settings in ({}, CONTRACT[runtime.name][0]):
        session = runtime.compile(tiny_onnx.path, **settings)
        for batch in (1, 40):
            x = np.ascontiguousarray(tiny_task.val.x[:batch])
            once = session.call(x)
            once(), once()
            np.testing.assert_allclose(session.run(x), _torch(tiny_teacher, x), atol=1e-4)
        with pytest.raises(CandidateError):
            session.call(np.zeros((1, 3, 5, 5), dtype=np.float32))


def test_versions_name_the_library(runtime):
    v = runtime.versions()
    assert v and all(isinstance(x, str) and x[0].isdigit() for x in v.values())


def test_unknown_runtime():
    with pytest.raises(ConfigError, match="unknown runtime"):
        get_runtime("tensorflow-lite")


def test_backend_declares_its_genes_and_settings(runtime):
    """Its own genes matter only on it; ``settings`` of a config is what ``compile`` accepts."""
    from petra.candidate import BY_NAME, CandidateConfig
    from petra.runtimes.base import RUNTIME, THREADS

    cls = type(runtime)
    assert cls.quantizer and "fp32" in cls.precisions
    others = [n for n in RUNTIMES if n != cls.name]
    for gene in cls.genes:
        assert BY_NAME[gene.name] is gene  # declared once, here
        if others:
            elsewhere = CandidateConfig(runtime=others[0], **{gene.name: gene.choices[-1]}).canonical()
            assert getattr(elsewhere, gene.name) == gene.default  # reset on another runtime
    assert RUNTIME.name in BY_NAME and THREADS.name in BY_NAME
    config = CandidateConfig(runtime=cls.name, threads=1).canonical()
    settings = cls.settings(config)
    assert settings["threads"] == 1
    assert set(cls.machine_choices()) <= {g.name for g in cls.genes}


def test_handoff_snippet_loads_and_runs_the_model(runtime, tiny_onnx, tmp_path):
    """The USAGE.md code is run, not read: it loads the file with the settings and runs once."""
    import contextlib
    import io
    import re
    import shutil

    from petra.candidate import CandidateConfig
    from petra.runtimes import model_input

    model = tmp_path / "model.onnx"
    shutil.copyfile(tiny_onnx.path, model)
    settings = type(runtime).settings(CandidateConfig(runtime=type(runtime).name).canonical())
    snippet = type(runtime).usage(str(model), {k: getattr(v, "value", v) for k, v in settings.items()},
                                  model_input(model))
    code = re.search(r"```python\n(.*?)```", snippet, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "USAGE.md", "exec"), {})
    assert out.getvalue().strip().startswith("(1, 10)")


def _plain(settings: dict) -> dict:
    return {k: getattr(v, "value", v) for k, v in settings.items()}


def test_screen_declares_settings_that_compile_and_map_back_to_genes(runtime, tiny_onnx):
    """The screen of a file: non-empty, small, threads within the cores, each a ``settings``
    dict that compiles as asked and that a config records exactly (``with_settings``), the
    config asked for being that one with its settings at their defaults."""
    from petra.candidate import CandidateConfig

    cls = type(runtime)
    config = CandidateConfig(runtime=cls.name).canonical()
    for cores in (1, 2):
        options = cls.screen(config, tiny_onnx.path, cores)
        distinct = {tuple(sorted(_plain(s).items())) for s in options}
        assert 1 <= len(options) <= 8 and len(distinct) == len(options)
        assert {s["threads"] for s in options} == set(range(1, cores + 1))
        for s in options:
            assert set(s) == set(cls.settings(config))
            back = config.with_settings(s)
            assert _plain(back.runtime_settings()) == _plain(s) and back.without_settings() == config
    exact = cls.screen(config, tiny_onnx.path, 2, exact=True)
    assert exact and all(s in options for s in exact)  # exact only drops settings
    for s in options:
        session = runtime.compile(tiny_onnx.path, **s)
        assert session.settings["threads"] == s["threads"]


def test_screen_leaves_out_what_cannot_win_on_a_quantized_file(runtime, tiny_task, tiny_onnx, tmp_path):
    from petra.candidate import CandidateConfig
    from petra.exporters import Precision
    from petra.exporters.quantize import quantize

    cls = type(runtime)
    config = CandidateConfig(runtime=cls.name).canonical()
    qdq = quantize(tiny_onnx, tmp_path / "q.onnx", precision=Precision.INT8_STATIC,
                   calibration_data=tiny_task.train.x[:64])
    options, fp32 = cls.screen(config, qdq.path, 2), cls.screen(config, tiny_onnx.path, 2)
    assert options and all(s in fp32 for s in options)
    for key, never in CONTRACT[cls.name][2].items():
        assert all(_plain(s)[key] != never for s in options), (key, never)
    assert {s["threads"] for s in options} == {1, 2}
