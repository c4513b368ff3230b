"""A study: baseline, evolutionary search, re-measurement of the front, the best artifact.

The parts, one job each: ``trials`` (the book of finished trials), ``baseline`` (the FP32
phase), ``search`` (the generation loop and the budget), ``halving`` (successive halving),
``remeasure`` (the final figures), ``results`` (results.json and the hand-off). Everything a
finished trial produced is appended to ``trials.jsonl`` the moment it ends and
``results.json`` is rewritten after every generation, so an interrupted run loses nothing that
finished.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from petra import __version__
from petra.config import RunConfig, ensure_writable
from petra.errors import ConfigError
from petra.executors import Executor, make_executor
from petra.models.base import Task, get_task
from petra.optimizer.baseline import measure_baselines, probe_space
from petra.optimizer.estimators import FINAL_POLICY, SEARCH_POLICY
from petra.optimizer.events import Events, LogEvents
from petra.optimizer.genome import CandidateConfig, SearchSpace
from petra.optimizer.records import Trial, pick_best
from petra.optimizer.remeasure import refer_to_faster_baseline, remeasure
from petra.optimizer.results import ResultsWriter
from petra.optimizer.search import Budget, GenerationLoop
from petra.optimizer.store import StudyStore
from petra.optimizer.trials import REMEASURE_SLOWER, TrialBook
from petra.pipeline import CandidateBuilder
from petra.profilers import machine
from petra.runtimes import get_runtimes

__all__ = ["FINAL_POLICY", "SEARCH_POLICY", "Study", "resume_study", "run_study"]


def _sink(progress: Events | None, log: Callable[[str], None] | None) -> Events:
    """``progress``, or lines through ``log`` (the ``petra`` logger when neither is given)."""
    return progress or LogEvents(log)


class Study:
    def __init__(
        self,
        cfg: RunConfig,
        *,
        task: Task | None = None,
        space: SearchSpace | None = None,
        log: Callable[[str], None] | None = None,
        progress: Events | None = None,
        resume: bool = False,
        executor: Executor | None = None,
    ) -> None:
        self.cfg, self.resume = cfg, resume
        #: where candidates are built and measured (from ``cfg.executor`` unless given)
        self.executor = executor
        self.events = _sink(progress, log)
        self.log = self.events.message
        self.out = ensure_writable(cfg.output_dir())
        #: every runtime of the search (several with --runtime auto); the first names the run
        self.runtimes = get_runtimes(cfg.runtime)
        self.runtime = next(iter(self.runtimes.values()))
        self.task = task or get_task(cfg.task)
        cores = len(os.sched_getaffinity(0))
        self.threads = min(cores, cfg.max_threads or cores)
        #: genes that cannot apply to the model leave the space (``--runtime`` decides the
        #: runtime gene); removed_genes says which and why: (gene, reason)
        self.space, self.removed_genes = probe_space(self.task, tuple(self.runtimes), self.threads, space)
        if cfg.screen_settings:  # each artifact is screened at the settings instead
            self.space = self.space.without_settings()
        self.status = "running"
        self.store = StudyStore(self.out / "study.db")
        self.book = TrialBook(self.task, cfg.max_drop, self.out, self.store, self.events,
                              clock=lambda: self.budget.elapsed(), screened=cfg.screen_settings)
        # see Budget.final_reserve: a final round is one session, a search figure search_sessions
        rounds = (cfg.final_sessions + cfg.final_max_sessions) / 2 / cfg.search_sessions
        self.budget = Budget(cfg.time_budget, rounds, self.book.to_remeasure)
        self.resumed = self._load_store()
        self.writer = ResultsWriter(cfg, self.task, self.runtimes, self.out)
        self.loop = GenerationLoop(cfg, self.space, self.book, self.budget, self.events,
                                   on_generation=lambda front: self.write_results(front, None),
                                   removed=self.removed_genes)


    # -- the store --------------------------------------------------------------------------
    def _load_store(self) -> bool:
        """Start a new study in the store, or pick up the finished trials of an earlier one."""
        stored = self.store.run_config()
        if stored is None:
            self.store.init_study(__version__, self.task.name, self.runtime.name,
                                  json.loads(self.cfg.model_dump_json()))
            self.store.set_meta("space", self._space_choices())
            return False
        if not self.resume:
            raise ConfigError(f"{str(self.out)!r} already holds a study (task {stored.get('task')!r}); "
                              f"continue it with `petra resume {self.out}` or pass another --output")
        self._check_space(self.store.get_meta("space"))
        self.book.load()
        self.budget.start -= self.store.get_meta("elapsed_s", 0.0)  # the budget counts what was spent
        return True

    def _space_choices(self) -> dict[str, list[str]]:
        return {g: [str(getattr(c, "value", c)) for c in getattr(self.space, g)]
                for g in self.space.gene_names}

    def _check_space(self, stored: dict[str, list[str]] | None) -> None:
        """A stored population is gene indices into the space the run started with: decoded
        into another one (a newer petra, an edited task), they would mean other configs."""
        if stored is None:  # a store from before the space was recorded
            return
        now = self._space_choices()
        fix = "start a new run with `petra optimize` (finished trials stay in this folder)"
        for gene in sorted(set(stored) | set(now)):
            if stored.get(gene) != now.get(gene):
                raise ConfigError(
                    f"the search space changed since this run started (gene {gene!r}: "
                    f"{stored.get(gene)} then, {now.get(gene)} now), so its population cannot be "
                    f"resumed; {fix}")
        if list(stored) != list(now):  # same genes, another genome order (another petra)
            raise ConfigError("the genes of this run's genomes were stored in another order (an older "
                              f"petra), so its population cannot be resumed; {fix}")

    # -- what benchmarks and tests drive one by one ---------------------------------------
    @property
    def trials(self) -> list[Trial]:
        return self.book.trials

    @property
    def baseline(self) -> Trial | None:
        return self.book.baseline

    @property
    def baselines(self) -> dict[str, Trial]:
        return self.book.baselines

    def elapsed(self) -> float:
        return self.budget.elapsed()

    def run_trial(self, config: CandidateConfig, generation: int, genome=None) -> Trial:
        return self.book.run_trial(config, generation, genome)

    def measure_baseline(self) -> Trial:
        return measure_baselines(self.book, self.space)

    def versions(self) -> dict[str, str]:
        return self.writer.versions()

    def prepare(self) -> None:
        """The trained FP32 teacher (from the cache when it exists) and the candidate builder."""
        self.events.stage("baseline")
        t0 = time.monotonic()
        teacher = self.task.baseline(log=self.log)
        #: training a user's baseline is reported apart and never eats the search's budget
        self.baseline_train_s = time.monotonic() - t0
        self.budget.start += self.baseline_train_s
        self.builder = CandidateBuilder(self.task, teacher, self.runtime, self.out,
                                        throughput_batch=self.cfg.batch, policy=SEARCH_POLICY,
                                        seed=self.cfg.seed,
                                        on_stage=self.events.stage,
                                        stage_cache=self.cfg.stage_cache, runtimes=self.runtimes,
                                        max_drop=self.cfg.max_drop, train_device=self.cfg.train_device,
                                        train_precision=self.cfg.train_precision)
        self.builder.screen_threads = self.threads if self.cfg.screen_settings else None
        self.builder.search_sessions = self.cfg.search_sessions
        self.executor = self.executor or make_executor(self.cfg)
        self.executor.log = self.log
        self.executor.start(self.builder)
        self.book.executor = self.executor

    # -- output -----------------------------------------------------------------------------
    def write_results(self, front: list[Trial], best: Trial | None) -> dict:
        return self.writer.write(self.book, front, best, {
            "status": self.status, "elapsed_s": self.elapsed(),
            "executor": self.executor.describe() if self.executor is not None else None,
            "generations_completed": self.loop.completed, "generations": self.loop.history,
            "removed_genes": self.removed_genes,
            "baseline_train_s": getattr(self, "baseline_train_s", None),
        })

    # -- the whole run ----------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            if self.executor is not None:
                self.executor.close()
            if hasattr(self, "builder"):
                self.builder.close()  # the measurement worker process
            self.events.close()

    def _run(self) -> dict:
        self.log(f"petra {__version__}: task {self.task.name} on {self.runtime.name} "
                 f"({machine()['cpu']}, {machine()['cores']} cores) -> {self.out}")
        self.events.run_start({
            "task": self.task.name, "runtime": self.runtime.name, "output": str(self.out),
            "generations": self.cfg.generations, "population": self.cfg.population,
            "time_budget_s": self.cfg.time_budget, "machine": machine(),
        })
        self.events.genes_removed(self.removed_genes)
        self.prepare()
        try:
            self._search()
            self.status = "complete"
        except KeyboardInterrupt:
            self.status = "interrupted"
            self.log("interrupted: writing what exists")
            if self.baseline is None:
                raise
        if self.status == "complete":
            self._final_figures()
        self.builder.close()  # the measurement worker; a later measure() would start a new one
        front = self.book.front()
        best = pick_best(front, self.baseline, self.cfg.prefer)
        if best is self.baseline:
            self.log("no candidate met the constraint and beat the baseline: best is the FP32 "
                     "baseline itself; every trial is saved in results.json and study.db")
        results = self.writer.hand_off(self.write_results(front, best))
        self.events.finish(results, self.out)
        return results

    def _search(self) -> None:
        if self.baseline is None:
            self.log(f"baseline: FP32 on {', '.join(self.runtimes)} at "
                     + ("its fastest runtime setting; every artifact is screened at the settings "
                        f"that can matter on {self.threads} threads" if self.cfg.screen_settings
                        else "each thread count"))
            self.measure_baseline()
        else:
            self.log(f"resuming: {len(self.trials)} finished trials, "
                     f"{self.loop.completed} generations done, {self.elapsed():.0f}s spent")
        self.loop.run()

    def _final_figures(self) -> None:
        """The front and every baseline re-timed together; the reference may switch."""
        front, todo = self.book.front(), self.book.to_remeasure()
        kept = [t.number for t in front if all(t is not u for u in todo)]
        self.log(f"re-measuring the front ({len(front) - len(kept)}) and the baseline, interleaved"
                 + (f"; trials {kept} keep their search figures (slower than FP32 by more than "
                    f"{REMEASURE_SLOWER - 1:.0%}, they cannot be the pick)" if kept else ""))
        remeasure(self.book, todo, self.cfg.final_sessions, self.cfg.final_max_sessions,
                  more=lambda: self.budget.elapsed() < self.cfg.time_budget)
        refer_to_faster_baseline(self.book)


def run_study(cfg: RunConfig, **kwargs) -> dict:
    return Study(cfg, **kwargs).run()


def resume_study(run_dir: Path, *, time_budget: float | None = None, generations: int | None = None,
                 **kwargs) -> dict:
    """Continue an interrupted run from its store; nothing that finished is evaluated again."""
    from petra.config import load_config
    from petra.optimizer.store import open_existing

    store = open_existing(run_dir)
    stored = store.run_config()
    store.close()
    if stored is None:
        raise ConfigError(f"{str(run_dir)!r} has an empty study store; start it with `petra optimize`")
    stored.update(output=str(run_dir))
    stored.setdefault("screen_settings", False)  # a run from before screening: settings were genes
    stored.setdefault("train_precision", "fp32")  # a run from before bf16 fine-tuning
    overrides = {"time_budget": time_budget, "generations": generations}
    stored.update({k: v for k, v in overrides.items() if v is not None})
    cfg = load_config(**stored)
    return Study(cfg, resume=True, **kwargs).run()
