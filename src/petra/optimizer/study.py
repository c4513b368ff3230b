"""A study: baseline, evolutionary search, re-measurement of the front, the best artifact.

Everything a finished trial produced is appended to ``trials.jsonl`` the moment it ends and
``results.json`` is rewritten after every generation, so an interrupted run loses nothing that
finished.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from petra import __version__
from petra.config import RunConfig, ensure_writable
from petra.errors import CandidateError, ConfigError, stop_requested
from petra.executors import Executor, Job, Outcome, make_executor
from petra.exporters import Artifact
from petra.handoff import write_handoff
from petra.models.base import Task, get_task
from petra.optimizer.genome import OPENVINO, CandidateConfig, SearchSpace
from petra.optimizer.nsga import run_nsga2
from petra.optimizer.records import (
    FAILED,
    Trial,
    TrialState,
    nondominated_rank,
    pareto_front,
    pick_best,
)
from petra.optimizer.space import default_space, seed_configs
from petra.optimizer.store import StudyStore
from petra.pipeline import LOW_FIDELITY, CandidateBuilder, Fidelity
from petra.profilers import TimingPolicy, interleaved_fastest, machine, versions
from petra.progress import Fanout, PlainProgress, Progress
from petra.runtimes import get_runtimes

SEARCH_POLICY = TimingPolicy(rel_ci=0.03, min_runs=30, max_time_s=1.0)
FINAL_POLICY = TimingPolicy(rel_ci=0.01, min_runs=50, max_time_s=1.0)


class Study:
    def __init__(
        self,
        cfg: RunConfig,
        *,
        task: Task | None = None,
        space: SearchSpace | None = None,
        log: Callable[[str], None] = print,
        progress: Progress | None = None,
        resume: bool = False,
        executor: Executor | None = None,
    ) -> None:
        self.cfg, self.resume = cfg, resume
        #: where candidates are built and measured (from ``cfg.executor`` unless given)
        self.executor = executor
        self.progress = progress or PlainProgress(log)
        if cfg.mlflow_uri:
            from petra.tracking import MlflowProgress

            self.progress = Fanout(self.progress, MlflowProgress(cfg.mlflow_uri))
        self.log = self.progress.message
        self.out = ensure_writable(cfg.output_dir())
        #: every runtime of the search (several with --runtime auto); the first names the run
        self.runtimes = get_runtimes(cfg.runtime)
        self.runtime = next(iter(self.runtimes.values()))
        self.task = task or get_task(cfg.task)
        cores = len(os.sched_getaffinity(0))
        n_threads = min(cores, cfg.max_threads or cores)
        # genes that do not apply to the task's model are removed from its space, not ignored
        self.space = self.task.search_space(space or default_space(tuple(self.runtimes), n_threads))
        if set(self.space.runtime) != set(self.runtimes):  # --runtime decides the runtime gene
            self.space = replace(self.space, runtime=tuple(self.runtimes))
        self.val_outputs: dict[str, object] = {}
        #: the seeded configs (hand-made pipeline among them): always built at full fidelity
        self.seed_keys: set[str] = set()
        self.trials: list[Trial] = []
        self.by_key: dict[str, Trial] = {}
        self.baseline: Trial | None = None
        #: the FP32 baseline of each runtime (f32 forced on OpenVINO); ``baseline`` is the fastest
        self.baselines: dict[str, Trial] = {}
        self.status = "running"
        self.generations_completed = 0
        self.history: list[dict] = []
        self.start = time.monotonic()
        self.store = StudyStore(self.out / "study.db")
        self.resumed = self._load_store()

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
        self.trials = self.store.trials()
        self.by_key = {t.config.key: t for t in self.trials}
        base = self.store.get_meta("baseline")
        self.baseline = self.trials[base] if base is not None else None
        self.baselines = {r: self.trials[n] for r, n in self.store.get_meta("baselines", {}).items()}
        self.generations_completed = self.store.get_meta("generations_completed", 0)
        self.history = self.store.get_meta("history", [])
        self.start -= self.store.get_meta("elapsed_s", 0.0)  # the budget counts what was spent
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
        for gene in sorted(set(stored) | set(now)):
            if stored.get(gene) != now.get(gene):
                raise ConfigError(
                    f"the search space changed since this run started (gene {gene!r}: "
                    f"{stored.get(gene)} then, {now.get(gene)} now), so its population cannot be "
                    "resumed; start a new run with `petra optimize` (finished trials stay in this folder)")

    # -- budget ---------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def out_of_time(self) -> bool:
        if stop_requested():  # a Ctrl-C whose KeyboardInterrupt was lost in a finalizer
            raise KeyboardInterrupt
        return self.elapsed() + self.final_reserve() >= self.cfg.time_budget

    def final_reserve(self) -> float:
        """Seconds kept from the search for the final re-measurement, so that ``time_budget``
        is the run's wall time: ``final_sessions`` rounds of the current front and the
        baselines, each as long as that trial's own search measurement (with the metric's
        inference, an upper bound). Without it a run re-measured after its budget was spent:
        NSGA-II took 406 s of a 150 s budget on ucr-GunPoint (1.9 ms a call, 10 rounds here)."""
        todo = {id(t): t for t in [*self.baselines.values(), *pareto_front(self.trials)]}
        return self.cfg.final_sessions * sum(t.stage_s.get("measure_s", 0.0) for t in todo.values())

    # -- trials ---------------------------------------------------------------------------
    def run_trial(self, config: CandidateConfig, generation: int, genome=None) -> Trial:
        config = config.canonical()
        if config.key in self.by_key:
            return self.by_key[config.key]
        return self.record(self.build_trial(config, generation), genome)

    def build_trial(self, config: CandidateConfig, generation: int,
                    fidelity: Fidelity | None = None) -> Trial:
        """Build and measure one candidate; not recorded yet (see ``record``)."""
        trials = self.build_trials([config], generation, fidelity)
        try:
            return next(trials)[1]
        finally:
            trials.close()  # now, not in a finalizer (where a Ctrl-C would be dropped)

    def build_trials(self, configs: list[CandidateConfig], generation: int,
                     fidelity: Fidelity | None = None) -> Iterator[tuple[int, Trial]]:
        """(position in ``configs``, trial) as each one finishes on the executor, in any order;
        closing the iterator early abandons the rest (budget spent)."""
        for i, c in enumerate(configs):
            self.progress.trial_start(len(self.trials) + i, generation, c.to_json())
        outcomes = self.executor.run(Job(i, c, fidelity) for i, c in enumerate(configs))
        try:
            for outcome in outcomes:
                yield outcome.job.index, self._trial(outcome, generation)
        finally:
            outcomes.close()

    def _trial(self, outcome: Outcome, generation: int) -> Trial:
        config = outcome.job.config
        trial = Trial(number=len(self.trials), generation=generation, config=config,
                      state=TrialState.FAIL, reason=outcome.reason, elapsed_s=outcome.elapsed_s)
        built = outcome.built
        if built is None:
            return trial
        trial.val, trial.test, trial.measurement = built.val, built.test, built.measurement
        trial.stage_s = built.stage_s
        trial.artifact = str(built.artifact.path.relative_to(self.out))
        base_val = self.baseline.val if self.baseline is not None else built.val
        trial.drop = self.task.metric.drop(base_val, built.val)
        self.val_outputs[config.key] = built.val_outputs
        decisive = self._decisive_drop(trial)
        trial.state = TrialState.COMPLETE if decisive <= self.cfg.max_drop else TrialState.INFEASIBLE
        if trial.state is TrialState.INFEASIBLE:
            trial.reason = f"metric drop {decisive:.2f} > max_drop {self.cfg.max_drop}"
            if trial.drop_bounds is not None:
                trial.reason += f" (upper {self.task.drop_confidence:.0%} bound; point {trial.drop:.2f})"
        return trial

    def record(self, trial: Trial, genome=None) -> Trial:
        """A finished trial goes to the store, trials.jsonl and the sinks at once."""
        trial.number = len(self.trials)
        self.trials.append(trial)
        self.by_key[trial.config.key] = trial
        self.store.save_trial(trial, genome)
        self.store.set_meta("elapsed_s", self.elapsed())
        entry = trial.entry(self.task.metric.name)
        with open(self.out / "trials.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.progress.trial_end(entry)
        return trial

    def _decisive_drop(self, trial: Trial) -> float:
        """The drop feasibility is decided on: the point estimate, or for tasks with small
        validation sets (``Task.drop_confidence``) the upper bound of a paired bootstrap."""
        if not self.task.drop_confidence or self.baseline is None:
            return trial.drop
        base_out = self.val_outputs.get(self.baseline.config.key)
        if base_out is None:
            return trial.drop
        trial.drop_bounds = self.task.drop_interval(base_out, self.val_outputs[trial.config.key])
        return trial.drop_bounds[1]

    # -- phases ---------------------------------------------------------------------------
    def measure_baseline(self) -> Trial:
        """FP32 at every thread count on every runtime of the search (ORT_ENABLE_ALL; OpenVINO
        with f32 forced, latency hint, one stream); the fastest of each runtime is its baseline
        and the fastest of all is the reference of every ratio and of the best pick."""
        candidates = [self.run_trial(CandidateConfig(threads=t, runtime=r), -1)
                      for r in self.space.runtime for t in self.space.threads]
        ok = [t for t in candidates if t.measurement is not None]
        if not ok:
            raise ConfigError(
                f"the FP32 baseline of task {self.task.name!r} could not be built: "
                f"{candidates[0].reason}; check that the model exports to ONNX"
            )
        for t in sorted(ok, key=lambda t: t.measurement.p50_ms, reverse=True):
            self.baselines[t.config.runtime] = t
        best = min(ok, key=lambda t: t.measurement.p50_ms)
        self.baseline = best
        self.store.set_meta("baseline", best.number)
        self.store.set_meta("baselines", {r: b.number for r, b in self.baselines.items()})
        if len(self.baselines) > 1:
            self.log("baselines: " + ", ".join(
                f"{r} p50 {b.measurement.p50_ms:.4f}ms" for r, b in self.baselines.items())
                + f"; {best.config.runtime} is faster")
        for t in candidates:  # drops of the baseline variants are measured against the chosen one
            t.drop = self.task.metric.drop(best.val, t.val) if t.val is not None else None
        return best

    def evaluate_batch(self, genomes: list[tuple[int, ...]], generation: int) -> list[list[float]]:
        """One generation's new candidates. With multi-fidelity, the ones that train first get a
        short fine-tune on a data subset; only the better half (non-dominated rank of those cheap
        results) get the full fine-tune, the rest are recorded as PRUNED (successive halving).
        Seeded configs always get the full fine-tune."""
        configs = [self.space.decode(g) for g in genomes]
        fresh: dict[str, int] = {}
        for i, c in enumerate(configs):
            if c.key not in self.by_key and c.key not in fresh:
                fresh[c.key] = i
        # a seed skips the cheap pass: it is there so the front holds at least what an expert
        # would build by hand, and one epoch on a quarter of the data under-rates exactly the
        # aggressive pruning it needs (cdnow: prune-50% + KD + INT8 scored 72.63 cheap and
        # 73.87, the baseline's AUC, at full fidelity)
        trainable = [i for i in fresh.values()
                     if configs[i].epochs > 0 and configs[i].key not in self.seed_keys]
        if self.cfg.multi_fidelity and len(trainable) >= 2 and not self.out_of_time():
            low = self._low_fidelity([configs[i] for i in trainable], trainable, generation)
        else:
            low = {}
        if low:  # every cheap estimate is in: rank them (an unfinished phase records nothing)
            for t in low.values():  # feasibility of the cheap estimate, for the ranking
                if t.state is TrialState.INFEASIBLE:
                    t.reason = None
            rank = dict(zip(low, nondominated_rank(list(low.values()))))
            order = sorted(trainable, key=lambda i: (rank[i], -(low[i].val or -1e9)))
            keep = set(order[: math.ceil(len(order) / 2)])
            for i in order:
                if i in keep:
                    continue
                t = low[i]
                if t.state is not TrialState.FAIL:
                    t.state = TrialState.PRUNED
                    t.reason = (f"low fidelity ({LOW_FIDELITY.describe()}): {self.task.metric.name} "
                                f"{t.val:.2f}, not in the better half of generation {generation}")
                self.record(t, genomes[i])
        full = [i for i in fresh.values() if configs[i].key not in self.by_key]
        if full and not self.out_of_time():
            finished = self.build_trials([configs[i] for i in full], generation)
            try:
                for j, t in finished:
                    self.record(t, genomes[full[j]])
                    if self.out_of_time():
                        break
            finally:
                finished.close()
        return [self.by_key[c.key].fitness() if c.key in self.by_key else [FAILED] * 3
                for c in configs]

    def _low_fidelity(self, configs: list[CandidateConfig], positions: list[int],
                      generation: int) -> dict[int, Trial]:
        """The cheap pass of successive halving; stops with the budget, like the full pass (a
        generation of long fine-tunes once overran a 240 s budget nearly five times here), and
        then returns nothing: half a generation cannot be ranked, and on resume it is rebuilt
        from the stage cache."""
        done: dict[int, Trial] = {}
        cheap = self.build_trials(configs, generation, LOW_FIDELITY)
        try:
            for j, t in cheap:
                done[positions[j]] = t
                if self.out_of_time() and len(done) < len(configs):
                    return {}
        finally:
            cheap.close()
        return dict(sorted(done.items()))

    def search(self) -> None:
        seeds = [self.space.encode(c) for r, b in self.baselines.items()
                 for c in seed_configs(b.config.threads, r)]
        self.seed_keys = {self.space.decode(g).key for g in seeds}

        start = self.generations_completed

        def on_generation(done: int, population) -> bool:
            self.store.save_population(done, population)
            if done == start:  # the starting population, before it is evaluated
                return self.out_of_time()
            self.generations_completed = done
            self.store.set_meta("generations_completed", done)
            front = pareto_front(self.trials)
            best = pick_best(front, self.baseline, self.cfg.prefer)
            summary = {
                "generation": done, "generations": self.cfg.generations,
                "trials": len(self.trials), "front_size": len(front),
                "elapsed_s": self.elapsed(),
                "best": None if best is self.baseline else {
                    "trial": best.number, "metric": best.val,
                    "p50_ratio": self.ratios(best)["p50_latency"],
                    "size_ratio": self.ratios(best)["size"],
                },
            }
            self.history.append(summary)
            self.store.set_meta("history", self.history)
            self.progress.generation_end(summary)
            self.write_results(front, None)
            return self.out_of_time()

        stored = self.store.last_population()
        if stored is not None:  # resume: the last stored population, every finished trial cached
            start, seeds = stored
            self.generations_completed = start
        left = self.cfg.generations - start
        self.log(f"search: NSGA-II, population {self.cfg.population}, generations "
                 f"{start + 1}..{self.cfg.generations}, budget {self.cfg.time_budget:.0f}s")
        run_nsga2(self.space, self.evaluate_batch, generations=left, population=self.cfg.population,
                  seeds=seeds, seed=self.cfg.seed, on_generation=on_generation,
                  start_generation=start, batched=True)

    def remeasure(self, trials: list[Trial]) -> None:
        """Re-time the front and the baseline in interleaved rounds (A B A B ...) so that
        drift of the machine hits all of them alike; the final figures replace the search's.
        Each round is a fresh session in the isolated worker and the figure is the fastest
        round's (slow sessions cannot move it, see ``Measurement.fastest_of``); trials whose
        fastest round was not reproduced get further rounds, interleaved among themselves. A
        trial whose re-measurement fails keeps its search figure (the reason is logged)."""
        arts = {t.number: Artifact.of(self.out / t.artifact) for t in trials}

        def failed(i: int, exc: CandidateError) -> None:
            self.log(f"  re-measuring trial {trials[i].number} failed ({exc}); keeping its search figure")

        merged = interleaved_fastest(
            [lambda t=t: self.executor.measure(t.config, arts[t.number], FINAL_POLICY) for t in trials],
            failed, self.cfg.final_sessions, self.cfg.final_max_sessions)
        for t, m in zip(trials, merged):
            if m is not None:
                t.measurement = m
                self.store.update_measurement(t)
        noisy = [t.number for t in trials if t.measurement is not None and t.measurement.noisy]
        if noisy:
            self.log(f"  note: trials {noisy} did not reach the {FINAL_POLICY.rel_ci:.0%} interval, "
                     "ran beside other load or never reproduced their fastest session; their figures "
                     "are flagged noisy in results.json")

    def _refer_to_faster_baseline(self) -> None:
        """After the re-measurement, the reference of every ratio is the baseline that is faster
        by the final figures: the search-time pick can flip on a noisy machine (a run here said
        "onnxruntime 0.3568 ms, openvino 0.4069 ms; openvino is faster"), and ratios to the
        slower one overstate every gain. Drops and feasibility stay as decided: both FP32
        baselines score the same validation metric, and where they do not, nothing switches."""
        measured = [b for b in self.baselines.values() if b.measurement is not None]
        faster = min(measured, key=lambda b: b.measurement.p50_ms, default=self.baseline)
        if faster is self.baseline or faster.val != self.baseline.val:
            return
        self.log(f"  re-measured: the {faster.config.runtime} baseline is the faster one "
                 f"({faster.measurement.p50_ms:.4f} ms against {self.baseline.measurement.p50_ms:.4f} ms); "
                 "ratios are to it")
        self.baseline = faster
        self.store.set_meta("baseline", faster.number)

    # -- output ---------------------------------------------------------------------------
    def write_results(self, front: list[Trial], best: Trial | None) -> dict:
        metric = self.task.metric.name
        base = self.baseline
        results = {
            "petra_version": __version__,
            "status": self.status,
            "task": self.task.name,
            "runtime": self.cfg.runtime,
            "runtimes": list(self.runtimes),
            "device": self.cfg.device,
            "executor": self.executor.describe() if self.executor is not None else None,
            "elapsed_s": self.elapsed(),
            "output": str(self.out),
            "generations_completed": self.generations_completed,
            "trials": len(self.trials),
            "failed": sum(t.state is TrialState.FAIL for t in self.trials),
            "infeasible": sum(t.state is TrialState.INFEASIBLE for t in self.trials),
            "machine": machine(),
            "versions": self.versions(),
            "run_config": json.loads(self.cfg.model_dump_json()),
            "generations": self.history,
            "baseline": base.entry(metric) if base else None,
            "baselines": {r: b.entry(metric) for r, b in self.baselines.items()},
            "faster_baseline": base.config.runtime if base else None,
            "best": best.entry(metric) if best else None,
            "pareto": [t.entry(metric) for t in front],
            "all_trials": [t.entry(metric) for t in self.trials],
        }
        if best is not None and base is not None:
            results["best"]["ratios_to_baseline"] = self.ratios(best)
            results["best_is_baseline"] = best is base
        for entry, t in zip(results["pareto"], front):
            if base is not None:
                entry["ratios_to_baseline"] = self.ratios(t)
        return self.dump(results)

    def dump(self, results: dict) -> dict:
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=2, default=str))
        os.replace(tmp, self.out / "results.json")
        return results

    def versions(self) -> dict[str, str]:
        out = versions()
        for rt in self.runtimes.values():
            out |= rt.versions()
        return out

    def ratios(self, t: Trial) -> dict[str, float]:
        m, b, drop = t.measurement, self.baseline.measurement, self.task.metric.drop
        own = self.baselines.get(t.config.runtime, self.baseline).measurement
        return {
            "p50_latency": m.p50_ms / b.p50_ms,
            "p50_latency_vs_own_runtime_baseline": m.p50_ms / own.p50_ms,
            "size": m.size_bytes / b.size_bytes,
            "throughput": m.throughput_sps / b.throughput_sps,
            "metric_drop_val": drop(self.baseline.val, t.val),
            "metric_drop_test": drop(self.baseline.test, t.test),
        }

    def prepare(self) -> None:
        """The trained FP32 teacher (from the cache when it exists) and the candidate builder."""
        self.progress.stage("baseline")
        teacher = self.task.baseline(log=self.log)
        self.builder = CandidateBuilder(self.task, teacher, self.runtime, self.out,
                                        throughput_batch=self.cfg.batch, policy=SEARCH_POLICY,
                                        seed=self.cfg.seed,
                                        on_stage=self.progress.stage,
                                        stage_cache=self.cfg.stage_cache, runtimes=self.runtimes,
                                        max_drop=self.cfg.max_drop, train_device=self.cfg.train_device)
        self.executor = self.executor or make_executor(self.cfg)
        self.executor.log = self.log
        self.executor.start(self.builder)

    # -- the whole run --------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            if self.executor is not None:
                self.executor.close()
            if hasattr(self, "builder"):
                self.builder.close()  # the measurement worker process
            self.progress.close()

    def _run(self) -> dict:
        self.log(f"petra {__version__}: task {self.task.name} on {self.runtime.name} "
                 f"({machine()['cpu']}, {machine()['cores']} cores) -> {self.out}")
        self.progress.run_start({
            "task": self.task.name, "runtime": self.runtime.name, "output": str(self.out),
            "generations": self.cfg.generations, "population": self.cfg.population,
            "time_budget_s": self.cfg.time_budget, "machine": machine(),
        })
        self.prepare()
        try:
            if self.baseline is None:
                self.log(f"baseline: FP32 on {', '.join(self.runtimes)} at each thread count"
                         + (" (OpenVINO with f32 forced)" if OPENVINO in self.runtimes else ""))
                self.measure_baseline()
            else:
                self.log(f"resuming: {len(self.trials)} finished trials, "
                         f"{self.generations_completed} generations done, {self.elapsed():.0f}s spent")
            self.search()
            self.status = "complete"
        except KeyboardInterrupt:
            self.status = "interrupted"
            self.log("interrupted: writing what exists")
            if self.baseline is None:
                raise
        front = pareto_front(self.trials)
        if self.status == "complete":
            self.log(f"re-measuring the front ({len(front)}) and the baseline, interleaved")
            bases = [self.baseline] + [b for b in self.baselines.values() if b is not self.baseline]
            self.remeasure(bases + [t for t in front if all(t is not b for b in bases)])
            self._refer_to_faster_baseline()
            front = pareto_front(self.trials)
        self.builder.close()  # the measurement worker; a later measure() would start a new one
        best = pick_best(front, self.baseline, self.cfg.prefer)
        if best is self.baseline:
            self.log("no candidate met the constraint and beat the baseline: best is the FP32 "
                     "baseline itself; every trial is saved in results.json and study.db")
        results = self.write_results(front, best)
        write_handoff(self.out / "best", self.out, results["best"], results)
        results["best"]["trial_artifact"] = results["best"]["artifact"]
        results["best"]["artifact"] = "best/model" + Path(results["best"]["trial_artifact"]).suffix
        self.dump(results)
        self.progress.finish(results, self.out)
        return results


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
    overrides = {"time_budget": time_budget, "generations": generations}
    stored.update({k: v for k, v in overrides.items() if v is not None})
    cfg = load_config(**stored)
    return Study(cfg, resume=True, **kwargs).run()
