"""The ``petra`` command line. Whatever the input, an error ends with one line on stderr naming
the fix and exit code 2, never a traceback: the traceback of an error raised by the user's code,
data or environment goes to the run's log file (``petra.log`` in the output folder), and the
line says where."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from petra import cli_errors
from petra.cli_errors import describe, fail, one_line, report_error
from petra.errors import ConfigError, PetraError
from petra.optimizer.prefer import Prefer
from petra.tables import bench_table, front_table, genes_table, models_table, summary_lines

#: what ``show``, ``report`` and ``export`` read in every results.json
RESULT_KEYS = ("petra_version", "task", "runtime", "status", "machine", "baseline")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hardware-in-the-loop compression search for PyTorch models.")


def _stdout_console() -> Console:
    """At least 110 columns on a terminal; piped, tables keep every cell whole (rich would cut
    ``mobilenetv2-fashion`` to ``mobilenetv2-f…`` at 80 columns and a grep would miss it)."""
    probe = Console()
    return Console(width=max(probe.width, 110)) if probe.is_terminal else Console(width=10_000)


console = _stdout_console()
def make_progress(mode: str, run_dir: Path | None = None):
    """The sink ``mode`` names; with ``run_dir``, every line of the run also goes to its
    ``petra.log`` (where the traceback of an unexpected error is appended)."""
    from petra.progress import Fanout, JsonProgress, PlainProgress, QuietProgress, RichProgress

    if mode == "json":
        sink = JsonProgress()
    elif mode == "quiet":
        sink = QuietProgress()
    elif console.is_terminal:
        sink = RichProgress(console)
    else:
        sink = PlainProgress(lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True))
    if run_dir is None:
        return sink
    cli_errors.run_log_dir = Path(run_dir)
    return Fanout(sink, PlainProgress(cli_errors.run_log_line))


def print_summary(results: dict) -> None:
    console.print(front_table(results))
    for line in summary_lines(results):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def load_run(run_dir: Path) -> dict:
    """The results of a finished (or interrupted) run; a ``results.json`` that is not petra's is
    a one-line error, not a KeyError later. The run's ``petra.log`` gets any traceback."""
    from petra.handoff import load_results

    cli_errors.run_log_dir = Path(run_dir) if Path(run_dir).is_dir() else None
    results = load_results(run_dir)
    missing = [k for k in RESULT_KEYS if not isinstance(results, dict) or k not in results]
    if missing:
        raise ConfigError(f"{str(Path(run_dir) / 'results.json')!r} is not a petra results file (no "
                          f"{missing[0]!r}); pass the folder a `petra optimize` run wrote")
    return results


TRAIN_PRECISION_OPTION = typer.Option(
    None, help="auto | fp32 | bf16: fine-tuning arithmetic; auto is bf16 on AMX CPUs and bf16 GPUs [auto]")
SCREEN_OPTION = typer.Option(None, "--screen/--no-screen", help=(
    "screen each artifact at the runtime settings that can matter and measure it at the fastest; "
    "--no-screen: threads, graph level and OpenVINO settings are genes [screen]"))


