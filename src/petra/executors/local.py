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
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from petra.errors import ConfigError
from petra.executors.base import Executor, Job, Outcome, failure_reason

#: a job whose training process died this often is recorded FAIL instead of started again
MAX_RETRIES = 2


class SequentialExecutor(Executor):
    """Build, then measure, one candidate after the other in this process."""

    name = "local"

    def run(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        for job in jobs:
            t0, timings = time.monotonic(), {}
            try:
                art = self.build(job, timings)
            except Exception as exc:  # failure_reason re-raises a user error
                yield self.failed(job, failure_reason(exc), t0)
                continue
            yield self.measure_and_score(job, art, timings, t0)


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


def _build(config, fidelity, index: int, claims: str) -> tuple[Path, dict[str, float]]:
    """One build; first it claims the job (a file named by this pid) so that the driver knows
    which candidate a process is working on when it must stop that process."""
    claim = Path(claims) / str(os.getpid())
    claim.write_text(str(index))
    try:
        timings: dict[str, float] = {}
        art = _BUILDER.build(config, timings, fidelity)
        return art.path, timings
    finally:
        claim.unlink(missing_ok=True)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 when it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def split_cores(cores: list[int], parts: int) -> list[list[int]]:
    """``parts`` disjoint core sets (round-robin); with more parts than cores, they share."""
    if parts <= len(cores):
        return [cores[i::parts] for i in range(parts)]
    return [[cores[i % len(cores)]] for i in range(parts)]


@dataclass
class _Flight:
    """The builds in flight of one ``run``: when each started, its retries, its future."""

    started: dict[int, float] = field(default_factory=dict)
    running_since: dict[int, float] = field(default_factory=dict)
    retries: dict[int, int] = field(default_factory=dict)
    stopped: dict[int, str] = field(default_factory=dict)
    pending: dict[Future, Job] = field(default_factory=dict)


class ParallelExecutor(Executor):
    """``workers`` training processes; measurements one at a time with training paused.

    With ``timeout_s`` or ``memory_mb``, a build that runs longer, or whose process grows
    beyond that resident memory, is stopped (its process killed) and recorded FAIL with the
    reason; the other builds in flight start again on fresh processes.
    """

    name = "local-parallel"

    def __init__(self, workers: int = 1, timeout_s: float | None = None,
                 memory_mb: int | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.workers, self.timeout_s, self.memory_mb = workers, timeout_s, memory_mb
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
        self._claims = tempfile.mkdtemp(prefix="petra-claims-")
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

    def _claimed(self) -> dict[int, int]:
        """pid -> index of the job that process is building now."""
        out = {}
        for f in Path(self._claims).iterdir():
            with contextlib.suppress(ValueError, OSError):
                out[int(f.name)] = int(f.read_text())
        return out

    def _died_running(self) -> set[int]:
        """Jobs that were running in a process that died on its own or was stopped here (when
        one process dies, the pool terminates the others with SIGTERM: those do not count)."""
        claims = self._claimed()
        procs = getattr(self.pool, "_processes", None) or {}
        out = set()
        for pid, proc in list(procs.items()):
            proc.join(1)
            if pid in claims and proc.exitcode not in (None, -signal.SIGTERM):
                out.add(claims[pid])
        return out

    def _over_limit(self, running_since: dict[int, float]) -> dict[int, str]:
        """Jobs to stop now (index -> reason): past the wall-time or the memory limit."""
        over: dict[int, str] = {}
        now = time.monotonic()
        for pid, index in self._claimed().items():
            running_since.setdefault(index, now)
            rss = rss_bytes(pid)
            if self.timeout_s is not None and now - running_since[index] > self.timeout_s:
                over[index] = f"train: exceeded the wall-time limit of {self.timeout_s:g}s; stopped"
            elif self.memory_mb is not None and rss > self.memory_mb * 2**20:
                over[index] = (f"train: resident memory {rss / 2**20:.0f} MB exceeded the limit of "
                               f"{self.memory_mb} MB; stopped")
            if index in over:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return over

    def _submit(self, f: _Flight, job: Job) -> None:
        f.started.setdefault(job.index, time.monotonic())
        f.running_since.pop(job.index, None)
        f.pending[self.pool.submit(_build, job.config, job.fidelity, job.index, self._claims)] = job

    def _gave_up(self, f: _Flight, job: Job, reason: str) -> Outcome:
        return self.failed(job, reason, f.started[job.index], retries=f.retries.get(job.index, 0))

    def run(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        from petra.exporters import Artifact

        f = _Flight()
        limited = self.timeout_s is not None or self.memory_mb is not None
        for job in jobs:
            self._submit(f, job)
        try:
            while f.pending:
                done, _ = wait(list(f.pending), timeout=0.5 if limited else None,
                               return_when=FIRST_COMPLETED)
                if limited:
                    f.stopped |= self._over_limit(f.running_since)
                lost: list[Job] = []
                for fut in done:
                    job = f.pending.pop(fut)
                    try:
                        art_path, timings = fut.result()
                    except BrokenProcessPool:
                        lost.append(job)
                        continue
                    except Exception as exc:
                        yield self._gave_up(f, job, failure_reason(exc))
                        continue
                    yield self.measure_and_score(job, Artifact.of(art_path), timings, f.started[job.index],
                                                 quiet=self.paused, retries=f.retries.get(job.index, 0))
                if lost:
                    yield from self._restart(f, lost)
        finally:
            for fut in f.pending:  # budget spent or Ctrl-C: what has not started never will
                fut.cancel()

    def _restart(self, f: _Flight, lost: list[Job]) -> Iterator[Outcome]:
        """A training process died (stopped here, killed by the OS, a native crash): the pool is
        broken; builds that were running in the dead process count a retry, the others simply
        start again on fresh processes."""
        lost += list(f.pending.values())
        f.pending.clear()
        dead = self._died_running()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for claim in Path(self._claims).iterdir():
            claim.unlink(missing_ok=True)
        self.restarts += 1
        self._new_pool()
        for job in lost:
            if job.index in f.stopped:
                yield self._gave_up(f, job, f.stopped.pop(job.index))
                continue
            if job.index in dead or not dead:
                f.retries[job.index] = f.retries.get(job.index, 0) + 1
            if f.retries.get(job.index, 0) > MAX_RETRIES:
                yield self._gave_up(f, job, f"train: the training process died {f.retries[job.index]} "
                                            "times (out of memory or a native crash?)")
            else:
                self._submit(f, job)
        f.stopped.clear()

    def describe(self) -> dict:
        return {"name": self.name, "workers": self.workers, "cores": getattr(self, "_cores", None),
                "restarts": self.restarts, "timeout_s": self.timeout_s, "memory_mb": self.memory_mb}

    def close(self) -> None:
        """Training still running is abandoned: its result would never be read (the stage
        cache writes atomically, so a killed build leaves no half entry)."""
        if self.pool is not None:
            for pid in self._pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
            shutil.rmtree(self._claims, ignore_errors=True)
