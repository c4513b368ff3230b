"""results.json: what a run found, rewritten atomically after every generation and at the end,
and the hand-off folder of the best artifact."""

from __future__ import annotations

import json
import os
from pathlib import Path

from petra import __version__
from petra.compression.training import resolve_train_precision
from petra.config import RunConfig
from petra.handoff import write_handoff
from petra.models.base import Task
from petra.optimizer import estimators
from petra.optimizer.records import Trial, TrialState
from petra.optimizer.trials import TrialBook
from petra.profilers import machine, versions
from petra.runtimes import Runtime


class ResultsWriter:
    def __init__(self, cfg: RunConfig, task: Task, runtimes: dict[str, Runtime], out: Path) -> None:
        self.cfg, self.task, self.runtimes, self.out = cfg, task, runtimes, out

    def write(self, book: TrialBook, front: list[Trial], best: Trial | None, run: dict) -> dict:
        """``run``: the study's own fields (status, elapsed_s, executor, generations_completed,
        generations, removed_genes), written as they are."""
        metric, base = self.task.metric.name, book.baseline
        results = {
            "petra_version": __version__,
            "status": run["status"],
            "task": self.task.name,
            "runtime": self.cfg.runtime,
            "runtimes": list(self.runtimes),
            # each artifact screened at the runtime settings and measured at the fastest (its
            # config and runtime_settings name that setting); false: the settings were genes
            "screened_settings": self.cfg.screen_settings,
            # how each latency figure was made (statistic, sessions, timing policy)
            "estimator": estimators.describe(self.cfg.final_sessions, self.cfg.final_max_sessions,
                                              self.cfg.search_sessions),
            "device": self.cfg.device,
            # what "auto" became on this machine (the fine-tunes' arithmetic; the baseline is FP32)
            "train_precision": resolve_train_precision(self.cfg.train_precision, self.cfg.train_device),
            "executor": run["executor"],
            "elapsed_s": run["elapsed_s"],
            "output": str(self.out),
            "generations_completed": run["generations_completed"],
            "trials": len(book.trials),
            "failed": sum(t.state is TrialState.FAIL for t in book.trials),
            "infeasible": sum(t.state is TrialState.INFEASIBLE for t in book.trials),
            "machine": machine(),
            "versions": self.versions(),
            "run_config": json.loads(self.cfg.model_dump_json()),
            "removed_genes": [{"gene": g, "reason": r} for g, r in run["removed_genes"]],
            "generations": run["generations"],
            "baseline": base.entry(metric) if base else None,
            "baselines": {r: b.entry(metric) for r, b in book.baselines.items()},
            "faster_baseline": base.config.runtime if base else None,
            "best": best.entry(metric) if best else None,
            "pareto": [t.entry(metric) for t in front],
            "all_trials": [t.entry(metric) for t in book.trials],
        }
        if best is not None and base is not None:
            results["best"]["ratios_to_baseline"] = self.ratios(book, best)
            results["best_is_baseline"] = best is base
        for entry, t in zip(results["pareto"], front):
            if base is not None:
                entry["ratios_to_baseline"] = self.ratios(book, t)
        return self.dump(results)

    def hand_off(self, results: dict) -> dict:
        """The best artifact into ``best/`` with its manifest; results.json names both files."""
        write_handoff(self.out / "best", self.out, results["best"], results)
        results["best"]["trial_artifact"] = results["best"]["artifact"]
        results["best"]["artifact"] = "best/model" + Path(results["best"]["trial_artifact"]).suffix
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

    def ratios(self, book: TrialBook, t: Trial) -> dict[str, float]:
        """To the reference baseline (latency also to the trial's own runtime's baseline)."""
        m, b, drop = t.measurement, book.baseline.measurement, self.task.metric.drop
        own = book.baselines.get(t.config.runtime, book.baseline).measurement
        return {
            "p50_latency": m.p50_ms / b.p50_ms,
            "p50_latency_vs_own_runtime_baseline": m.p50_ms / own.p50_ms,
            "size": m.size_bytes / b.size_bytes,
            "throughput": m.throughput_sps / b.throughput_sps,
            "metric_drop_val": drop(book.baseline.val, t.val),
            "metric_drop_test": drop(book.baseline.test, t.test),
        }
