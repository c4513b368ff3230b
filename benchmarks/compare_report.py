"""Rows, markdown table, targets and the SVG plot of ``benchmarks/compare.py``."""

from __future__ import annotations

from compare_seeds import beyond_seeds

from petra.optimizer.hypervolume import normalized_hypervolume
from petra.optimizer.records import Trial, TrialState
from petra.report.svg import Series, scatter

COLORS = {"baseline": "#222222", "ort_ptq": "#1f77b4", "nncf_ptq": "#17becf", "handmade": "#ff7f0e",
          "random": "#7f7f7f", "tpe": "#9467bd", "nsga2": "#d62728"}
MARKERS = {"baseline": "star", "ort_ptq": "square", "nncf_ptq": "square", "handmade": "cross"}


def ratios(t: Trial, base: Trial, drop) -> dict:
    m, b = t.measurement, base.measurement
    return {
        "p50_latency": m.p50_ms / b.p50_ms,
        "p99_latency": m.latency.summary()["p99"] / b.latency.summary()["p99"],
        "throughput": m.throughput_sps / b.throughput_sps,
        "size": m.size_bytes / b.size_bytes,
        "metric_drop_val": drop(base.val, t.val),
        "metric_drop_test": drop(base.test, t.test),
    }


def point(t: Trial, base: Trial, drop) -> dict:
    """One measured candidate, with its figures and its ratios to ``base`` (same runtime)."""
    out = {"trial": t.number, "state": t.state.value, "reason": t.reason,
           "config": t.config.to_json(), "val": t.val, "test": t.test}
    if t.measurement is not None:
        mj = t.measurement.to_json()
        out |= {"p50_ms": mj["latency_ms"]["p50"], "p99_ms": mj["latency_ms"]["p99"],
                "throughput_sps": mj["throughput_sps"], "throughput_batch": mj["throughput_batch"],
                "size_bytes": mj["size_bytes"], "noisy": mj["noisy"], "loaded": mj["loaded"],
                "other_load_cores": mj["other_load_cores"], "load_avg_before": mj["load_avg_before"],
                "load_avg_after": mj["load_avg_after"], "rounds": mj["rounds"],
                "ratios": ratios(t, base, drop)}
    return out


def front_hypervolumes(points: list[dict], max_drop: float) -> dict:
    """Normalised hypervolume of the feasible points, on the test and on the validation drop."""
    ok = [p for p in points if p["state"] == TrialState.COMPLETE.value and "ratios" in p]
    return {
        which: normalized_hypervolume(
            [(p["ratios"][f"metric_drop_{which}"], p["ratios"]["p50_latency"]) for p in ok], max_drop)
        for which in ("test", "val")
    }


def nondominated(points: list[dict], which: str = "test") -> list[dict]:
    """Feasible points not dominated on (drop, p50 ratio), by p50 ratio: the plotted front."""
    ok = [p for p in points if p["state"] == TrialState.COMPLETE.value and "ratios" in p]

    def key(p):
        return max(0.0, p["ratios"][f"metric_drop_{which}"]), p["ratios"]["p50_latency"]

    front = [p for p in ok if not any(
        all(a <= b for a, b in zip(key(o), key(p))) and key(o) != key(p) for o in ok)]
    return sorted(front, key=lambda p: key(p)[1])


#: the mission's bound on the held-out test drop, whatever ``--max-drop`` the search ran at (3
#: on OSULeaf, whose 88 validation series make one error 1.1 points)
TARGET_DROP = 1.0


def best_within(points: list[dict], bound: float = TARGET_DROP) -> dict:
    """The fastest point feasible on validation, faster than FP32 and within ``bound`` on test:
    a row's ``best`` is picked on validation alone, and on OSULeaf it lost 4.49 on test."""
    ok = [p for p in points if p["state"] == TrialState.COMPLETE.value and "ratios" in p
          and p["ratios"]["metric_drop_test"] <= bound and p["ratios"]["p50_latency"] < 1.0]
    return min(ok, key=lambda p: p["ratios"]["p50_latency"], default={})


