"""Executors on this machine: sequential, and parallel training with serialized measurement.

The parallel one trains several candidates at once in spawned processes (the cores are split
between them, so two fine-tunes do not fight over the same core), but measures in the study's
one isolated measurement worker, one candidate at a time. While a measurement runs, every
training process is paused (SIGSTOP, then SIGCONT): a latency taken beside a busy fine-tune
on the same cores is the fine-tune's figure, not the candidate's.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from petra.errors import ConfigError
from petra.executors.base import Executor, Job, Outcome, evaluate_here, failure_reason

#: a job whose training process died this often is recorded FAIL instead of started again
MAX_RETRIES = 2


class SequentialExecutor(Executor):
    """Build, then measure, one candidate after the other in this process."""

    name = "local"

    def run(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        for job in jobs:
            yield evaluate_here(self.builder, job)


# -- the training worker process ------------------------------------------------------------
_BUILDER = None


def _init_worker(recipe: bytes, core_sets: list[list[int]], counter) -> None:
    """Runs once in each training process: its share of the cores, and its own builder."""
    global _BUILDER
    import cloudpickle

    from petra.pipeline import CandidateBuilder

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the study's to handle
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, core_sets[slot % len(core_sets)])
    _BUILDER = CandidateBuilder.from_recipe(cloudpickle.loads(recipe))


def _build(config, fidelity) -> tuple[Path, dict[str, float]]:
    timings: dict[str, float] = {}
    art = _BUILDER.build(config, timings, fidelity)
    return art.path, timings


def split_cores(cores: list[int], parts: int) -> list[list[int]]:
    """``parts`` disjoint core sets (round-robin); with more parts than cores, they share."""
    if parts <= len(cores):
        return [cores[i::parts] for i in range(parts)]
    return [[cores[i % len(cores)]] for i in range(parts)]


class ParallelExecutor(Executor):
    """``workers`` training processes; measurements one at a time with training paused."""

    name = "local-parallel"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        #: training processes started again after one of them died
        self.restarts = 0

    def start(self, builder) -> None:
        super().start(builder)
        try:
            import cloudpickle
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ConfigError("the parallel executor needs cloudpickle: pip install cloudpickle") from exc
        # user tasks are often closures or lambdas that the standard pickle cannot carry
        self._recipe = cloudpickle.dumps(builder.recipe())
        self._cores = split_cores(sorted(os.sched_getaffinity(0)), self.workers)
        self._new_pool()

    def _new_pool(self) -> None:
        ctx = mp.get_context("spawn")  # fork after torch's thread pools started can hang
        self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(self._recipe, self._cores, ctx.Value("i", 0)))

    def _pids(self) -> list[int]:
        procs = getattr(self.pool, "_processes", None) or {}
        return [p.pid for p in list(procs.values()) if p.pid is not None and p.is_alive()]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Every training process stopped while the block runs (a measurement)."""
        stopped = []
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        try:
            yield
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def _measure(self, job: Job, art_path: Path, timings: dict[str, float], t0: float,
                 retries: int) -> Outcome:
        from petra.exporters import Artifact

        builder = self.builder
        try:
            art = Artifact.of(art_path)
            t1 = time.perf_counter()
            builder.on_stage("measure")
            with self.paused():
                m = builder.measure(job.config, art, job.fidelity.timing if job.fidelity else None,
                                    builder.eval_files())
            timings["measure_s"] = time.perf_counter() - t1
            built = builder.scored(job.config, art, m, timings)
        except Exception as exc:
            return Outcome(job, reason=failure_reason(exc), elapsed_s=time.monotonic() - t0,
                           retries=retries)
        return Outcome(job, built=built, elapsed_s=time.monotonic() - t0, retries=retries)

    def run(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        started: dict[int, float] = {}
        retries: dict[int, int] = {}
        pending: dict[Future, Job] = {}

        def submit(job: Job) -> None:
            started.setdefault(job.index, time.monotonic())
            pending[self.pool.submit(_build, job.config, job.fidelity)] = job

        for job in jobs:
            submit(job)
        try:
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                lost: list[Job] = []
                for fut in done:
                    job = pending.pop(fut)
                    t0, n = started[job.index], retries.get(job.index, 0)
                    try:
                        art_path, timings = fut.result()
                    except BrokenProcessPool:
                        lost.append(job)
                        continue
                    except Exception as exc:
                        yield Outcome(job, reason=failure_reason(exc), elapsed_s=time.monotonic() - t0,
                                      retries=n)
                        continue
                    yield self._measure(job, art_path, timings, t0, n)
                if lost:  # a training process died (killed, out of memory, a native crash)
                    lost += list(pending.values())
                    pending.clear()
                    self.pool.shutdown(wait=False, cancel_futures=True)
                    self.restarts += 1
                    self._new_pool()
                    for job in lost:
                        n = retries[job.index] = retries.get(job.index, 0) + 1
                        if n > MAX_RETRIES:
                            yield Outcome(job, reason=f"train: the training process died {n} times "
                                          "(out of memory or a native crash?)",
                                          elapsed_s=time.monotonic() - started[job.index], retries=n)
                        else:
                            submit(job)
        finally:
            for fut in pending:  # budget spent or Ctrl-C: what has not started never will
                fut.cancel()

    def describe(self) -> dict:
        return {"name": self.name, "workers": self.workers, "cores": self._cores if self.pool else None,
                "restarts": self.restarts}

    def close(self) -> None:
        """Training still running is abandoned: its result would never be read (the stage
        cache writes atomically, so a killed build leaves no half entry)."""
        if self.pool is not None:
            for pid in self._pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
