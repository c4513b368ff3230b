"""benchmarks/compare_seeds.py: the beyond-the-seeds check, on a finished tiny run and on records."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from petra.optimizer.genome import CandidateConfig
from petra.optimizer.store import StudyStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import compare_seeds  # noqa: E402


def test_shape_tells_uniform_from_non_uniform_and_removed_blocks():
    assert compare_seeds.shape(CandidateConfig(prune_ratio=0.5)) == "uniform"
    assert compare_seeds.shape(CandidateConfig()) == "uniform"  # PTQ alone prunes nothing anywhere
    same = CandidateConfig(prune_ratio=0.3, prune_stage0=0.3, prune_stage2=0.3).canonical()
    assert compare_seeds.shape(same) == "uniform"
    assert compare_seeds.shape(CandidateConfig(prune_ratio=0.3, prune_stage1=0.6)) == "non-uniform"
    assert compare_seeds.shape(CandidateConfig(prune_ratio=0.5, drop_blocks1=1)) == "removes blocks"


def test_the_record_of_a_finished_run_holds_its_seeds_and_search_time_figures(tiny_run, tiny_task):
    out, _, _ = tiny_run
    rec = compare_seeds.search_record(out, tiny_task.metric.drop)
    entries = {e["trial"]: e for e in map(json.loads, (out / "trials.jsonl").read_text().splitlines())}
    assert rec["seeds_from"] == "stored seeds"
    # the tiny run has more seeds than its population of 4, so its first population is all seeds
    # (the first batch of children is generation 0 as well: the population, not the label, tells)
    store = StudyStore(out / "study.db")
    try:
        first = compare_seeds._first_population(store)
    finally:
        store.close()
    assert first and set(first) <= set(rec["seeds"])
    base = entries[rec["baseline_trial"]]
    assert base["generation"] == -1 and rec["baseline_p50_ms"] == base["latency_ms"]["p50"]
    assert rec["points"] and {p["trial"] for p in rec["points"]} == {
        n for n, e in entries.items() if e["generation"] >= 0 and e["state"] == "COMPLETE"}
    for p in rec["points"]:  # trials.jsonl keeps the search's figure, not the final re-measurement
        assert p["p50_ms"] == entries[p["trial"]]["latency_ms"]["p50"]
        assert p["p50_ratio"] == pytest.approx(p["p50_ms"] / rec["baseline_p50_ms"])
    assert compare_seeds.beyond_seeds(rec, 1.0)["met"] in (True, False)


def test_a_study_older_than_its_stored_seeds_falls_back_to_its_first_population(tiny_run, tiny_task,
                                                                                  tmp_path):
    out, _, _ = tiny_run
    old = tmp_path / "old"
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("trials", "best", "data"))
    store = StudyStore(old / "study.db")
    try:
        first = compare_seeds._first_population(store)
        store.db.execute("DELETE FROM meta WHERE key = 'seeds'")
        store.db.commit()
    finally:
        store.close()
    rec = compare_seeds.search_record(old, tiny_task.metric.drop)
    assert rec["seeds_from"].startswith("first population") and rec["seeds"] == first


def test_a_study_without_a_measured_baseline_gives_an_empty_record(tmp_path):
    StudyStore(tmp_path / "study.db").close()
    (tmp_path / "trials.jsonl").write_text("")
    rec = compare_seeds.search_record(tmp_path, lambda base, value: base - value)
    assert rec["points"] == [] and not compare_seeds.beyond_seeds(rec, 1.0)["met"]


def _record(*points, seeds=("s",)) -> dict:
    keys = ("trial", "seed_key", "shape", "p50_ratio", "drop_test")
    return {"seeds": list(seeds), "points": [dict(zip(keys, p)) for p in points]}


@pytest.mark.parametrize("points, met, why", [
    ([(1, "x", "non-uniform", 0.10, 0.5), (2, "u", "uniform", 0.20, 0.0)], True, "found, 2x"),
    ([(1, "s", "non-uniform", 0.10, 0.5), (2, "u", "uniform", 0.20, 0.0)], False, "a seed"),
    ([(1, "x", "uniform", 0.10, 0.5), (2, "u", "uniform", 0.20, 0.0)], False, "uniform itself"),
    ([(1, "x", "removes blocks", 0.18, 0.5), (2, "u", "uniform", 0.20, 0.0)], False, "1.1x only"),
    ([(1, "x", "removes blocks", 0.05, 2.5), (2, "y", "non-uniform", 0.10, 0.9),
      (3, "u", "uniform", 0.30, 0.0)], True, "past the drop on test: not the best"),
    ([(1, "x", "non-uniform", 0.50, 0.0)], True, "no uniform point: FP32 is the one to beat"),
])
def test_beyond_the_seeds_needs_a_found_shape_clearly_faster_than_uniform(points, met, why):
    out = compare_seeds.beyond_seeds(_record(*points), max_drop=1.0)
    assert out["met"] is met, why
    assert out["best_trial"] == min((p for p in points if p[4] <= 1.0), key=lambda p: p[3])[0]


def test_nothing_within_the_drop_is_not_met():
    out = compare_seeds.beyond_seeds(_record((1, "x", "non-uniform", 0.1, 3.0)), max_drop=1.0)
    assert out == {"value": "no trial within the drop on test", "met": False}
