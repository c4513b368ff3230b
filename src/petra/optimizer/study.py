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
from dataclasses import replace
from pathlib import Path

from petra import __version__
from petra.compression.pruning import Importance
from petra.config import RunConfig, ensure_writable
from petra.errors import CandidateError, ConfigError
from petra.exporters import Artifact, Calibration, Precision
from petra.models.base import Task, get_task
from petra.optimizer.genome import OPENVINO, ORT, CandidateConfig, Regularizer, SearchSpace
from petra.optimizer.nsga import run_nsga2
from petra.optimizer.records import FAILED, Trial, TrialState, pareto_front, pick_best
from petra.pipeline import CandidateBuilder
from petra.profilers import TimingPolicy, machine, versions
from petra.runtimes import InferencePrecision, OpenVinoRuntime, get_runtimes

SEARCH_POLICY = TimingPolicy(rel_ci=0.03, min_runs=30, max_time_s=1.0)
FINAL_POLICY = TimingPolicy(rel_ci=0.01, min_runs=50, max_time_s=1.0)
FINAL_ROUNDS = 2


def seed_configs(threads: int, runtime: str = ORT) -> list[CandidateConfig]:
    """The FP32 baseline, INT8 post-training quantization alone, and prune-50% + KD + INT8."""
    return [
        CandidateConfig(threads=threads, runtime=runtime),
        CandidateConfig(precision=Precision.INT8_STATIC, calibration=Calibration.MINMAX, threads=threads,
                        runtime=runtime),
        CandidateConfig(prune_ratio=0.5, importance=Importance.L2, round_to=8, epochs=4, lr=1e-3,
                        regularizer=Regularizer.KD, reg_weight=0.75,
                        precision=Precision.INT8_STATIC, threads=threads, runtime=runtime),
    ]