@app.command()
def optimize(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file; flags override it"),
    task: Optional[str] = typer.Option(None, help="built-in task name or 'module:function' [digits]"),
    runtime: Optional[str] = typer.Option(
        None, help="onnxruntime | openvino | auto (the runtime becomes a gene) [onnxruntime]"),
    device: Optional[str] = typer.Option(None, help="target device [cpu]"),
    generations: Optional[int] = typer.Option(
        None, help="cap on NSGA-II generations [none: the budget decides]"),
    stagnation: Optional[int] = typer.Option(
        None, help="stop after this many generations without a better front [4]"),
    population: Optional[int] = typer.Option(None, help="candidates per generation [8]"),
    time_budget: Optional[float] = typer.Option(
        None, help="seconds for the search + final re-measurement (baseline training apart) [180]"),
    max_drop: Optional[float] = typer.Option(None, help="max validation metric drop, points [1.0]"),
    prefer: Optional[Prefer] = typer.Option(None, help="objective that picks the best artifact [latency]"),
    batch: Optional[int] = typer.Option(None, help="batch size of the throughput figure [32]"),
    max_threads: Optional[int] = typer.Option(None, help="cap on intra-op threads [all cores]"),
    screen: Optional[bool] = SCREEN_OPTION,
    seed: Optional[int] = typer.Option(None, help="random seed [0]"),
    output: Optional[Path] = typer.Option(None, help="output folder [runs/<task>-<time>]"),
    progress: Optional[str] = typer.Option(None, help="rich | quiet | json [rich]"),
    mlflow_uri: Optional[str] = typer.Option(None, help="log to MLflow, e.g. file:./mlruns"),
    onnx: Optional[Path] = typer.Option(None, help="an ONNX model instead of a task: quantization "
                                                   "and runtime genes only (needs --data)"),
    data: Optional[Path] = typer.Option(None, help=".npz with 'x' (inputs) and optional 'y' "
                                                   "(labels) for --onnx"),
    executor: Optional[str] = typer.Option(None, help="local | ray: where candidates train and are "
                                                      "measured [local]"),
    workers: Optional[int] = typer.Option(None, help="local training processes; measurements stay "
                                                     "one at a time [1]"),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (auto, HOST:6379) "
                                                         "[a local one]"),
    ray_target: Optional[str] = typer.Option(None, help="measure only on Ray nodes with resource "
                                                        "petra-target:NAME [default]"),
    train_device: Optional[str] = typer.Option(None, help="cpu | cuda: where fine-tuning runs [cpu]"),
    train_precision: Optional[str] = TRAIN_PRECISION_OPTION,
) -> None:
    """Evolve compression configs; fitness is measured on the target runtime."""
    from petra.config import load_config

    task_object = None
    if onnx is not None or data is not None:
        from petra.models.onnx_task import onnx_task

        if onnx is None or data is None:
            raise ConfigError("--onnx and --data go together: pass both (model.onnx and calib.npz)")
        task_object = onnx_task(onnx, data, seed=seed or 0)
        task = task_object.name
    cfg = load_config(config, task=task, runtime=runtime, device=device, generations=generations,
                      stagnation=stagnation, population=population, time_budget=time_budget,
                      max_drop=max_drop, prefer=prefer, batch=batch, max_threads=max_threads, seed=seed,
                      screen_settings=screen, output=output, progress=progress, mlflow_uri=mlflow_uri,
                      executor=executor, workers=workers, ray_address=ray_address,
                      ray_target=ray_target, train_device=train_device, train_precision=train_precision)
    cfg = cfg.model_copy(update={"output": cfg.output_dir()})  # one folder, named once
    from petra.optimizer.study import run_study  # after the flags are checked: ~4 s of imports
    from petra.tracking import with_mlflow

    results = run_study(cfg, task=task_object,
                        progress=with_mlflow(make_progress(cfg.progress, cfg.output), cfg.mlflow_uri))
    if cfg.progress == "json":
        return
    print_summary(results)
    console.print(f"results: {results['output']}  (petra report {results['output']})",
                  markup=False, highlight=False, soft_wrap=True)


def _stored_mlflow_uri(run_dir: Path) -> str | None:
    """The MLflow URI the interrupted run logged to (None where the folder holds no study:
    resuming it then says so in one line)."""
    from petra.optimizer.store import open_existing

    try:
        store = open_existing(run_dir)
    except PetraError:
        return None
    try:
        return (store.run_config() or {}).get("mlflow_uri")
    finally:
        store.close()


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="the folder of an interrupted `petra optimize` run"),
    time_budget: Optional[float] = typer.Option(None, help="new total budget in seconds (spent time counts)"),
    generations: Optional[int] = typer.Option(None, help="new total number of generations"),
    progress: Optional[str] = typer.Option(None, help="rich | quiet | json"),
) -> None:
    """Continue an interrupted run (Ctrl-C, kill -9) from its study store."""
    from petra.optimizer.study import resume_study
    from petra.tracking import with_mlflow

    sink = with_mlflow(make_progress(progress or "rich", run_dir), _stored_mlflow_uri(run_dir))
    results = resume_study(run_dir, time_budget=time_budget, generations=generations, progress=sink)
    if progress != "json":
        print_summary(results)


@app.command()
def init(
    path: Path = typer.Argument(Path("petra.yaml"), help="where to write the starter config"),
    force: bool = typer.Option(False, help="overwrite an existing file"),
) -> None:
    """Write a commented starter config for `petra optimize --config`."""
    from petra.config import STARTER_CONFIG

    if path.exists() and not force:
        fail(f"{str(path)!r} exists; pass --force to overwrite or give another path")
    try:
        path.write_text(STARTER_CONFIG)
    except OSError as exc:
        fail(f"cannot write {str(path)!r} ({exc.strerror}); choose a writable path")
    console.print(f"wrote {path}; run: petra optimize --config {path}", markup=False, highlight=False)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a folder written by `petra optimize`"),
    out: Optional[Path] = typer.Option(None, help="HTML file to write [RUN_DIR/report.html]"),
) -> None:
    """Write one self-contained HTML report (Pareto plots, front, every trial, fingerprint)."""
    from petra.report import write_report

    results = load_run(run_dir)
    try:
        path = write_report(run_dir, results, out)
    except OSError as exc:
        fail(f"cannot write the report ({exc.strerror}); pass --out with a writable path")
    console.print(f"wrote {path}", markup=False, highlight=False)


