"""A tiny real search on one task per domain (images, time series, event sequences) and on the
ONNX-only path: tiny models and data slices, real training, export, INT8 and ORT timing."""

import json

import numpy as np
import pytest

from petra.config import load_config
from petra.exporters import Precision
from petra.models.cdnow import cdnow_task
from petra.models.fashion_mnist import fashion_mnist_task
from petra.models.onnx_task import onnx_task
from petra.models.ucr import ucr_task
from petra.optimizer.genome import SearchSpace
from petra.optimizer.study import Study

pytestmark = pytest.mark.slow

SPACE = SearchSpace(prune_ratio=(0.0, 0.5), round_to=(4,), epochs=(0, 1), lr=(3e-3,),
                    precision=(Precision.FP32, Precision.INT8_STATIC, Precision.INT8_DYNAMIC),
                    threads=(1,))


def run(task, tmp_path, space=SPACE, max_drop=100.0):
    task.baseline(log=lambda s: None)  # trained (and cached) outside the search's time budget
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      generations=1, population=4, time_budget=15, output=tmp_path, max_threads=1,
                      max_drop=max_drop)
    study = Study(cfg, task=task, space=space, log=lambda s: None)
    results = study.run()
    assert results["status"] == "complete" and results["best"] is not None
    assert results["trials"] - results["failed"] >= 3, [t.get("reason") for t in results["all_trials"]]
    return study, results


def test_fashion_mnist_tiny_search(tmp_path):
    task = fashion_mnist_task(width=4, train_size=600, val_size=200, test_size=200, max_epochs=6)
    _, results = run(task, tmp_path)
    assert results["baseline"]["metric"]["val"] > 30  # chance is 10: real images, a real CNN
    # search_sessions=1: a search-time figure is one session's (no list of sessions behind it;
    # with the default 2 it lists both), and results.json says so
    assert results["estimator"]["search"]["sessions"] == 1
    searched = [t for t in results["all_trials"] if t.get("latency_ms") and t["rounds"] == 1]
    assert searched and all(len(t["session_p50_ms"]) < 2 for t in searched)


def test_ucr_tiny_search_reports_drop_bounds(tmp_path):
    task = ucr_task("ArrowHead", nf=4, depth=3, max_epochs=4)
    _, results = run(task, tmp_path)
    base_key = results["baseline"]["key"]
    done = [t for t in results["all_trials"] if t["state"] != "FAIL" and t["key"] != base_key]
    assert done and all("drop_val_bounds" in t["metric"] for t in done)
    for t in done:
        lo, hi = t["metric"]["drop_val_bounds"]
        assert lo <= hi


def test_cdnow_tiny_search_prunes_and_unrolls_the_gru(tmp_path):
    task = cdnow_task(hidden=16, layers=1, limit=1500, max_epochs=2)
    space = SearchSpace(prune_ratio=(0.0, 0.5), round_to=(8,), epochs=(0,),
                        precision=(Precision.FP32, Precision.INT8_DYNAMIC), threads=(1,))
    study, results = run(task, tmp_path, space=space)
    assert study.space.unroll_recurrent == (False, True)  # the probe keeps what a GRU can do
    ok = [t for t in study.trials if t.measurement is not None]
    sizes = {(t.config.prune_ratio, t.config.unroll_recurrent, t.config.precision): t.measurement.size_bytes
             for t in ok}
    pruned = [s for (r, _, p), s in sizes.items() if r == 0.5 and p is Precision.FP32]
    base = sizes[(0.0, False, Precision.FP32)]
    if pruned:  # hidden-unit pruning really shrinks the GRU (torch-pruning would not)
        assert min(pruned) < 0.6 * base
    entries = json.loads((tmp_path / "results.json").read_text())["all_trials"]
    assert all(e["config"]["importance"] in ("l1", "l2") for e in entries)


def test_onnx_only_path(tmp_path, tiny_onnx, tiny_task):
    data = tmp_path / "calib.npz"
    np.savez(data, x=tiny_task.val.x[:120])
    task = onnx_task(tiny_onnx.path, data)
    assert task.metric.name == "agreement"
    study, results = run(task, tmp_path / "run", space=SearchSpace(threads=(1,)), max_drop=100.0)
    assert study.space.prune_ratio == (0.0,) and study.space.epochs == (0,)  # torch genes are removed
    assert {r["gene"] for r in results["removed_genes"]} >= {"prune_ratio", "epochs"}
    assert results["baseline"]["metric"]["val"] == 100.0  # FP32 agrees with itself
    assert all(t["config"]["prune_ratio"] == 0.0 for t in results["all_trials"])
