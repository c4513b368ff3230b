"""The baseline phase: first the run's search space, probed on the model before any training;
then FP32 at every thread count (or its screened best setting) on every runtime of the search,
the fastest of each runtime its baseline and the fastest of all the reference of every drop,
ratio and of the best pick."""

from __future__ import annotations

from dataclasses import replace

from petra.errors import ConfigError
from petra.models.base import Task
from petra.optimizer.genome import CandidateConfig, SearchSpace
from petra.optimizer.records import Trial
from petra.optimizer.space import Removed, assemble
from petra.optimizer.trials import TrialBook


def probe_space(task: Task, runtimes: tuple[str, ...], n_threads: int,
                space: SearchSpace | None = None) -> tuple[SearchSpace, list[Removed]]:
    """The run's space (``space`` or the default one) less the genes that cannot apply to the
    task's model, each with its reason. An untrained copy of the architecture is probed (an
    ONNX-only task has none), so a model that cannot be exported stops in seconds."""
    model = None if getattr(task, "onnx_model", None) is not None else task.architecture()
    return assemble(task, model, runtimes, n_threads, space)


def measure_baselines(book: TrialBook, space: SearchSpace) -> Trial:
    """FP32 at each thread count of ``space`` on each runtime: ORT_ENABLE_ALL; OpenVINO with
    f32 forced, latency hint, one stream. In a screened search the space holds one of each and
    the measurement screens the settings instead (OpenVINO still f32 alone, see
    ``CandidateBuilder.request``), so the baseline is at its best setting as candidates are.
    Each variant is recorded, then re-scored against the chosen baseline (its drop was its own
    until then)."""
    candidates = [book.run_trial(CandidateConfig(threads=t, runtime=r), -1)
                  for r in space.runtime for t in space.threads]
    ok = [t for t in candidates if t.measurement is not None]
    if not ok:
        raise ConfigError(
            f"the FP32 baseline of task {book.task.name!r} could not be built: "
            f"{candidates[0].reason}; check that the model exports to ONNX"
        )
    ref = min(ok, key=lambda t: t.measurement.p50_ms).val
    ok = [book.update(replace(t, drop=book.task.metric.drop(ref, t.val))) for t in ok]
    best = min(ok, key=lambda t: t.measurement.p50_ms)
    baselines = {}
    for t in sorted(ok, key=lambda t: t.measurement.p50_ms, reverse=True):
        baselines[t.config.runtime] = t
    book.set_baselines(baselines, best)
    if len(baselines) > 1:
        book.events.message("baselines: " + ", ".join(
            f"{r} p50 {b.measurement.p50_ms:.4f}ms" for r, b in baselines.items())
            + f"; {best.config.runtime} is faster")
    return best