def default_space(runtimes: tuple[str, ...], n_threads: int) -> SearchSpace:
    """Threads up to the cores; runtime a gene of its own; only precisions this CPU runs natively."""
    kwargs: dict = {"threads": tuple(range(1, n_threads + 1)), "runtime": runtimes}
    if OPENVINO in runtimes:
        native = OpenVinoRuntime.supported_precisions()
        kwargs["ov_precision"] = tuple(p for p in SearchSpace().ov_precision if p in native) or (
            InferencePrecision.F32,)
    return SearchSpace(**kwargs)


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
        #: every runtime of the search (several with --runtime auto); the first names the run
        self.runtimes = get_runtimes(cfg.runtime)
        self.runtime = next(iter(self.runtimes.values()))
        self.task = task or get_task(cfg.task)
        cores = len(os.sched_getaffinity(0))
        n_threads = min(cores, cfg.max_threads or cores)
        self.space = space or default_space(tuple(self.runtimes), n_threads)
        if set(self.space.runtime) != set(self.runtimes):  # --runtime decides the runtime gene
            self.space = replace(self.space, runtime=tuple(self.runtimes))
        self.trials: list[Trial] = []
        self.by_key: dict[str, Trial] = {}
        self.baseline: Trial | None = None
        #: the FP32 baseline of each runtime (f32 forced on OpenVINO); ``baseline`` is the fastest
        self.baselines: dict[str, Trial] = {}
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
            trial.state = (TrialState.COMPLETE if trial.drop <= self.cfg.max_drop
                           else TrialState.INFEASIBLE)
            if trial.state is TrialState.INFEASIBLE:
                trial.reason = f"metric drop {trial.drop:.2f} > max_drop {self.cfg.max_drop}"
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

    def _log_trial(self, t: Trial) -> None:
        c = t.config
        desc = (f"prune={c.prune_ratio:.1f} ep={c.epochs} reg={c.regularizer.value} "
                f"{c.precision.value} thr={c.threads}")
        if len(self.runtimes) > 1 or c.runtime != ORT:
            desc = (f"{'ov' if c.runtime == OPENVINO else 'ort'} " + desc
                    + (f" {c.ov_precision.value}" if c.runtime == OPENVINO else ""))
        if t.measurement is None:
            self.log(f"  #{t.number:<3} {desc:<48} FAIL  {t.reason}")
        else:
            m = t.measurement
            self.log(f"  #{t.number:<3} {desc:<48} {t.state.value:<10} "
                     f"{self.task.metric.name}={t.val:.2f} p50={m.p50_ms:.4f}ms "
                     f"size={m.size_bytes / 1e3:.0f}kB ({t.elapsed_s:.1f}s)")

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
        if len(self.baselines) > 1:
            self.log("baselines: " + ", ".join(
                f"{r} p50 {b.measurement.p50_ms:.4f}ms" for r, b in self.baselines.items())
                + f"; {best.config.runtime} is faster")
        for t in candidates:  # drops of the baseline variants are measured against the chosen one
            t.drop = self.task.metric.drop(best.val, t.val) if t.val is not None else None
        return best

    def search(self) -> None:
        seeds = [self.space.encode(c) for r, b in self.baselines.items()
                 for c in seed_configs(b.config.threads, r)]

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
            art = Artifact.of(self.out / t.artifact)
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
            "runtime": self.cfg.runtime,
            "runtimes": list(self.runtimes),
            "device": self.cfg.device,
            "elapsed_s": self.elapsed(),
            "generations_completed": self.generations_completed,
            "trials": len(self.trials),
            "failed": sum(t.state is TrialState.FAIL for t in self.trials),
            "infeasible": sum(t.state is TrialState.INFEASIBLE for t in self.trials),
            "machine": machine(),
            "versions": self.versions(),
            "run_config": json.loads(self.cfg.model_dump_json()),
            "baseline": base.entry(metric) if base else None,
            "baselines": {r: b.entry(metric) for r, b in self.baselines.items()},
            "faster_baseline": base.config.runtime if base else None,
            "best": best.entry(metric) if best else None,
            "pareto": [t.entry(metric) for t in front],
            "all_trials": [t.entry(metric) for t in self.trials],
        }
        if best is not None and base is not None:
            results["best"]["ratios_to_baseline"] = self.ratios(best)
            results["best"]["artifact"] = f"best/{Path(best.artifact).name}"
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
        for f in Artifact.of(self.out / best.artifact).files:  # an IR is .xml + .bin
            shutil.copyfile(f, dst / ("model" + f.suffix))
        is_ov = best.config.runtime == OPENVINO
        manifest = {
            "petra_version": __version__,
            "task": self.task.name,
            "runtime": best.config.runtime,
            "runtime_settings": best.measurement.settings,
            "config": best.config.to_json(),
            "config_key": best.config.key,
            "metric": {"name": self.task.metric.name, "val": best.val, "test": best.test},
            "figures": best.measurement.to_json(),
            "ratios_to_baseline": self.ratios(best),
            "machine": machine(),
            "versions": self.versions(),
            "load": (f"openvino.Core().compile_model('model.xml', 'CPU', "
                     f"{{'INFERENCE_PRECISION_HINT': '{best.config.ov_precision.value}'}})" if is_ov else
                     "onnxruntime.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])"),
        }
        (dst / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))

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

    # -- the whole run --------------------------------------------------------------------
    def run(self) -> dict:
        self.log(f"petra {__version__}: task {self.task.name} on {self.runtime.name} "
                 f"({machine()['cpu']}, {machine()['cores']} cores) -> {self.out}")
        teacher = self.task.baseline(log=self.log)
        self.builder = CandidateBuilder(self.task, teacher, self.runtime, self.out,
                                        throughput_batch=self.cfg.batch, policy=SEARCH_POLICY,
                                        seed=self.cfg.seed, log=self.log, runtimes=self.runtimes,
                                        max_drop=self.cfg.max_drop)
        self.log(f"baseline: FP32 on {', '.join(self.runtimes)} at each thread count"
                 + (" (OpenVINO with f32 forced)" if OPENVINO in self.runtimes else ""))
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
            bases = [self.baseline] + [b for b in self.baselines.values() if b is not self.baseline]
            self.remeasure(bases + [t for t in front if all(t is not b for b in bases)])
            front = pareto_front(self.trials)
        best = pick_best(front, self.baseline, self.cfg.prefer)
        self.write_best(best)
        return self.write_results(front, best)


def run_study(cfg: RunConfig, **kwargs) -> dict:
    return Study(cfg, **kwargs).run()
