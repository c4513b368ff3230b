"""``petra report``: one self-contained HTML file per run (inline CSS and SVG, no URLs)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from petra.candidate import describe
from petra.report.svg import Series, scatter

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:12px}
.COMPLETE{color:#176317}.INFEASIBLE{color:#a35b00}.FAIL{color:#b00020}
.best{background:#e8f6e8}.kpi{display:inline-block;margin:4px 18px 4px 0;font-size:15px}
.kpi b{font-size:20px}pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}
"""


def _cfg(c: dict[str, Any]) -> str:
    return describe(c)


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    return "" if v is None else fmt.format(v)


def _row(cells: list[str], cls: str = "") -> str:
    tds = "".join(f'<td class="l">{c[2:]}</td>' if c.startswith("L:") else f"<td>{c}</td>"
                  for c in cells)
    return f'<tr class="{cls}">{tds}</tr>'


def _table(head: list[str], rows: list[str]) -> str:
    ths = "".join(f'<th class="l">{h[2:]}</th>' if h.startswith("L:") else f"<th>{h}</th>" for h in head)
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def plots(results: dict[str, Any]) -> list[str]:
    trials = results.get("all_trials") or []
    base, best = results.get("baseline"), results.get("best")
    metric = (base or {}).get("metric", {}).get("name", "metric")
    front_keys = {e["key"] for e in results.get("pareto") or []}

    def pts(entries, x):
        return [(x(e), e["metric"]["val"]) for e in entries if e.get("latency_ms")]

    def lab(entries):
        return [f"#{e['trial']} {_cfg(e['config'])}" for e in entries if e.get("latency_ms")]

    groups = {
        "other feasible": [e for e in trials if e["state"] == "COMPLETE" and e["key"] not in front_keys],
        "infeasible": [e for e in trials if e["state"] == "INFEASIBLE"],
        "Pareto front": results.get("pareto") or [],
    }
    style = {"other feasible": ("#8aa", "circle"), "infeasible": ("#e08a00", "cross"),
             "Pareto front": ("#1f5fbf", "square")}
    charts = []
    for title, xl, x, logx in (
        (f"{metric} vs p50 latency", "p50 latency (ms, log)", lambda e: e["latency_ms"]["p50"], True),
        (f"{metric} vs size", "size (kB, log)", lambda e: e["size_bytes"] / 1e3, True),
    ):
        series = [Series(n, pts(g, x), style[n][0], style[n][1], labels=lab(g)) for n, g in groups.items()]
        if base:
            series.append(Series("FP32 baseline", pts([base], x), "#d62728", "star", labels=["baseline"]))
        if best and best.get("key") != (base or {}).get("key"):
            series.append(Series("best", pts([best], x), "#2ca02c", "star", labels=["best"]))
        charts.append(scatter(title, xl, f"{metric} (validation)", series, logx=logx))
    gens = results.get("generations") or []
    if gens:
        ratio = [(g["generation"], g["best"]["p50_ratio"]) for g in gens if g.get("best")]
        size = [(g["generation"], g["front_size"] / max(1, max(x["front_size"] for x in gens)))
                for g in gens]
        charts.append(scatter("progress per generation", "generation", "ratio",
                              [Series("best feasible p50 / baseline", ratio, "#1f5fbf", "circle", True),
                               Series("front size / max", size, "#8a2be2", "square", True)]))
    return charts


FRONT_HEAD = ["trial", "L:config", "val", "test", "p50 ms", "p99 ms", "CI95 ms", "thr/s", "kB",
              "p50 x", "size x", "thr x"]


def _front_rows(results: dict[str, Any]) -> list[str]:
    base, best = results.get("baseline") or {}, results.get("best") or {}
    front_rows = []
    for e in [base] + [e for e in results.get("pareto") or [] if e.get("key") != base.get("key")]:
        lat, rr = e["latency_ms"], e.get("ratios_to_baseline") or {}
        label = "baseline" if e is base else str(e["trial"])
        front_rows.append(_row([
            label + (" (best)" if e.get("key") == best.get("key") else ""), "L:" + escape(_cfg(e["config"])),
            _num(e["metric"]["val"], "{:.2f}"), _num(e["metric"]["test"], "{:.2f}"),
            _num(lat["p50"]), _num(lat["p99"]),
            f"{_num(lat.get('ci95_low'))}-{_num(lat.get('ci95_high'))}",
            _num(e["throughput_sps"], "{:.0f}"), _num(e["size_bytes"] / 1e3, "{:.0f}"),
            _num(rr.get("p50_latency", 1.0), "{:.3f}"), _num(rr.get("size", 1.0), "{:.3f}"),
            _num(rr.get("throughput", 1.0), "{:.2f}"),
        ], "best" if e.get("key") == best.get("key") else ""))
    return front_rows


