"""The CLI's tables and summary lines, built from a results.json (or a bench report) alone."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table


def front_table(results: dict) -> Table:
    from petra.candidate import describe  # imports torch: only once a front is printed

    base = results["baseline"]
    table = Table(title=f"Pareto front - {results['task']} on {results['runtime']} "
                        f"({results['machine']['cpu']}, {results['machine']['cores']} cores)",
                  pad_edge=False, padding=(0, 1))
    for col in ("trial", "config", "val", "test", "p50 ms", "p99 ms", "thr/s", "kB", "p50 x",
                "size x", "thr x"):
        table.add_column(col, justify="right" if col != "config" else "left")
    best_key = results["best"]["key"] if results.get("best") else None
    rows = [("baseline", base)] + [("", e) for e in results["pareto"] if e["key"] != base["key"]]
    for label, e in rows:
        desc = describe(e["config"])
        mark = " *" if e["key"] == best_key else ""
        lat, b = e["latency_ms"], base
        table.add_row(
            (label or str(e["trial"])) + mark, desc, f"{e['metric']['val']:.2f}",
            f"{e['metric']['test']:.2f}", f"{lat['p50']:.4f}", f"{lat['p99']:.4f}",
            f"{e['throughput_sps']:.0f}", f"{e['size_bytes'] / 1e3:.0f}",
            f"{lat['p50'] / b['latency_ms']['p50']:.3f}", f"{e['size_bytes'] / b['size_bytes']:.3f}",
            f"{e['throughput_sps'] / b['throughput_sps']:.2f}",
        )
    return table


def summary_lines(results: dict) -> list[str]:
    best, r = results["best"], results["best"]["ratios_to_baseline"]
    lines = [f"best: trial {best['trial']} p50 {r['p50_latency']:.3f}x, size {r['size']:.3f}x, "
             f"throughput {r['throughput']:.2f}x, test drop {r['metric_drop_test']:.2f} points; "
             f"{results['trials']} trials ({results['failed']} failed) in {results['elapsed_s']:.0f}s"]
    if len(results.get("baselines", {})) > 1:
        p50 = {r: b["latency_ms"]["p50"] for r, b in results["baselines"].items()}
        lines.append("FP32 baselines: " + ", ".join(f"{r} {v:.4f} ms" for r, v in p50.items())
                     + f"; {results['faster_baseline']} is faster (ratios are to it)")
    return lines


def bench_table(report: dict) -> Table:
    flag = "  [LOADED]" if report["loaded"] else ""
    table = Table(title=f"{Path(report['artifact']).name} on {report['runtime']}, "
                        f"{report['threads']} thread(s){flag}", pad_edge=False, padding=(0, 1))
    for col in ("batch", "p50 ms", "p90 ms", "p99 ms", "CI95 ms", "CI +-%", "runs", "samples/s",
                "interval"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(str(r["batch"]), f"{r['p50']:.4f}", f"{r['p90']:.4f}", f"{r['p99']:.4f}",
                      f"{r['ci95_low']:.4f}-{r['ci95_high']:.4f}", f"{50 * r['rel_ci']:.1f}",
                      str(r["runs"]), f"{r['throughput_sps']:.0f}",
                      "ok" if r["interval_met"] else "NOT MET")
    return table


def models_table(names: list[str], get_task, why) -> Table:
    """One row per task; a task whose data or weights are missing says why (``why(exc)``)."""
    table = Table(title="petra built-in tasks", pad_edge=False, padding=(0, 1))
    for col in ("task", "train", "val", "test", "input", "params", "baseline val", "baseline test",
                "reference / note"):
        table.add_column(col, justify="left" if col in ("task", "input", "reference / note") else "right")
    for name in names:
        try:
            t = get_task(name)
            params = sum(p.numel() for p in t.architecture().parameters())
            s = t.baseline_summary()
        except Exception as exc:  # data or weights not installed: say how to get them, list the rest
            table.add_row(name, "-", "-", "-", "-", "-", "-", "-", f"unavailable: {why(exc)}")
            continue
        base = [f"{s[k]:.2f} {t.metric.name}" if s else "not trained" for k in ("val", "test")]
        table.add_row(name, str(len(t.train)), str(len(t.val)), str(len(t.test)),
                      "x".join(str(d) for d in t.train.x.shape[1:]), f"{params / 1e6:.2f}M",
                      *base, t.reference or t.description)
    return table


def genes_table() -> Table:
    """Every gene, read from the declarations (nothing here lists them)."""
    from petra.candidate import GENES, OWNER
    from petra.genes import Gene

    table = Table(title="petra genes (declared once, beside their pass or backend)", pad_edge=False,
                  padding=(0, 1))
    for col in ("gene", "declared by", "stage", "choices", "default", "what it does"):
        table.add_column(col, justify="left")
    for g in GENES:
        table.add_row(g.name, OWNER[g.name], g.stage.value,
                      ", ".join(str(Gene.dump(c)) for c in g.choices), str(Gene.dump(g.default)), g.help)
    return table