def targets(rows: dict[str, dict], max_drop: float) -> dict:
    """The issue's targets for petra's NSGA-II, each with its figure and met / not met, on its
    best point within TARGET_DROP on test."""
    best = best_within(rows["nsga2"]["points"])
    r = best.get("ratios") or {}
    drop_ok = "ratios" in best
    hand = rows["handmade"]["best"]
    out = {
        "p50_ratio_le_0.1": {"value": r.get("p50_latency"), "met": drop_ok and r["p50_latency"] <= 0.1},
        "size_ratio_le_0.1": {"value": r.get("size"), "met": drop_ok and r["size"] <= 0.1},
        "throughput_ratio_ge_8": {"value": r.get("throughput"), "met": drop_ok and r["throughput"] >= 8},
        f"test_drop_le_{TARGET_DROP:g}": {"value": r.get("metric_drop_test"), "met": drop_ok},
    }
    # the hand-made point is beaten by a feasible NSGA-II point that weakly dominates it on
    # (test drop, p50 ratio); when the hand-made point itself misses the constraint, any
    # feasible NSGA-II point faster than the baseline is better in the constrained sense
    hand_ok = (hand.get("state") == "COMPLETE" and "ratios" in hand
               and hand["ratios"]["metric_drop_test"] <= max_drop)
    feasible = [p for p in rows["nsga2"]["points"] if p["state"] == "COMPLETE" and "ratios" in p]
    if hand_ok:
        hk = (max(0.0, hand["ratios"]["metric_drop_test"]), hand["ratios"]["p50_latency"])
        beats = any(max(0.0, p["ratios"]["metric_drop_test"]) <= hk[0] and p["ratios"]["p50_latency"] <= hk[1]
                    for p in feasible)
        why = ("a feasible NSGA-II point weakly dominates it on (test drop, p50 ratio)" if beats
               else "no NSGA-II point weakly dominates it on (test drop, p50 ratio)")
    else:
        beats = drop_ok and r.get("p50_latency", 1.0) < 1.0
        why = "the hand-made point misses the drop constraint; " + (
            "NSGA-II has a feasible point faster than FP32" if beats else "so does every NSGA-II point")
    out["best_at_least_handmade"] = {"value": why, "met": beats}
    if "search" in rows["nsga2"]:
        out["beyond_the_seeds"] = beyond_seeds(rows["nsga2"]["search"], TARGET_DROP)
    hv = {k: v["hypervolume"]["test"] for k, v in rows.items()}
    top = max(hv.values())
    out["largest_hypervolume"] = {"value": hv["nsga2"], "met": hv["nsga2"] >= top,
                                  "ranking": sorted(hv, key=hv.get, reverse=True)}
    return out


REFEREE = ("Every figure below comes from the final referee pass: each row's front and the FP32 "
           "baseline (same runtime, tuned threads and graph optimisation) re-measured in one "
           "worker, interleaved; every study's FP32 baseline is re-measured there too, and the "
           "fastest is the one every ratio is to. Rows 2-3 on another runtime "
           "also list their ratio to that runtime's FP32 baseline below the table.")
NO_REFEREE = ("Produced before the referee pass existed: figures are each study's search-time "
              "measurements and ratios are to the FP32 baseline of the row's own study (rows 1-4 "
              "share one), measured minutes apart; `study FP32 p50 ms` shows that reference.")


