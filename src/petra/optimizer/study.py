"""A study: baseline, evolutionary search, re-measurement of the front, the best artifact.

Everything a finished trial produced is appended to ``trials.jsonl`` the moment it ends and
``results.json`` is rewritten after every generation, so an interrupted run loses nothing that
finished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from petra import __version__
from petra.compression.pruning import Importance
from petra.config import RunConfig, ensure_writable
from petra.errors import CandidateError, ConfigError
from petra.exporters import Calibration, Precision
from petra.models.base import Task, get_task
from petra.optimizer.genome import CandidateConfig, Regularizer, SearchSpace
from petra.optimizer.nsga import run_nsga2
from petra.optimizer.records import FAILED, Trial, TrialState, pareto_front, pick_best
from petra.pipeline import CandidateBuilder
from petra.profilers import TimingPolicy, machine, versions
from petra.runtimes import get_runtime

SEARCH_POLICY = TimingPolicy(rel_ci=0.03, min_runs=30, max_time_s=1.0)
FINAL_POLICY = TimingPolicy(rel_ci=0.01, min_runs=50, max_time_s=1.0)
FINAL_ROUNDS = 2


def seed_configs(threads: int) -> list[CandidateConfig]:
    """The FP32 baseline, INT8 post-training quantization alone, and prune-50% + KD + INT8."""
    return [
        CandidateConfig(threads=threads),
        CandidateConfig(precision=Precision.INT8_STATIC, calibration=Calibration.MINMAX, threads=threads),
        CandidateConfig(prune_ratio=0.5, importance=Importance.L2, round_to=8, epochs=4, lr=1e-3,
                        regularizer=Regularizer.KD, reg_weight=0.75,
                        precision=Precision.INT8_STATIC, threads=threads),
    ]


class Study:
    def __init__(
        self,
        cfg: RunConfig,
        *,
        task: Task | None = None,
        space: SearchSpace | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cfg, self.log = cfg, log
        self.out = ensure_writable(cfg.output_dir())
        self.runtime = get_runtime(cfg.runtime)
        self.task = task or get_task(cfg.task)
        cores = len(os.sched_getaffinity(0))
        n_threads = min(cores, cfg.max_threads or cores)
        # genes that do not apply to the task's model are removed from its space, not ignored
        self.space = self.task.search_space(space or SearchSpace(threads=tuple(range(1, n_threads + 1))))
        self.val_outputs: dict[str, object] = {}
        self.trials: list[Trial] = []
        self.by_key: dict[str, Trial] = {}
        self.baseline: Trial | None = None
        self.status = "running"
        self.generations_completed = 0
        self.start = time.monotonic()

    # -- budget ---------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def out_of_time(self) -> bool:
        return self.elapsed() >= self.cfg.time_budget

    # -- trials ---------------------------------------------------------------------------
    def run_trial(self, config: CandidateConfig, generation: int) -> Trial:
        config = config.canonical()
        if config.key in self.by_key:
            return self.by_key[config.key]
        t0 = time.monotonic()
        trial = Trial(number=len(self.trials), generation=generation, config=config,
                      state=TrialState.FAIL)
        try:
            built = self.builder.evaluate(config)
            trial.val, trial.test, trial.measurement = built.val, built.test, built.measurement
            trial.stage_s = built.stage_s
            trial.artifact = str(built.artifact.path.relative_to(self.out))
            base_val = self.baseline.val if self.baseline is not None else built.val
            trial.drop = self.task.metric.drop(base_val, built.val)
            self.val_outputs[config.key] = built.val_outputs
            decisive = self._decisive_drop(trial)
            trial.state = (TrialState.COMPLETE if decisive <= self.cfg.max_drop
                           else TrialState.INFEASIBLE)
            if trial.state is TrialState.INFEASIBLE:
                trial.reason = f"metric drop {decisive:.2f} > max_drop {self.cfg.max_drop}"
                if trial.drop_bounds is not None:
                    trial.reason += f" (upper {self.task.drop_confidence:.0%} bound; point {trial.drop:.2f})"
        except CandidateError as exc:
            trial.reason = f"{exc.stage}: {exc}"
        except (ConfigError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug or a library crash in one candidate must not end the search
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            trial.reason = f"unexpected {type(exc).__name__}: {exc} @ {where}"
        trial.elapsed_s = time.monotonic() - t0
        self.trials.append(trial)
        self.by_key[config.key] = trial
        with open(self.out / "trials.jsonl", "a") as f:
            f.write(json.dumps(trial.entry(self.task.metric.name)) + "\n")
        self._log_trial(trial)
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

    def _log_trial(self, t: Trial) -> None:
        c = t.config
        desc = (f"prune={c.prune_ratio:.1f} ep={c.epochs} reg={c.regularizer.value} "
                f"{c.precision.value} thr={c.threads}")
        if t.measurement is None:
            self.log(f"  #{t.number:<3} {desc:<48} FAIL  {t.reason}")
        else:
            m = t.measurement
            self.log(f"  #{t.number:<3} {desc:<48} {t.state.value:<10} "
                     f"{self.task.metric.name}={t.val:.2f} p50={m.p50_ms:.4f}ms "
                     f"size={m.size_bytes / 1e3:.0f}kB ({t.elapsed_s:.1f}s)")

    # -- phases ---------------------------------------------------------------------------
    def measure_baseline(self) -> Trial:
        """FP32 with ORT_ENABLE_ALL at every thread count; the fastest is the baseline."""
        candidates = [self.run_trial(CandidateConfig(threads=t), -1) for t in self.space.threads]
        ok = [t for t in candidates if t.measurement is not None]
        if not ok:
            raise ConfigError(
                f"the FP32 baseline of task {self.task.name!r} could not be built: "
                f"{candidates[0].reason}; check that the model exports to ONNX"
            )
        best = min(ok, key=lambda t: t.measurement.p50_ms)
        self.baseline = best
        for t in candidates:  # drops of the baseline variants are measured against the chosen one
            t.drop = self.task.metric.drop(best.val, t.val) if t.val is not None else None
        return best

    def search(self) -> None:
        base_threads = self.baseline.config.threads
        seeds = [self.space.encode(c) for c in seed_configs(base_threads)]

        def evaluate(genome, generation):
            config = self.space.decode(genome)
            if config.key in self.by_key:
                return self.by_key[config.key].fitness()
            if self.out_of_time():
                return [FAILED] * 3
            return self.run_trial(config, generation).fitness()

        def on_generation(done: int) -> bool:
            self.generations_completed = done
            front = pareto_front(self.trials)
            self.log(f"generation {done}/{self.cfg.generations}: {len(self.trials)} trials, "
                     f"front {len(front)}, elapsed {self.elapsed():.0f}s")
            self.write_results(front, None)
            return self.out_of_time()

        self.log(f"search: NSGA-II, population {self.cfg.population}, "
                 f"{self.cfg.generations} generations, budget {self.cfg.time_budget:.0f}s")
        run_nsga2(self.space, evaluate, generations=self.cfg.generations,
                  population=self.cfg.population, seeds=seeds, seed=self.cfg.seed,
                  on_generation=on_generation)

    def remeasure(self, trials: list[Trial]) -> None:
        """Re-time the front and the baseline in interleaved rounds (A B A B ...) so that
        drift of the machine hits all of them alike; the final figures replace the search's."""
        sessions = []
        for t in trials:
            art_path = self.out / t.artifact
            from petra.exporters import Artifact

            art = Artifact.of(art_path)
            sessions.append((t, art, self.builder.compile(t.config, art)))
        merged = {}
        for _ in range(FINAL_ROUNDS):
            for t, art, sess in sessions:
                m = self.builder.measure(sess, art, FINAL_POLICY)
                merged[t.number] = merged[t.number].merged(m) if t.number in merged else m
        for t, _, _ in sessions:
            t.measurement = merged[t.number]

    # -- output ---------------------------------------------------------------------------
    def write_results(self, front: list[Trial], best: Trial | None) -> dict:
        metric = self.task.metric.name
        base = self.baseline
        results = {
            "petra_version": __version__,
            "status": self.status,
            "task": self.task.name,
            "runtime": self.runtime.name,
            "device": self.cfg.device,
            "elapsed_s": self.elapsed(),
            "generations_completed": self.generations_completed,
            "trials": len(self.trials),
            "failed": sum(t.state is TrialState.FAIL for t in self.trials),
            "infeasible": sum(t.state is TrialState.INFEASIBLE for t in self.trials),
            "machine": machine(),
            "versions": versions() | self.runtime.versions(),
            "run_config": json.loads(self.cfg.model_dump_json()),
            "baseline": base.entry(metric) if base else None,
            "best": best.entry(metric) if best else None,
            "pareto": [t.entry(metric) for t in front],
            "all_trials": [t.entry(metric) for t in self.trials],
        }
        if best is not None and base is not None:
            results["best"]["ratios_to_baseline"] = self.ratios(best)
            results["best"]["artifact"] = "best/model.onnx"
        for entry, t in zip(results["pareto"], front):
            if base is not None:
                entry["ratios_to_baseline"] = self.ratios(t)
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=2, default=str))
        os.replace(tmp, self.out / "results.json")
        return results

    def write_best(self, best: Trial) -> None:
        dst = self.out / "best"
        dst.mkdir(exist_ok=True)
        shutil.copyfile(self.out / best.artifact, dst / "model.onnx")
        manifest = {
            "petra_version": __version__,
            "task": self.task.name,
            "runtime": self.runtime.name,
            "runtime_settings": best.measurement.settings,
            "config": best.config.to_json(),
            "config_key": best.config.key,
            "metric": {"name": self.task.metric.name, "val": best.val, "test": best.test},
            "figures": best.measurement.to_json(),
            "ratios_to_baseline": self.ratios(best),
            "machine": machine(),
            "versions": versions() | self.runtime.versions(),
            "load": "onnxruntime.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
        }
        (dst / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))

    def ratios(self, t: Trial) -> dict[str, float]:
        m, b, drop = t.measurement, self.baseline.measurement, self.task.metric.drop
        return {
            "p50_latency": m.p50_ms / b.p50_ms,
            "size": m.size_bytes / b.size_bytes,
            "throughput": m.throughput_sps / b.throughput_sps,
            "metric_drop_val": drop(self.baseline.val, t.val),
            "metric_drop_test": drop(self.baseline.test, t.test),
        }

    # -- the whole run --------------------------------------------------------------------
    def run(self) -> dict:
        self.log(f"petra {__version__}: task {self.task.name} on {self.runtime.name} "
                 f"({machine()['cpu']}, {machine()['cores']} cores) -> {self.out}")
        teacher = self.task.baseline(log=self.log)
        self.builder = CandidateBuilder(self.task, teacher, self.runtime, self.out,
                                        throughput_batch=self.cfg.batch, policy=SEARCH_POLICY,
                                        seed=self.cfg.seed, log=self.log)
        self.log("baseline: FP32 on ORT_ENABLE_ALL at each thread count")
        try:
            self.measure_baseline()
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
            self.remeasure([self.baseline] + [t for t in front if t is not self.baseline])
            front = pareto_front(self.trials)
        best = pick_best(front, self.baseline, self.cfg.prefer)
        self.write_best(best)
        return self.write_results(front, best)


def run_study(cfg: RunConfig, **kwargs) -> dict:
    return Study(cfg, **kwargs).run()
