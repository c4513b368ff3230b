"""A tiny real search on models the zoo does not contain (issue 17's acceptance): the genes
that cannot apply are listed with reasons before any training, and no trial FAILs for them."""

from __future__ import annotations

import pytest

from petra.config import load_config
from petra.optimizer.genome import SearchSpace
from petra.optimizer.study import Study
from tests import user_models

pytestmark = pytest.mark.slow


def _search(task, tmp_path, budget: float):
    task.baseline(log=lambda s: None)  # trained (and cached) outside the search's budget
    cfg = load_config(final_sessions=1, final_max_sessions=1, search_sessions=1, generations=1, population=4,
                      time_budget=budget, output=tmp_path, max_threads=1, max_drop=100.0)
    logs: list[str] = []
    study = Study(cfg, task=task, space=SearchSpace(threads=(1,), epochs=(0, 1)), log=logs.append)
    return study.run(), logs


def _removed(results) -> dict[str, str]:
    return {r["gene"]: r["reason"] for r in results["removed_genes"]}


def test_two_layer_lstm_search_has_no_trial_failing_on_a_gene_that_cannot_apply(tmp_path):
    results, logs = _search(user_models.lstm_task(), tmp_path, 45)
    removed = _removed(results)
    assert {"qat", "unroll_recurrent"} <= set(removed) and "prune_ratio" not in removed  # units pruned
    assert all(reason for reason in removed.values())
    assert any("genes removed" in line and "unroll_recurrent" in line for line in logs)
    failed = [t for t in results["all_trials"] if t["state"] == "FAIL"]
    assert failed == [], [t.get("reason") for t in failed]
    assert results["trials"] >= 3


def test_transformer_that_torchscript_cannot_export_is_searched_through_dynamo(tmp_path):
    results, _ = _search(user_models.transformer_task(), tmp_path, 25)
    failed = [t for t in results["all_trials"] if t["state"] == "FAIL"]
    assert failed == [], [t.get("reason") for t in failed]
    assert results["trials"] >= 2 and results["baseline"]["metric"]["val"] > 50


def test_depthwise_cnn_search_prunes_with_groups_consistent(tmp_path):
    results, _ = _search(user_models.depthwise_task(), tmp_path, 35)
    failed = [t for t in results["all_trials"] if t["state"] == "FAIL"]
    assert failed == [], [t.get("reason") for t in failed]
    assert "prune_ratio" not in _removed(results)  # depthwise layers shrink with their inputs