def _f(v, fmt=".3f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(res: dict) -> str:
    metric = res["metric"]
    lines = [f"# compare: {res['task']} on {res['runtime']}", "",
             f"Budget {res['budget_min']:g} min of wall time per searcher (random, TPE, NSGA-II; "
             f"baseline measurement included), seed {res['seed']}, max drop {res['max_drop']:g} "
             f"{metric} points. " + (REFEREE if res.get("referee") else NO_REFEREE), "",
             f"FP32 baseline: {metric} test {_f(res['baseline_summary'].get('test'), '.4g')} "
             f"(val {_f(res['baseline_summary'].get('val'), '.4g')}), "
             f"{res['baseline_summary'].get('epochs_run')} epochs, early stopping; reference: "
             f"{res['baseline_summary'].get('reference') or '-'}", "",
             f"| # | row | runtime | test {metric} | test drop | p50 ms | p99 ms | thr /s | size kB "
             "| p50 x | size x | thr x | HV test | HV val | trials | wall s | study FP32 p50 ms |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: | ---: | ---: |"]
    for i, row in enumerate(res["rows"].values(), 1):
        b = row["best"]
        r = b.get("ratios", {})
        study_p50 = row.get("study_baseline_search_p50_ms", row["baseline"].get("p50_ms"))
        name = row["name"] + ("" if b.get("state") in (None, "COMPLETE") else f" ({b.get('state')})")
        lines.append(
            f"| {i} | {name} | {row['runtime']} | {_f(b.get('test'), '.4g')} | "
            f"{_f(r.get('metric_drop_test'), '.2f')} | {_f(b.get('p50_ms'), '.4f')} | "
            f"{_f(b.get('p99_ms'), '.4f')} | {_f(b.get('throughput_sps'), ',.0f')} | "
            f"{_f(b['size_bytes'] / 1e3 if 'size_bytes' in b else None, ',.0f')} | "
            f"{_f(r.get('p50_latency'))} | {_f(r.get('size'))} | {_f(r.get('throughput'), '.2f')} | "
            f"{row['hypervolume']['test']:.3f} | {row['hypervolume']['val']:.3f} | {row['trials']} | "
            f"{row['wall_s']:.0f} | {_f(study_p50, '.4f')} |")
    lines += ["", "Row = the searcher's best feasible point (lowest p50, never slower than the "
              "baseline) or the single technique's one candidate. HV = normalised hypervolume of "
              "the feasible points in (metric drop, p50 ratio), both minimised, reference point "
              f"(max_drop={res['max_drop']:g}, 1.0), drops below 0 clipped to 0, divided by the box "
              "area: 0 = nothing better than FP32 within the constraint, 1 = free and instant. "
              "`HV test` uses the held-out test drop (feasibility is decided on validation). "
              "`study FP32 p50 ms`: the FP32 baseline as each study measured it during its search "
              "(rows 1-4 share one study): its spread is the drift of this machine between studies, "
              "which the referee pass removes from the ratios.", ""]
    for row in res["rows"].values():
        extra = row.get("ratios_to_own_runtime_baseline")
        if extra:
            lines.append(f"- {row['name']}: p50 {extra['p50_latency']:.3f}x, size {extra['size']:.3f}x, "
                         f"throughput {extra['throughput']:.2f}x its own ({row['runtime']}) FP32 baseline "
                         f"(p50 {row['own_runtime_baseline_p50_ms']:.4f} ms).")
    lines += ["", "## Fairness", ""] + [f"- {row['name']}: {row['notes']}" for row in res["rows"].values()]
    lines += ["", "## Targets (NSGA-II)", "", "| target | value | met |", "| --- | --- | --- |"]
    for name, t in res["targets"].items():
        v = t["value"]
        lines.append(f"| {name} | {_f(v) if isinstance(v, float) else v} | {'yes' if t['met'] else 'no'} |")
    lines.append(f"\nhypervolume ranking: {', '.join(res['targets']['largest_hypervolume']['ranking'])}")
    m = res["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, {', '.join(m['flags'])}; fingerprint "
              f"{m['id']}; load average at start {res['load_start']}, at end {res['load_end']}; "
              f"total wall {res['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def plot(res: dict) -> str:
    series = []
    for key, row in res["rows"].items():
        pts = nondominated(row["points"]) if key != "baseline" else row["points"]
        xy = [(p["ratios"]["p50_latency"], p["ratios"]["metric_drop_test"]) for p in pts if "ratios" in p]
        series.append(Series(row["name"], xy, COLORS[key], MARKERS.get(key, "circle"),
                             line=key in ("random", "tpe", "nsga2"),
                             labels=[f"{row['name']} trial {p['trial']}" for p in pts if "ratios" in p]))
    svg = scatter(f"{res['task']} on {res['runtime']}: feasible fronts", "p50 latency ratio to FP32 (log)",
                  f"test {res['metric']} drop (points)", series, logx=True)
    return svg.replace('<svg class="chart"', '<svg xmlns="http://www.w3.org/2000/svg" class="chart"', 1)


def summary(results: list[dict]) -> str:
    """The README table: one row per task and runtime, petra's best beside the hand-made one."""
    lines = ["| task / runtime | budget/searcher | FP32 test metric | petra best: drop, p50 x, size x, "
             "thr x | hand-made: drop, p50 x, size x, thr x | HV ranking (test) |",
             "| --- | ---: | ---: | --- | --- | --- |"]

    def cell(b: dict) -> str:
        r = b.get("ratios")
        if not r:
            return "-"
        bad = "" if b.get("state") == "COMPLETE" else f" ({b.get('state', '').lower()})"
        return (f"{r['metric_drop_test']:.2f}, {r['p50_latency']:.3f}x, {r['size']:.3f}x, "
                f"{r['throughput']:.2f}x{bad}")

    for res in results:
        rows, base = res["rows"], res["rows"]["baseline"]["best"]
        ranking = res["targets"]["largest_hypervolume"]["ranking"]
        hv = ", ".join(f"{k} {rows[k]['hypervolume']['test']:.2f}" for k in ranking if k != "baseline")
        nsga = rows["nsga2"]
        best = "baseline (nothing feasible and faster)" if nsga["best_is_baseline"] else cell(nsga["best"])
        within = best_within(nsga["points"])
        if not nsga["best_is_baseline"] and within.get("trial") != nsga["best"].get("trial"):
            best += f" (at <= {TARGET_DROP:g} point: {cell(within) if within else 'none'})"
        lines.append(f"| {res['task']} / {res['runtime']} | {res['budget_min']:g} min | "
                     f"{res['metric']} {base['test']:.2f} | {best} | {cell(rows['handmade']['best'])} "
                     f"| {hv} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python benchmarks/compare_report.py [--summary] RESULT.json...
    import json
    import sys
    from pathlib import Path

    if sys.argv[1:2] == ["--summary"]:
        print(summary([json.loads(Path(a).read_text()) for a in sys.argv[2:]]))
        sys.exit(0)
    for arg in sys.argv[1:]:
        path = Path(arg)
        res = json.loads(path.read_text())
        res["targets"] = targets(res["rows"], res["max_drop"])
        path.write_text(json.dumps(res, indent=2, default=str))
        path.with_suffix(".md").write_text(markdown(res))
        path.with_suffix(".svg").write_text(plot(res))