def _trial_rows(results: dict[str, Any]) -> list[str]:
    trial_rows = []
    for e in results.get("all_trials") or []:
        lat = e.get("latency_ms") or {}
        trial_rows.append(_row([
            str(e["trial"]), str(e["generation"]), f'<span class="{e["state"]}">{e["state"]}</span>',
            "L:" + escape(_cfg(e["config"])), _num((e.get("metric") or {}).get("val"), "{:.2f}"),
            _num((e.get("metric") or {}).get("test"), "{:.2f}"), _num(lat.get("p50")),
            _num(e.get("size_bytes") and e["size_bytes"] / 1e3, "{:.0f}"),
            _num(e.get("elapsed_s"), "{:.1f}"), "L:" + escape(e.get("reason") or ""),
        ]))
    return trial_rows


def render(results: dict[str, Any]) -> str:
    base, best = results.get("baseline") or {}, results.get("best") or {}
    m = results.get("machine") or {}
    metric = base.get("metric", {}).get("name", "metric")
    r = best.get("ratios_to_baseline") or {}
    kpis = "".join(f'<span class="kpi">{k} <b>{v}</b></span>' for k, v in [
        ("p50 latency", f"{r.get('p50_latency', float('nan')):.3f}x"),
        ("size", f"{r.get('size', float('nan')):.3f}x"),
        ("throughput", f"{r.get('throughput', float('nan')):.2f}x"),
        (f"test {metric} drop", f"{r.get('metric_drop_test', float('nan')):.2f}"),
        ("trials", f"{results.get('trials')} ({results.get('failed')} failed)"),
        ("wall time", f"{results.get('elapsed_s', 0):.0f} s"),
    ])
    front_rows, trial_rows = _front_rows(results), _trial_rows(results)
    gen_rows = [_row([str(g["generation"]), str(g["trials"]), str(g["front_size"]),
                      _num((g.get("best") or {}).get("p50_ratio"), "{:.3f}"),
                      _num((g.get("best") or {}).get("size_ratio"), "{:.3f}"),
                      _num(g["elapsed_s"], "{:.0f}")]) for g in results.get("generations") or []]
    removed_rows = [_row([f"L:{escape(r['gene'])}", f"L:{escape(r['reason'])}"])
                    for r in results.get("removed_genes") or []]
    fingerprint = {"machine": m, "versions": results.get("versions"),
                   "run_config": results.get("run_config")}
    title = f"petra report: {results.get('task')} on {results.get('runtime')}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{escape(title)}</h1>
<p>Status <b>{escape(str(results.get('status')))}</b>, petra {escape(str(results.get('petra_version')))},
{escape(str(m.get('cpu')))} ({m.get('cores')} cores), device {escape(str(results.get('device')))}.
Best of the feasible candidates (validation {metric} drop &le;
{(results.get('run_config') or {}).get('max_drop')} points) against the FP32 baseline measured in
the same run:</p>
<div>{kpis}</div>
<h2>Pareto plots</h2><div class="charts">{''.join(plots(results))}</div>
<h2>Pareto front (re-measured, ratios to the baseline)</h2>{_table(FRONT_HEAD, front_rows)}
<h2>Chosen artifact: trial {best.get('trial')}</h2>
<pre>{escape(json.dumps(best.get('config'), indent=2))}</pre>
<p>Artifact <code>{escape(str(best.get('artifact')))}</code>; see USAGE.md beside it.</p>
<h2>Genes removed from this run's search space</h2>
<p>Each technique was probed on a copy of the model before training; what cannot apply left the
search with its reason.</p>
{_table(["L:gene", "L:reason"], removed_rows) if removed_rows else "<p>none</p>"}
<h2>Progress per generation</h2>
{_table(["generation", "trials", "front size", "best p50 x", "best size x", "elapsed s"], gen_rows)}
<h2>All trials</h2>
{_table(["trial", "gen", "state", "L:config", "val", "test", "p50 ms", "kB", "build s", "L:reason"],
        trial_rows)}
<h2>Machine and libraries</h2><pre>{escape(json.dumps(fingerprint, indent=2, default=str))}</pre>
</body></html>
"""


def write_report(run_dir: Path, results: dict[str, Any], out: Path | None = None) -> Path:
    path = Path(out) if out else Path(run_dir) / "report.html"
    path.write_text(render(results), encoding="utf-8")
    return path