@app.command()
def show(run_dir: Path = typer.Argument(..., help="a folder written by `petra optimize`")) -> None:
    """Print a run's essentials: front, best, progress, failures, machine."""
    results = load_run(run_dir)
    m = results["machine"]
    console.print(f"{results['task']} on {results['runtime']} ({m['cpu']}, {m['cores']} cores), "
                  f"status {results['status']}, petra {results['petra_version']}",
                  markup=False, highlight=False, soft_wrap=True)
    if results.get("best"):
        print_summary(results)
    for g in results.get("generations") or []:
        b = g.get("best")
        console.print(f"  generation {g['generation']}: {g['trials']} trials, front {g['front_size']}"
                      + (f", best p50 {b['p50_ratio']:.3f}x size {b['size_ratio']:.3f}x" if b else ""),
                      markup=False, highlight=False)
    for e in results.get("all_trials") or []:
        if e["state"] == "FAIL":
            console.print(f"  FAIL trial {e['trial']}: {e.get('reason')}", markup=False, highlight=False)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a folder written by `petra optimize`"),
    trial: int = typer.Option(..., help="trial number on the Pareto front (or the baseline's)"),
    output: Optional[Path] = typer.Option(None, help="folder to write [RUN_DIR/export/trial-N]"),
) -> None:
    """Hand off any trial of the front: model + manifest.json + USAGE.md."""
    from petra.handoff import find_trial, write_handoff

    results = load_run(run_dir)
    try:
        dst = write_handoff(output or run_dir / "export" / f"trial-{trial}", run_dir,
                            find_trial(results, trial), results)
    except OSError as exc:
        fail(f"cannot write the export ({exc.strerror}); pass --output with a writable folder")
    console.print(f"wrote {dst} (model, manifest.json, USAGE.md)", markup=False, highlight=False)
    console.print((dst / "USAGE.md").read_text(), markup=False, highlight=False)


@app.command()
def bench(
    artifact: Path = typer.Argument(..., help="ONNX model file, or OpenVINO IR .xml"),
    runtime: str = typer.Option("onnxruntime", help="onnxruntime | openvino (f32 inference precision)"),
    batch: str = typer.Option("1", help="comma-separated batch sizes, e.g. 1,8,32"),
    threads: int = typer.Option(1, help="intra-op threads (pinned in the measurement worker)"),
    spinning: Optional[bool] = typer.Option(
        None, "--spinning/--no-spinning", help="ORT pool threads spin while idle (runtime default: off)"),
    rel_ci: float = typer.Option(0.02, help="target width of the median's 95% interval (0.02 = 2%)"),
    max_time: float = typer.Option(2.0, help="time cap in seconds per batch size"),
    sessions: int = typer.Option(5, help="independent sessions; the figure is the fastest one's"),
    max_sessions: int = typer.Option(
        12, help="more sessions, up to this many, until a second one reproduces the fastest within 2%"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Measure any model file with petra's timing loop, in an isolated worker process."""
    from petra.profilers.bench import run_bench, verdict

    report = run_bench(artifact, runtime=runtime, batch=batch, threads=threads, spinning=spinning,
                       rel_ci=rel_ci, max_time=max_time, sessions=sessions, max_sessions=max_sessions)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    console.print(bench_table(report))
    console.print(verdict(report), markup=False, highlight=False, soft_wrap=True)


@app.command()
def genes() -> None:
    """List every gene from its declaration: pass or backend, choices, default, what it does."""
    console.print(genes_table())


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

    wanted = names or task_names()
    unknown = [n for n in wanted if n not in task_names()]
    if unknown:
        raise ConfigError(f"unknown task {unknown[0]!r}; choose from {', '.join(task_names())}")
    table = models_table(wanted, get_task, lambda exc: one_line(describe(exc)))
    console.print(table)


def main() -> None:
    import signal

    from petra.errors import request_stop

    def _stop(signum, frame):  # `kill` stops as cleanly as Ctrl-C: what finished is written
        request_stop()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        code = app(standalone_mode=False)  # errors come here: one line each, never a traceback
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    except typer.exceptions.TyperException as exc:  # a flag's value or name: one line, no box
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `petra`: typer printed the help
            sys.exit(exc.exit_code)
        where = f"; see `{exc.ctx.command_path} --help`" if getattr(exc, "ctx", None) else ""
        code = report_error(ConfigError(exc.format_message() + where))
    except typer.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        code = 1
    except BrokenPipeError:  # `petra models | head -1`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except Exception as exc:
        code = report_error(exc)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
