"""Where candidates are built and measured: the contract between the study and an engine.

The study only says *what* to evaluate (a batch of jobs: a config and its fidelity) and reads
back *outcomes* as they finish, in any order. An executor decides *where*: in this process,
in parallel training processes on this machine, or on a Ray cluster whose measurement nodes
are the target hardware. Whatever the engine, two rules hold:

- measurements run one at a time on the machine that is measured (nothing else trains or
  measures on its cores meanwhile), because a figure taken beside other work is not a figure;
- a candidate's failure is an outcome with a reason (the search goes on); only a user error
  (``ConfigError``) or Ctrl-C leaves ``run``.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from petra.errors import CandidateError, ConfigError

if TYPE_CHECKING:
    from petra.exporters import Artifact
    from petra.fidelity import Fidelity
    from petra.optimizer.genome import CandidateConfig
    from petra.pipeline import Built, CandidateBuilder
    from petra.profilers import Measurement, MeasureRequest, TimingPolicy


@dataclass(frozen=True)
class Job:
    """One candidate to evaluate; ``index`` is the caller's handle to match the outcome."""

    index: int
    config: CandidateConfig
    fidelity: Fidelity | None = None


@dataclass
class Outcome:
    job: Job
    built: Built | None = None
    #: why the candidate failed, as "stage: message" (None when ``built`` is set)
    reason: str | None = None
    elapsed_s: float = 0.0
    #: how often the job was started again after its worker or node was lost
    retries: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.built is not None


def failure_reason(exc: BaseException) -> str:
    """The one-line reason recorded with a FAIL trial; user errors and Ctrl-C are re-raised."""
    if isinstance(exc, ConfigError | KeyboardInterrupt | SystemExit):
        raise exc
    if isinstance(exc, CandidateError):
        return f"{exc.stage}: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" @ {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"unexpected {type(exc).__name__}: {exc}{where}"


class Executor(ABC):
    """An engine that evaluates jobs with one ``CandidateBuilder``'s recipe."""

    #: a short name for logs and results.json
    name = "executor"
    #: where an executor reports events of its own (lost nodes); the study sets its log
    log = staticmethod(print)

    def start(self, builder: CandidateBuilder) -> None:
        """Called once before the first job, with the builder of the study."""
        self.builder = builder

    @abstractmethod
    def run(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        """Evaluate ``jobs``; yield each outcome as soon as it is known (any order).

        Closing the generator early (budget spent) abandons the jobs not finished yet.
        """

    def measure(self, config: CandidateConfig, artifact: Artifact, policy: TimingPolicy) -> Measurement:
        """Re-measure a finished artifact on the target (the final interleaved rounds)."""
        return self.builder.measurer.measure(self.builder.request(config, artifact, policy))

    # -- build -> measure -> score, put together once for every engine ----------------------
    def build(self, job: Job, timings: dict[str, float]) -> Artifact:
        """Train, export and quantize in this process (a training worker's ``_BUILDER`` too)."""
        return self.builder.build(job.config, timings, job.fidelity)

    def request(self, job: Job, artifact: Artifact, eval_inputs: tuple[Path, ...] = ()) -> MeasureRequest:
        """What the target measures for a job: at its fidelity's timing policy (the search's
        when none), with the metric's inputs, screened at the runtime settings when the study
        screens (``measure``, the final re-measurement, keeps the settings a trial recorded)."""
        policy = job.fidelity.timing if job.fidelity else None
        return self.builder.request(job.config, artifact, policy, eval_inputs, screen=True)

    def measure_here(self, job: Job, artifact: Artifact, timings: dict[str, float],
                     quiet=contextlib.nullcontext) -> Measurement:
        """In the study's isolated worker: compile, metric outputs and timing all happen there,
        so a runtime that crashes on this artifact takes the worker down, never the search.
        ``quiet()`` wraps it (the parallel executor pauses its training processes there)."""
        self.builder.on_stage("measure")
        t0 = time.perf_counter()
        with quiet():
            m = self.builder.measurer.measure(self.request(job, artifact, self.builder.eval_files()))
        timings["measure_s"] = time.perf_counter() - t0
        return m

    def score(self, job: Job, artifact: Artifact, m: Measurement, timings: dict[str, float],
              started: float, **extra) -> Outcome:
        """The outcome of a measured artifact: the task metric on the outputs the runtime gave."""
        try:
            built = self.builder.scored(job.config, artifact, m, timings)
        except Exception as exc:  # failure_reason re-raises a user error
            return self.failed(job, failure_reason(exc), started, **extra)
        return Outcome(job, built=built, elapsed_s=time.monotonic() - started, **extra)

    def measure_and_score(self, job: Job, artifact: Artifact, timings: dict[str, float], started: float,
                          quiet=contextlib.nullcontext, **extra) -> Outcome:
        try:
            m = self.measure_here(job, artifact, timings, quiet)
        except Exception as exc:
            return self.failed(job, failure_reason(exc), started, **extra)
        return self.score(job, artifact, m, timings, started, **extra)

    @staticmethod
    def failed(job: Job, reason: str, started: float, **extra) -> Outcome:
        return Outcome(job, reason=reason, elapsed_s=time.monotonic() - started, **extra)

    def describe(self) -> dict:
        return {"name": self.name}

    def close(self) -> None:
        """Release workers; the builder's measurement worker is the study's to close."""
        return None
