"""Does the engine make every trained minute count? Cache + multi-fidelity vs neither.

Runs four searches on the same task, machine and wall budget, one after the other:
  A. the engine as shipped: content-addressed stage cache (empty at start) + multi-fidelity
     successive halving inside each generation;
  B. the same search without them: every candidate trains from scratch, full fidelity;
  C. A with two training processes (``--workers 2``; measurements still one at a time, with
     training paused while they run);
  D. the stage cache alone (full fidelity), so that the cache's and the cheap pass's parts are
     told apart: D/B is the cache's, A/D the cheap pass's, C/A the second process's.
Both start from the same cached FP32 baseline (its training is not part of either budget's
comparison: it is loaded from the cache in both). Prints and saves, for each: trials finished
(all states, and full-fidelity ones), trials per hour, and the best feasible p50 ratio found.

Target (issue 6): A (or C) completes >= 2x the trials per hour of B.

    PYTHONPATH=src python benchmarks/search_efficiency.py [--task digits] [--budget 150]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from petra.config import load_config
from petra.models.base import default_cache_dir, get_task
from petra.optimizer.study import Study
from petra.profilers import fingerprint


def run(label: str, task_name: str, budget: float, out: Path, cache: Path, **flags) -> dict:
    os.environ["PETRA_CACHE_DIR"] = str(cache)
    cfg = load_config(task=task_name, time_budget=budget, generations=1000, population=8,
                      output=out, progress="quiet", **flags)
    results = Study(cfg, task=get_task(task_name), log=lambda s: None).run()
    trials = results["all_trials"]
    search = [t for t in trials if t["generation"] >= 0]
    states = {s: sum(t["state"] == s for t in search) for s in ("COMPLETE", "INFEASIBLE", "STOPPED", "FAIL")}
    elapsed = results["elapsed_s"]
    best = results["best"]
    return {
        "label": label,
        "flags": flags,
        "elapsed_s": elapsed,
        "trials": len(search),
        "full_fidelity_trials": len(search) - states["STOPPED"],
        "states": states,
        "trials_per_hour": len(search) / elapsed * 3600,
        "generations": results["generations_completed"],
        "best_p50_ratio": None if results["best_is_baseline"] else best["ratios_to_baseline"]["p50_latency"],
        "best_size_ratio": None if results["best_is_baseline"] else best["ratios_to_baseline"]["size"],
        "best_test_drop": best["ratios_to_baseline"]["metric_drop_test"],
    }


ENGINES = {
    "A": ("cache + multi-fidelity", {"multi_fidelity": True, "stage_cache": True}),
    "B": ("neither", {"multi_fidelity": False, "stage_cache": False}),
    "C": ("cache + multi-fidelity + 2 training processes",
          {"multi_fidelity": True, "stage_cache": True, "workers": 2}),
    "D": ("cache only", {"multi_fidelity": False, "stage_cache": True}),
}
#: what each part of the engine saves, as a ratio of two engines' trials per hour
PARTS = (("stage cache", "D", "B"), ("cheap pass (multi-fidelity)", "A", "D"),
         ("second training process", "C", "A"), ("whole engine", "A", "B"))


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def report(task: str, budget: float, rows: list[dict], out: Path) -> None:
    """Print and save the table, and each part's ratio where both its engines ran."""
    by = {r["engine"]: r for r in rows}
    parts = {name: by[a]["trials_per_hour"] / by[b]["trials_per_hour"]
             for name, a, b in PARTS if a in by and b in by and by[b]["trials_per_hour"] > 0}
    table = ["| engine | trials | full-fidelity | stopped | trials/hour | best p50 x | best size x "
             "| test drop |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        table.append(f"| {r['label']} | {r['trials']} | {r['full_fidelity_trials']} "
                     f"| {r['states']['STOPPED']} | {r['trials_per_hour']:.0f} | {fmt(r['best_p50_ratio'])} "
                     f"| {fmt(r['best_size_ratio'])} | {r['best_test_drop']:.2f} |")
    lines = [f"- {name}: {v:.2f}x trials per hour" for name, v in parts.items()]
    best = max((by[k]["trials_per_hour"] for k in ("A", "C") if k in by), default=0.0)
    target = best / by["B"]["trials_per_hour"] if by["B"]["trials_per_hour"] else 0.0
    verdict = f"best of A, C over B: {target:.2f}x (target >= 2x): {'met' if target >= 2 else 'NOT met'}"
    print("\n".join(table + lines + [verdict]))
    out.mkdir(parents=True, exist_ok=True)
    fp = fingerprint()
    stem = "search_efficiency" if task == "digits" else f"search_efficiency-{task}"
    (out / f"{stem}.json").write_text(json.dumps(
        {"task": task, "budget_s": budget, "rows": rows, "parts": parts, "machine": fp},
        indent=2, default=str))
    (out / f"{stem}.md").write_text(
        f"# search efficiency, {task}, {budget:.0f} s each\n\n" + "\n".join(table)
        + "\n\n" + "\n".join(lines) + f"\n\n{verdict}\n\nmachine: {fp.get('cpu')}, "
        f"{fp.get('cores')} cores, fingerprint {fp.get('id')}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits")
    ap.add_argument("--budget", type=float, default=150.0, help="wall seconds per search")
    ap.add_argument("--engines", default="A,B,C,D", help="which of A (cache + multi-fidelity), B (neither), "
                    "C (A with two training processes), D (cache only) to run; B is the reference")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    wanted = [e.strip().upper() for e in args.engines.split(",")]
    if "B" not in wanted or not set(wanted) <= set(ENGINES):
        ap.error("--engines: a subset of A,B,C,D that includes B")

    home = default_cache_dir()
    get_task(args.task).baseline(log=print)  # trained once, outside every budget
    rows = []
    with tempfile.TemporaryDirectory(prefix="petra-eff-") as tmp:
        for key in wanted:
            label, flags = ENGINES[key]
            cache = Path(tmp) / f"cache-{len(rows)}"
            shutil.copytree(home / "baselines", cache / "baselines")  # same teacher, empty stage cache
            rows.append(run(label, args.task, args.budget, Path(tmp) / f"run-{len(rows)}", cache, **flags))
            rows[-1]["engine"] = key
            print(json.dumps(rows[-1]))
    os.environ["PETRA_CACHE_DIR"] = str(home)
    report(args.task, args.budget, rows, args.out)


if __name__ == "__main__":
    main()
