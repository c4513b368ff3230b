"""Did the search find its best point, or was it handed to it? The "beyond the seeds" check of
``benchmarks/compare.py``: the NSGA-II run's best point within the drop is a config no seed
holds, of a shape a person would not try first (non-uniform stage ratios or removed blocks),
and it is at least ``SPEEDUP``x faster than the run's best uniform-ratio point.

Both points come from the run's own trials.jsonl, at search-time figures: the final
re-measurement replaced the front's figures in the study but not the others', and a ratio of
two figures from one measurement policy is the fair one. A uniform point off the front was
never re-measured."""

from __future__ import annotations

import json
from pathlib import Path

from petra.compression.pruning import stage_ratios
from petra.optimizer.genome import CandidateConfig
from petra.optimizer.sensitivity import removes_blocks
from petra.optimizer.store import StudyStore

#: how much faster than the best uniform-ratio point the search's own best must be
SPEEDUP = 1.3


def shape(config: CandidateConfig) -> str:
    """What a person would try first is one ratio for the whole model, every block kept."""
    if removes_blocks(config):
        return "removes blocks"
    return "uniform" if len(set(stage_ratios(config))) <= 1 else "non-uniform"


def search_record(out: Path, drop) -> dict:
    """The seeds and every measured trial of the study in ``out``, at search-time figures.
    ``drop(base, value)`` is the task's metric drop."""
    entries = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    store = StudyStore(out / "study.db")
    try:
        seeds, base_no = store.get_meta("seeds"), store.get_meta("baseline")
        seeds_from = "stored seeds"
        if seeds is None:
            seeds, seeds_from = _first_population(store), "first population (study older than its seeds)"
    finally:
        store.close()
    base = next((e for e in entries if e["trial"] == base_no and "latency_ms" in e), None)
    if base is None:  # a study that never measured its baseline: nothing to check, nothing lost
        return {"seeds": seeds, "seeds_from": seeds_from, "baseline_trial": None, "points": []}
    b50, bval, btest = base["latency_ms"]["p50"], base["metric"]["val"], base["metric"]["test"]
    points = []
    for e in entries:
        if e["generation"] < 0 or e["state"] != "COMPLETE" or "latency_ms" not in e:
            continue
        config = CandidateConfig.from_json(e["config"])
        points.append({"trial": e["trial"], "generation": e["generation"],
                       "seed_key": config.without_settings().key, "shape": shape(config),
                       "p50_ms": e["latency_ms"]["p50"], "p50_ratio": e["latency_ms"]["p50"] / b50,
                       "drop_val": drop(bval, e["metric"]["val"]),
                       "drop_test": drop(btest, e["metric"]["test"])})
    return {"seeds": seeds, "seeds_from": seeds_from, "baseline_trial": base_no,
            "baseline_p50_ms": b50, "points": points}


def _first_population(store: StudyStore) -> list[str]:
    """The keys of the trials built from the first population's genomes: its seeds, and any
    random genome that filled it (stricter, never kinder). A seed probed before the search (PTQ
    alone) was recorded without its genome and is not found; it prunes nothing, so it is
    uniform and could not pass the check anyway."""
    row = store.db.execute("SELECT genomes FROM populations WHERE generation = 0").fetchone()
    first = {json.dumps(g) for g in json.loads(row[0])} if row else set()
    return sorted({CandidateConfig.from_json(json.loads(config)).without_settings().key
                   for genome, config in store.db.execute("SELECT genome, config FROM trials")
                   if genome in first})


def beyond_seeds(record: dict, max_drop: float) -> dict:
    """The check on a ``search_record``, as a target: its sentence and met / not met. Within the
    drop means on the held-out test split; validation already decided COMPLETE. Where no
    uniform point is within the drop, the FP32 baseline (ratio 1) is the one to beat."""
    ok = [p for p in record["points"] if p["drop_test"] <= max_drop]
    if not ok:
        return {"value": "no trial within the drop on test", "met": False}
    best = min(ok, key=lambda p: p["p50_ratio"])
    uniform = min((p for p in ok if p["shape"] == "uniform"), key=lambda p: p["p50_ratio"], default=None)
    ref = uniform["p50_ratio"] if uniform else 1.0
    speedup = ref / best["p50_ratio"]
    seed = best["seed_key"] in record["seeds"]
    met = not seed and best["shape"] != "uniform" and speedup >= SPEEDUP
    against = (f"trial {uniform['trial']} ({uniform['p50_ratio']:.3f}x)" if uniform
               else "FP32 (no uniform trial within the drop)")
    value = (f"trial {best['trial']} ({best['shape']}, {'a seed' if seed else 'no seed'}): "
             f"{best['p50_ratio']:.3f}x at test drop {best['drop_test']:.2f}, {speedup:.2f}x faster "
             f"than the best uniform point, {against}; search-time figures")
    return {"value": value, "met": met, "best_trial": best["trial"], "speedup": speedup,
            "uniform_trial": uniform["trial"] if uniform else None, "best_is_seed": seed,
            "best_shape": best["shape"]}
