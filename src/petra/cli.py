"""The ``petra`` command line. User errors end with one line on stderr and exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from petra.errors import ConfigError, PetraError
from petra.optimizer.records import Prefer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Hardware-in-the-loop compression search for PyTorch models.")
console = Console(width=max(Console().width, 110))
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def front_table(results: dict) -> Table:
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
        c = e["config"]
        desc = (f"p{c['prune_ratio']:.1f} e{c['epochs']} {c['regularizer']} "
                f"{c['precision'].replace('int8_', 'i8')} {c['threads']}t")
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


@app.command()
def optimize(
    task: str = typer.Option("digits", help="built-in task name or 'module:function'"),
    runtime: str = typer.Option("onnxruntime", help="target runtime"),
    device: str = typer.Option("cpu", help="target device"),
    generations: int = typer.Option(8, help="NSGA-II generations after the first population"),
    population: int = typer.Option(8, help="candidates per generation"),
    time_budget: float = typer.Option(180.0, help="wall seconds for baseline + search"),
    max_drop: float = typer.Option(1.0, help="max metric drop vs FP32 on validation (points)"),
    prefer: Prefer = typer.Option(Prefer.LATENCY, help="objective that picks the best artifact"),
    batch: int = typer.Option(32, help="batch size of the throughput figure"),
    max_threads: Optional[int] = typer.Option(None, help="cap on intra-op threads"),
    seed: int = typer.Option(0, help="random seed"),
    output: Optional[Path] = typer.Option(None, help="output folder (default runs/<task>-<time>)"),
    onnx: Optional[Path] = typer.Option(None, help="an ONNX model instead of a task: quantization "
                                                   "and runtime genes only (needs --data)"),
    data: Optional[Path] = typer.Option(None, help=".npz with 'x' (inputs) and optional 'y' "
                                                   "(labels) for --onnx"),
) -> None:
    """Evolve compression configs; fitness is measured on the target runtime."""
    from petra.config import load_config
    from petra.optimizer.study import run_study

    try:
        task_object = None
        if onnx is not None or data is not None:
            from petra.models.onnx_task import onnx_task

            if onnx is None or data is None:
                raise ConfigError("--onnx and --data go together: pass both (model.onnx and calib.npz)")
            task_object = onnx_task(onnx, data, seed=seed)
            task = task_object.name
        cfg = load_config(task=task, runtime=runtime, device=device, generations=generations,
                          population=population, time_budget=time_budget, max_drop=max_drop,
                          prefer=prefer, batch=batch, max_threads=max_threads, seed=seed,
                          output=output)
        results = run_study(
            cfg, task=task_object,
            log=lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True))
    except PetraError as exc:
        fail(str(exc))
    console.print(front_table(results))
    best, r = results["best"], results["best"]["ratios_to_baseline"]
    console.print(
        f"best: trial {best['trial']} p50 {r['p50_latency']:.3f}x, size {r['size']:.3f}x, "
        f"throughput {r['throughput']:.2f}x, test drop {r['metric_drop_test']:.2f} points; "
        f"{results['trials']} trials ({results['failed']} failed) in {results['elapsed_s']:.0f}s",
        markup=False, highlight=False)
    out = Path(results["run_config"]["output"] or "") if results["run_config"]["output"] else None
    console.print(f"results: {out or 'see above'}", markup=False, highlight=False)


@app.command()
def bench(
    artifact: Path = typer.Argument(..., help="ONNX model file"),
    runtime: str = typer.Option("onnxruntime"),
    batch: str = typer.Option("1", help="comma-separated batch sizes, e.g. 1,8,32"),
    threads: int = typer.Option(1, help="intra-op threads"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Measure any ONNX file with petra's timing loop."""
    import numpy as np
    import onnx

    from petra.profilers import machine, time_calls
    from petra.runtimes import get_runtime

    try:
        if not artifact.is_file():
            raise ConfigError(f"no such model file {str(artifact)!r}; pass the path of an .onnx file")
        try:
            sizes = [int(b) for b in batch.split(",")]
        except ValueError:
            raise ConfigError(f"--batch takes comma-separated integers like 1,8,32, got {batch!r}") from None
        if any(b <= 0 for b in sizes):
            raise ConfigError(f"batch sizes must be positive, got {batch!r}")
        rt = get_runtime(runtime)
        session = rt.compile(artifact, threads=threads)
        inp = onnx.load(str(artifact), load_external_data=False).graph.input[0]
        dims = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        rows = []
        for b in sizes:
            x = np.random.default_rng(0).standard_normal([b] + dims[1:]).astype(np.float32)
            t = time_calls(lambda x=x: session.run(x))
            rows.append({"batch": b, **t.summary(), "throughput_sps": b / (t.p50 / 1e3)})
    except PetraError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({"artifact": str(artifact), "runtime": runtime, "threads": threads,
                          "size_bytes": artifact.stat().st_size, "machine": machine(),
                          "results": rows}, indent=2))
        return
    table = Table(title=f"{artifact.name} on {runtime}, {threads} thread(s)")
    for col in ("batch", "p50 ms", "p90 ms", "p99 ms", "CI95 ms", "runs", "samples/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["batch"]), f"{r['p50']:.4f}", f"{r['p90']:.4f}", f"{r['p99']:.4f}",
                      f"{r['ci95_low']:.4f}-{r['ci95_high']:.4f}", str(r["runs"]),
                      f"{r['throughput_sps']:.0f}")
    console.print(table)


@app.command()
def tasks() -> None:
    """List the built-in tasks."""
    from petra.models.base import task_names

    for name in task_names():
        console.print(name)


@app.command()
def models(
    names: Optional[list[str]] = typer.Argument(None, help="only these tasks (default: all)"),
) -> None:
    """List the built-in tasks: data sizes, model size, cached FP32 baseline metric."""
    from petra.models.base import get_task, task_names

    try:
        wanted = names or task_names()
        unknown = [n for n in wanted if n not in task_names()]
        if unknown:
            raise ConfigError(f"unknown task {unknown[0]!r}; choose from {', '.join(task_names())}")
    except PetraError as exc:
        fail(str(exc))
    table = Table(title="petra built-in tasks", pad_edge=False, padding=(0, 1))
    for col in ("task", "train", "val", "test", "input", "params", "baseline val", "baseline test",
                "reference / note"):
        table.add_column(col, justify="left" if col in ("task", "input", "reference / note") else "right")
    for name in wanted:
        try:
            t = get_task(name)
        except PetraError as exc:  # data not installed: say how to get it, list the rest
            table.add_row(name, "-", "-", "-", "-", "-", "-", "-", f"unavailable: {exc}")
            continue
        params = sum(p.numel() for p in t.build_model().parameters())
        s = t.baseline_summary()
        base = [f"{s[k]:.2f} {t.metric.name}" if s else "not trained" for k in ("val", "test")]
        table.add_row(name, str(len(t.train)), str(len(t.val)), str(len(t.test)),
                      "x".join(str(d) for d in t.train.x.shape[1:]), f"{params / 1e6:.2f}M",
                      *base, t.reference or t.description)
    console.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
