"""petra's NSGA-II against single techniques and other searchers, one task, one runtime, one machine.

    PYTHONPATH=src python benchmarks/compare.py --task NAME --runtime onnxruntime|openvino --budget MIN

Rows, all on the same task, data splits, runtime and machine, in this one invocation:
  1. FP32 baseline (fastest thread count, ORT_ENABLE_ALL / OpenVINO with f32 forced);
  2. ORT static INT8 QDQ post-training quantization with ORT's defaults (MinMax, per-tensor, u8/s8);
  3. NNCF INT8 post-training quantization on OpenVINO with NNCF's defaults (performance preset);
  4. hand-made: 50% channel pruning (torch-pruning, L2, round 8) + 4 epochs KD fine-tune + INT8;
  5. random search over petra's genome for BUDGET minutes;
  6. Optuna TPE (multi-objective, constraint-aware) over the same genome for BUDGET minutes;
  7. petra's NSGA-II (``Study.run``: multi-fidelity + stage cache + final re-measurement).
The FP32 teacher is trained once (shared cache); each row gets its own, empty stage cache, so
no searcher reuses a model another one trained. At the end one referee pass re-measures every
row's front and the FP32 baseline in one worker, interleaved, and every ratio is to that baseline.
Writes compare-<task>-<runtime>.{md,json,svg}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare_report as report  # noqa: E402
import compare_seeds  # noqa: E402

from petra.config import RunConfig, load_config  # noqa: E402
from petra.errors import ConfigError  # noqa: E402
from petra.exporters import Artifact, Calibration, Precision  # noqa: E402
from petra.models.base import default_cache_dir, get_task  # noqa: E402
from petra.optimizer.genome import OPENVINO, ORT, CandidateConfig  # noqa: E402
from petra.optimizer.records import Prefer, TrialState, pareto_front, pick_best  # noqa: E402
from petra.optimizer.search import expected_build_s  # noqa: E402
from petra.optimizer.space import handmade_config  # noqa: E402
from petra.optimizer.study import FINAL_POLICY, Study  # noqa: E402
from petra.profilers import fingerprint, interleaved_fastest  # noqa: E402

RUNTIMES = (ORT, OPENVINO)
NAMES = {"baseline": "FP32 baseline", "ort_ptq": "ORT INT8 QDQ PTQ", "nncf_ptq": "NNCF INT8 PTQ",
         "handmade": "hand-made prune50+KD+INT8", "random": "random search", "tpe": "Optuna TPE",
         "nsga2": "petra NSGA-II"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like petra's CLI
        raise ConfigError(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = _Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--runtime", default=ORT)
    ap.add_argument("--budget", type=float, required=True, help="wall minutes per searcher")
    ap.add_argument("--max-drop", type=float, default=1.0, help="constraint and HV reference, points")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--work", type=Path, default=None, help="keep the studies here (default: temp)")
    ap.add_argument("--final-sessions", type=int, default=RunConfig.model_fields["final_sessions"].default,
                    help="referee pass: interleaved rounds per figure (as a study's final_sessions)")
    ap.add_argument("--final-max-sessions", type=int,
                    default=RunConfig.model_fields["final_max_sessions"].default,
                    help="referee pass: most rounds while a figure's fastest is not reproduced")
    args = ap.parse_args(argv)
    load_config(final_sessions=args.final_sessions, final_max_sessions=args.final_max_sessions)
    if args.runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {args.runtime!r}")
    if not args.budget > 0:
        raise ConfigError(f"--budget must be > 0 minutes, got {args.budget:g}")
    if not args.max_drop > 0:
        raise ConfigError(f"--max-drop must be > 0, got {args.max_drop:g}")
    return args


@contextmanager
def own_stage_cache(work: Path, key: str):
    """PETRA_CACHE_DIR with the shared trained teachers but an empty stage cache of its own."""
    home = default_cache_dir()
    cache = work / f"cache-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "baselines").exists():
        os.symlink((home / "baselines").resolve(), cache / "baselines")
    old = os.environ.get("PETRA_CACHE_DIR")
    os.environ["PETRA_CACHE_DIR"] = str(cache)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PETRA_CACHE_DIR", None)
        else:
            os.environ["PETRA_CACHE_DIR"] = old


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.task = get_task(args.task)
        self.drop = self.task.metric.drop
        self.budget_s = args.budget * 60.0
        self.rows: dict[str, dict] = {}
        self.pending: dict[str, dict] = {}
        self.search_p50: dict[int, float] = {}

    def study(self, key: str, runtime: str, budget_s: float) -> Study:
        cfg = load_config(task=self.args.task, runtime=runtime, time_budget=budget_s, generations=1000,
                          population=8, output=self.work / key, progress="quiet", seed=self.args.seed,
                          max_drop=self.args.max_drop, final_sessions=self.args.final_sessions,
                          final_max_sessions=self.args.final_max_sessions)
        log = self.work / f"{key}.log"  # what the quiet study did: its messages, one line a trial

        def write(line: str) -> None:
            with open(log, "a") as f:
                f.write(line + "\n")

        return Study(cfg, task=self.task, log=write)

    def row(self, key: str, study: Study, trials: list, base, wall_s: float, notes: str,
            best=None, runtime: str | None = None) -> None:
        """Kept until the referee pass; ``best`` given = a single candidate, else a searcher."""
        front = [best] if best is not None else pareto_front(trials)
        self.pending[key] = {"study": study, "trials": trials, "front": front, "wall_s": wall_s,
                             "notes": notes, "single": best is not None,
                             "runtime": runtime or base.config.runtime, "study_baseline": base}

    def referee(self) -> None:
        """Every row's front (its returned set) and the FP32 baselines re-measured in one worker,
        in interleaved rounds (A B C A B C), so machine drift between the studies hits all rows
        alike; every ratio is then to the one main baseline measured in the same rounds."""
        singles = self.pending["baseline"]["study"]
        todo: list = []
        for key, p in self.pending.items():
            for t in ([*singles.baselines.values()] if key == "baseline"
                      else [p["study_baseline"], *p["front"]]):
                if t.measurement is not None and t.artifact and all(t is not o for o, _ in todo):
                    todo.append((t, p["study"]))
        merged = interleaved_fastest(  # the schedule of Study.remeasure
            [lambda t=t, study=study: singles.builder.measure(
                t.config, Artifact.of(study.out / t.artifact), FINAL_POLICY) for t, study in todo],
            lambda i, exc: print(f"compare: re-measuring {todo[i][0].config.key} failed ({exc}); "
                                 "keeping its search figure"),
            singles.cfg.final_sessions, singles.cfg.final_max_sessions)
        singles.builder.close()
        for i, (t, _) in enumerate(todo):
            new = t if merged[i] is None else replace(t, measurement=merged[i])  # trials are immutable
            self.search_p50[id(new)] = t.measurement.p50_ms
            if new is not t:
                self._swap(t, new)
        self.remeasured = sum(m is not None for m in merged)
        self._fastest_baselines()

    def _fastest_baselines(self) -> None:
        """Each runtime's FP32 baseline is the fastest of every study's, as re-measured here.
        Why: each study screens its baseline's settings once, and one noisy screen fixes a slow
        setting (on OSULeaf, af78ea0, the singles study timed 2 threads at 6.59 ms in a glitch and
        kept 1 thread, 2.33 ms; every searcher's study kept 2 threads, 1.4 ms): every ratio
        would then flatter compression by the glitch."""
        singles = self.pending["baseline"]["study"]
        for runtime, current in list(singles.baselines.items()):
            same = [p["study_baseline"] for p in self.pending.values()
                    if p["study_baseline"].config.runtime == runtime]
            fastest = min([current, *same], key=lambda t: t.measurement.p50_ms)
            if fastest is current:
                continue
            singles.baselines[runtime] = fastest
            if runtime == self.args.runtime:
                row = self.pending["baseline"]
                row["front"], row["trials"], row["study_baseline"] = [fastest], [fastest], fastest

    def _swap(self, old, new) -> None:
        """Every row that holds ``old`` holds its re-measured record instead."""
        for p in self.pending.values():
            p["front"] = [new if x is old else x for x in p["front"]]
            p["trials"] = [new if x is old else x for x in p["trials"]]
            if p["study_baseline"] is old:
                p["study_baseline"] = new
        baselines = self.pending["baseline"]["study"].baselines
        for runtime, b in list(baselines.items()):
            if b is old:
                baselines[runtime] = new

    def build_rows(self) -> None:
        singles = self.pending["baseline"]["study"]
        main = singles.baselines[self.args.runtime]
        for key, p in self.pending.items():
            trials = p["trials"]
            front = [t for t in p["front"] if t.measurement is not None]
            best = p["front"][0] if p["single"] else pick_best(pareto_front(front), main, Prefer.LATENCY)
            points = [self.point(t, main) for t in front]
            states = {s.value: sum(t.state is s for t in trials) for s in TrialState}
            row = {"name": NAMES[key], "runtime": p["runtime"], "trials": len(trials), "states": states,
                   "wall_s": p["wall_s"], "notes": p["notes"],
                   "best": self.point(best, main) if best is not None else {},
                   "best_is_baseline": best is main, "baseline": self.point(main, main),
                   "study_baseline_search_p50_ms": self.search_p50.get(
                       id(p["study_baseline"]), p["study_baseline"].measurement.p50_ms),
                   "study_baseline_p50_ms": p["study_baseline"].measurement.p50_ms,
                   "points": points, "hypervolume": report.front_hypervolumes(points, self.args.max_drop)}
            if "search" in p:
                row["search"] = p["search"]
            own = singles.baselines.get(p["runtime"], main)
            if key != "baseline" and own is not main and best is not None and best.measurement is not None:
                row["ratios_to_own_runtime_baseline"] = report.ratios(best, own, self.drop)
                row["own_runtime_baseline_p50_ms"] = own.measurement.p50_ms
            self.rows[key] = row

    def point(self, t, base) -> dict:
        out = report.point(t, base, self.drop)
        out["search_p50_ms"] = self.search_p50.get(id(t))
        return out

    # -- rows 1-4: the FP32 baseline and the single techniques ------------------------------
    def singles(self) -> None:
        t0 = time.monotonic()
        with own_stage_cache(self.work, "singles"):
            study = self.study("singles", "auto", 1e9)  # both runtimes: ORT PTQ and NNCF need each
            study.prepare()
            try:
                study.measure_baseline()
                main = study.baselines[self.args.runtime]
                self.row("baseline", study, [main], main, time.monotonic() - t0,
                         "FP32 at every thread count, the fastest kept", best=main)
                threads = {r: b.config.threads for r, b in study.baselines.items()}
                singles = {
                    "ort_ptq": CandidateConfig(precision=Precision.INT8_STATIC, per_channel=False,
                                               calibration=Calibration.MINMAX, threads=threads[ORT],
                                               runtime=ORT),
                    "nncf_ptq": CandidateConfig(precision=Precision.INT8_STATIC, threads=threads[OPENVINO],
                                                runtime=OPENVINO),
                    "handmade": handmade_config(threads[self.args.runtime], self.args.runtime),
                }
                notes = {
                    "ort_ptq": "one candidate: quantize_static defaults (QDQ, MinMax, per-tensor, "
                               "u8 act/s8 w)",
                    "nncf_ptq": "one candidate: nncf.quantize defaults (performance preset, fast bias "
                                "correction; subset 256), OpenVINO f32 hint for the float remainder",
                    "handmade": "one candidate: 50% channel pruning (L2, round 8) + 4 epochs KD "
                                "(weight 0.75, lr 1e-3) + static INT8 on the main runtime",
                }
                for key, config in singles.items():
                    t1 = time.monotonic()
                    trial = study.run_trial(config, 0)
                    # every ratio (and so the hypervolume) is to the main runtime's FP32 baseline
                    self.row(key, study, [trial], main, time.monotonic() - t1, notes[key],
                             best=trial, runtime=config.runtime)
                self.versions = study.versions()
            finally:
                study.builder.close()  # the referee pass restarts this study's worker

    # -- rows 5-6: random search and TPE, full fidelity through run_trial --------------------
    def loop(self, key: str, propose, tell=None) -> None:
        t0 = time.monotonic()
        with own_stage_cache(self.work, key):
            study = self.study(key, self.args.runtime, self.budget_s)
            study.prepare()
            try:
                base = study.measure_baseline()
                n_base, misses = len(study.trials), 0
                # elapsed, not out_of_time(): this loop re-measures nothing at its end (the referee
                # pass does, outside every row's budget), so no time is kept back for it
                while study.elapsed() < study.cfg.time_budget and misses < 200:
                    genome = propose(study)
                    config, before = study.space.decode(genome), len(study.trials)
                    # NSGA-II's guard: a build expected to overrun the budget does not start (one
                    # 24-epoch TPE trial overran a 15-min budget by 219 s); a cheaper one may
                    if study.elapsed() + expected_build_s(study.trials, config) > study.cfg.time_budget:
                        misses += 1
                        continue
                    trial = study.run_trial(config, 1)
                    misses = misses + 1 if len(study.trials) == before else 0
                    if tell is not None:
                        tell(study, trial, base)
                trials = study.trials[n_base:]
                notes = ("full fidelity (every candidate fine-tuned to its epochs), own stage cache "
                         "(shared by its own candidates only), search-policy timing (3% CI); its front "
                         "re-measured in the referee pass")
                self.row(key, study, trials, base, time.monotonic() - t0, notes)
            finally:
                study.builder.close()

    def random_search(self) -> None:
        rng = random.Random(self.args.seed)
        self.loop("random", lambda study: tuple(rng.randrange(s) for s in study.space.sizes))

    def tpe(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=self.args.seed)  # reads Trial.set_constraint
        opt = optuna.create_study(directions=["minimize", "minimize", "minimize"], sampler=sampler)
        asked = {}

        def propose(study):
            ot = opt.ask()
            asked["trial"] = ot
            return tuple(ot.suggest_categorical(n, list(range(s)))
                         for n, s in zip(study.space.gene_names, study.space.sizes))

        def tell(study, trial, base):
            ot = asked.pop("trial")
            if trial.measurement is None or trial.val is None:  # a failed build
                opt.tell(ot, state=optuna.trial.TrialState.FAIL)
                return
            drop = self.drop(base.val, trial.val)
            ot.set_constraint("drop", 0.0 if trial.state is TrialState.COMPLETE
                              else max(drop - self.args.max_drop, 1e-6))
            m, b = trial.measurement, base.measurement
            opt.tell(ot, [drop, m.p50_ms / b.p50_ms, m.size_bytes / b.size_bytes])

        self.loop("tpe", propose, tell)

    # -- row 7: petra -------------------------------------------------------------------------
    def nsga2(self) -> None:
        t0 = time.monotonic()
        with own_stage_cache(self.work, "nsga2"):
            study = self.study("nsga2", self.args.runtime, self.budget_s)
            study.run()
        base = study.baseline
        trials = [t for t in study.trials if t.generation >= 0]
        self.row("nsga2", study, trials, base, time.monotonic() - t0,
                 "petra as shipped: multi-fidelity halving, own stage cache, seeded with the FP32, "
                 "INT8-alone and hand-made configs, front re-measured by Study.run (its time kept "
                 "from the budget) and again in the referee pass")
        try:  # a check on the run: its failure must not lose the run's rows
            self.pending["nsga2"]["search"] = compare_seeds.search_record(study.out, self.drop)
        except (OSError, ValueError, KeyError) as exc:
            print(f"compare: beyond-the-seeds record skipped ({type(exc).__name__}: {exc})")

    def results(self, load_start, wall_s: float) -> dict:
        self.referee()
        self.build_rows()
        rows = {k: self.rows[k] for k in NAMES if k in self.rows}
        res = {
            "task": self.task.name, "runtime": self.args.runtime, "metric": self.task.metric.name,
            "budget_min": self.args.budget, "max_drop": self.args.max_drop, "seed": self.args.seed,
            "hypervolume_reference": {"drop": self.args.max_drop, "p50_ratio": 1.0, "ideal": [0.0, 0.0],
                                      "normalized": True},
            "baseline_summary": self.task.baseline_summary() or {},
            "machine": fingerprint(getattr(self, "versions", None)),
            "referee": {"measurements": getattr(self, "remeasured", 0),
                        "rounds": [self.args.final_sessions, self.args.final_max_sessions],
                        "policy": {"rel_ci": FINAL_POLICY.rel_ci, "max_time_s": FINAL_POLICY.max_time_s}},
            "load_start": load_start, "load_end": os.getloadavg(), "wall_s": wall_s, "rows": rows,
        }
        res["targets"] = report.targets(rows, self.args.max_drop)
        return res


def run(args: argparse.Namespace, work: Path) -> dict:
    t0, load_start = time.monotonic(), os.getloadavg()
    bench = Bench(args, work)
    bench.task.baseline(log=print)  # trained once, before and outside every budget
    for step in (bench.singles, bench.random_search, bench.tpe, bench.nsga2):
        s0 = time.monotonic()
        step()
        print(f"compare: {step.__name__} done in {time.monotonic() - s0:.0f}s", flush=True)
    s0 = time.monotonic()
    res = bench.results(load_start, time.monotonic() - t0)
    print(f"compare: referee re-measurement ({res['referee']['measurements']}) done in "
          f"{time.monotonic() - s0:.0f}s", flush=True)
    res["wall_s"] = time.monotonic() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"compare-{bench.task.name.replace(':', '_')}-{args.runtime}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str))
    md = report.markdown(res)
    stem.with_suffix(".md").write_text(md)
    stem.with_suffix(".svg").write_text(report.plot(res))
    print(md)
    return res


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.work is not None:
            run(args, args.work)
        else:
            with tempfile.TemporaryDirectory(prefix="petra-compare-") as tmp:
                run(args, Path(tmp))
        return 0
    except ConfigError as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
