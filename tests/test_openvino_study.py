"""OpenVINO end to end: a tiny search on OpenVINO alone, one with the runtime as a gene, the CLI."""

import json

import numpy as np
import pytest

from petra.config import load_config
from petra.exporters import Precision, to_ir
from petra.optimizer.genome import OPENVINO, ORT, SearchSpace
from petra.optimizer.study import Study
from petra.runtimes import InferencePrecision, OpenVinoRuntime
from tests.test_cli import _one_line_error, petra

pytestmark = pytest.mark.skipif(not OpenVinoRuntime.available()[0], reason="openvino not installed")

TINY_OV_SPACE = SearchSpace(
    prune_ratio=(0.0, 0.5), round_to=(4,), epochs=(0, 1), lr=(3e-3,),
    precision=(Precision.FP32, Precision.INT8_STATIC), threads=(1,),
    ov_precision=(InferencePrecision.F32,), ov_streams=(1,), nncf_subset=(64,),
)


def _run(tiny_task, out, runtime):
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      runtime=runtime, generations=1, population=4, time_budget=60, output=out,
                      max_threads=1)
    return Study(cfg, task=tiny_task, space=TINY_OV_SPACE, log=lambda s: None).run()


@pytest.fixture(scope="module")
def ov_run(tiny_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov-run")
    return out, _run(tiny_task, out, OPENVINO)


@pytest.fixture(scope="module")
def auto_run(tiny_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto-run")
    return out, _run(tiny_task, out, "auto")


def test_openvino_baseline_is_forced_f32(ov_run):
    _, results = ov_run
    base = results["baseline"]
    assert base["config"]["runtime"] == OPENVINO and base["runtime_settings"]["precision"] == "f32"
    assert results["runtime"] == OPENVINO and "openvino" in results["versions"]


def test_every_openvino_trial_is_an_ir(ov_run):
    out, results = ov_run
    built = [t for t in results["all_trials"] if t.get("artifact")]
    assert built and all(t["config"]["runtime"] == OPENVINO for t in results["all_trials"])
    for t in built:
        xml = out / t["artifact"]
        assert xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
        assert t["size_bytes"] == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def test_best_ir_loads_in_plain_openvino_and_reproduces_accuracy(ov_run, tiny_task):
    import openvino as ov

    out, results = ov_run
    best = results["best"]
    assert best["artifact"] == "best/model.xml" and (out / "best" / "model.bin").is_file()
    manifest = json.loads((out / "best" / "manifest.json").read_text())
    assert manifest["runtime"] == OPENVINO and manifest["config"] == best["config"]
    precision = manifest["runtime_settings"]["precision"]
    compiled = ov.Core().compile_model(str(out / "best" / "model.xml"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": precision})
    logits = compiled(tiny_task.test.x)[compiled.output(0)]
    acc = float((np.asarray(logits).argmax(1) == tiny_task.test.y).mean() * 100)
    assert acc == pytest.approx(best["metric"]["test"])
    assert best["latency_ms"]["p50"] <= results["baseline"]["latency_ms"]["p50"]


def test_auto_measures_both_baselines_and_searches_both_runtimes(auto_run):
    _, results = auto_run
    assert results["runtimes"] == [ORT, OPENVINO]
    bases = results["baselines"]
    assert set(bases) == {ORT, OPENVINO}
    assert bases[OPENVINO]["runtime_settings"]["precision"] == "f32"
    fastest = min(bases, key=lambda r: bases[r]["latency_ms"]["p50"])
    assert results["faster_baseline"] == fastest == results["baseline"]["config"]["runtime"]
    searched = {t["config"]["runtime"] for t in results["all_trials"] if t["generation"] >= 0}
    assert searched == {ORT, OPENVINO}
    for entry in results["pareto"]:
        r = entry["ratios_to_baseline"]
        own = bases[entry["config"]["runtime"]]["latency_ms"]["p50"]
        assert r["p50_latency_vs_own_runtime_baseline"] == pytest.approx(entry["latency_ms"]["p50"] / own)
    keys = [t["key"] for t in results["all_trials"]]
    assert len(keys) == len(set(keys))


def test_bench_runs_an_ir_and_refuses_one_without_weights(tiny_onnx, tmp_path):
    ir = to_ir(tiny_onnx, tmp_path / "m.xml")
    proc = petra("bench", str(ir.path), "--runtime", "openvino", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["runtime"] == "openvino" and data["results"][0]["p50"] > 0
    ir.path.with_suffix(".bin").unlink()
    _one_line_error(petra("bench", str(ir.path), "--runtime", "openvino"), "no weights file m.bin")


def test_optimize_names_auto_among_the_runtimes(tmp_path):
    _one_line_error(petra("optimize", "--runtime", "tflite", "--output", str(tmp_path / "o")),
                    "unknown runtime", "openvino", "auto")
