"""The generation loop and its budget: NSGA-II over the search space, one batch of new
candidates per generation, stopped when the time left is what the final re-measurement needs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from petra.compression.depth import DEPTH_GENES
from petra.compression.pruning import stage_ratios
from petra.config import RunConfig
from petra.errors import stop_requested
from petra.exporters import Precision
from petra.optimizer.elitism import survivors
from petra.optimizer.events import Events
from petra.optimizer.genome import CandidateConfig, SearchSpace
from petra.optimizer.halving import SuccessiveHalving
from petra.optimizer.mutation import renew
from petra.optimizer.nsga import run_nsga2
from petra.optimizer.push import push_last
from petra.optimizer.records import FAILED, Trial, TrialState, pick_best
from petra.optimizer.repair import probe_evidence, repair_children
from petra.optimizer.sensitivity import (
    Sensitivity,
    describe,
    open_depth,
    open_stages,
    removes_blocks,
    sensitivity_seeds,
    skips_cheap_pass,
    stage_sensitivity,
)
from petra.optimizer.space import SLOW_PTQ, handmade_config, ptq_configs, seed_configs, slow_precisions
from petra.optimizer.stagnation import Stagnation, front_hypervolume
from petra.optimizer.trials import TrialBook
from petra.optimizer.twins import quantization, twin_configs


class Budget:
    """``time_budget`` is the whole run's wall time, the final re-measurement included."""

    def __init__(self, time_budget: float, final_sessions: float,
                 to_remeasure: Callable[[], list[Trial]], spent: float = 0.0) -> None:
        self.time_budget, self.final_sessions, self.to_remeasure = time_budget, final_sessions, to_remeasure
        self.start = time.monotonic() - spent  # a resumed run counts what was spent

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def final_reserve(self) -> float:
        """Seconds kept from the search for the final re-measurement: ``final_sessions``
        rounds of the current front and the baselines, each round as long as that trial's own
        search measurement (timing only: the metric's inference and the screen would inflate it).
        Without it a run re-measured after its budget was spent (docs/measurement.md). The study
        passes the midpoint of the final rounds' range (they go on until the fastest reproduces)
        over the sessions of a search figure: a final round is one session. Undivided, the
        default digits run (3 search sessions) kept 79 s for a re-measurement of 17 s and ended
        at 129 s of its 180."""
        return self.final_sessions * sum(t.stage_s.get("measure_s", 0.0) for t in self.to_remeasure())

    def out_of_time(self, next_s: float = 0.0) -> bool:
        """True when what is left is the final reserve, or would be once a candidate expected
        to take ``next_s`` finished: a build cannot be stopped part way."""
        if stop_requested():  # a Ctrl-C whose KeyboardInterrupt was lost in a finalizer
            raise KeyboardInterrupt
        return self.elapsed() + self.final_reserve() + next_s >= self.time_budget


#: NSGA-II's generation count when no cap is set: the budget or stagnation ends the run first
UNCAPPED = 10_000
#: the build steps (``<name>_s`` in a trial's stage_s) that train for the config's epochs
TRAINING_STAGES = ("sparsity_s", "lowrank_s", "finetune_s")
#: a PTQ config at or under this share of FP32's p50 is a clear choice for the seeds' precision:
#: the re-measurement swings seen here (the d64 transformer's dynamic INT8, 0.95x then 1.19x)
#: would not bring it back to FP32, so the seeds need no FP32 twins
CLEAR_PTQ = 0.75
def build_cost(cfg: CandidateConfig) -> tuple:
    """A sort key that puts the cheaper full builds of a batch first: fewer fine-tune epochs,
    then more blocks removed, then more pruned. Why: a budget that ends mid-batch should end it
    with as many candidates built as it allowed. On the d64 transformer at 180 s, a 39 s
    hand-made fine-tune went first and the block-removing seed (16 s, the run's best when built)
    did not fit after it."""
    ratios = stage_ratios(cfg)
    return cfg.epochs, -sum(getattr(cfg, g) for g in DEPTH_GENES), -sum(ratios) / len(ratios)


def expected_build_s(trials: list[Trial], cfg: CandidateConfig, fraction: float = 1.0) -> float:
    """What a full build of ``cfg`` is expected to take (0 when it trains nothing, or before
    the first full build in ``trials`` that trained): the median seconds per fine-tune epoch of
    those builds times its epochs (times ``fraction`` of its steps, for a cheap pass), plus the
    median of the rest of a build. Why per epoch:
    with epochs from 1 to 24 in one run, the median build (4 epochs, 17 s on fashion-mnist)
    said nothing of a 24-epoch one (75-100 s), which then overran the budget."""
    if cfg.epochs == 0:
        return 0.0
    done = [t for t in trials if t.config.epochs > 0 and t.elapsed_s
            and t.state is not TrialState.STOPPED_EARLY and "finetune_s" in t.stage_s]
    if not done:
        return 0.0
    train = [sum(t.stage_s.get(k, 0.0) for k in TRAINING_STAGES) for t in done]
    per_epoch = statistics.median(s / t.config.epochs for s, t in zip(train, done))
    rest = statistics.median(t.elapsed_s - s for s, t in zip(train, done))
    return per_epoch * cfg.epochs * fraction + max(0.0, rest)


class GenerationLoop:
    """NSGA-II's generations: each new genome is built once (the book caches by config key);
    the population is stored after every generation so that a resumed run continues it."""

    def __init__(self, cfg: RunConfig, space: SearchSpace, book: TrialBook, budget: Budget,
                 events: Events, on_generation: Callable[[list[Trial]], None],
                 halving: SuccessiveHalving | None = None,
                 removed: list[tuple[str, str]] | None = None) -> None:
        self.cfg, self.space, self.book, self.budget, self.events = cfg, space, book, budget, events
        #: called with the front after each generation (the results file is rewritten there)
        self.on_generation = on_generation
        self.halving = halving or SuccessiveHalving()
        #: the hand-made seeds and those that remove a block: always built at full fidelity (the
        #: other sensitivity-shaped ones go through the cheap pass like any other candidate)
        self.seed_keys: set[str] = set()
        self.completed = book.store.get_meta("generations_completed", 0)
        self.history: list[dict] = book.store.get_meta("history", [])
        self.stagnation = Stagnation(cfg.stagnation, book.store.get_meta("stagnation", None))
        #: why the loop ended early ("stagnated"), or None
        self.stopped: str | None = None
        #: (gene, reason) of what the run's space lost: the loop adds the slow PTQ precisions
        self.removed = removed if removed is not None else []
        #: each PTQ precision's p50 over FP32's, per runtime and weight scale (see slow_precisions)
        self._ptq_ratios: dict[Precision, list[float]] = {}

    def evaluate_batch(self, genomes: list[tuple[int, ...]], generation: int) -> list[list[float]]:
        """One generation's new candidates, their fitness in the order of ``genomes``. The
        hand-made seeds skip successive halving: they are there so the front holds at least what
        an expert would build by hand, and a short fine-tune under-rates exactly the aggressive
        pruning it needs (cdnow, with a cheap pass of 1 epoch on a quarter of the data:
        prune-50% + KD + INT8 scored 72.63 cheap and 73.87, the baseline's AUC, at full
        fidelity). So does any candidate that removes a block (``removes_blocks``). The cheap
        pass starts only if all of it is expected to fit: one cut short is thrown away (on
        ucr-OSULeaf, Xeon AMX VM, one ran from 760 s to 928 s of a 900 s budget for nothing)."""
        configs = [self.space.decode(g) for g in genomes]
        fresh: dict[str, int] = {}
        for i, c in enumerate(configs):
            if c.key not in self.book.by_key and c.key not in fresh:
                fresh[c.key] = i
        trainable = [i for i in fresh.values() if configs[i].epochs > 0
                     and configs[i].key not in self.seed_keys and not removes_blocks(configs[i])]
        step = self.halving.fidelity.step_fraction
        cheap_s = sum(expected_build_s(self.book.trials, configs[i], step) for i in trainable)
        if self.cfg.multi_fidelity and len(trainable) >= 2 and not self.budget.out_of_time(cheap_s):
            stopped = self.halving.stopped(self.book, configs, trainable, generation, self.budget.out_of_time)
            for i, t in stopped.items():
                self.book.record(t, genomes[i])
        full = sorted((i for i in fresh.values() if configs[i].key not in self.book.by_key),
                      key=lambda i: build_cost(configs[i]))
        if full and not self.budget.out_of_time(expected_build_s(self.book.trials, configs[full[0]])):
            self._twin_pass(self._full_pass(configs, full, genomes, generation), generation)
        return [self.book.by_key[c.key].fitness() if c.key in self.book.by_key else [FAILED] * 3
                for c in configs]

    def _full_pass(self, configs: list[CandidateConfig], full: list[int], genomes,
                   generation: int) -> list[Trial]:
        finished = self.book.build_trials([configs[i] for i in full], generation)
        left, built = set(range(len(full))), []
        try:
            for j, t in finished:
                built.append(self.book.record(t, genomes[full[j]]))
                left.discard(j)
                nxt = configs[full[min(left)]] if left else None
                if nxt is not None and self.budget.out_of_time(expected_build_s(self.book.trials, nxt)):
                    break
        finally:
            finished.close()
        return built

    def _twin_pass(self, built: list[Trial], generation: int) -> None:
        """The post-training twins of the batch's new trained candidates (``twin_configs``):
        seconds each, since their torch stage is cached. They join the book and the front; the
        population keeps the genomes NSGA-II made."""
        for t in built:
            base = self.book.baselines.get(t.config.runtime, self.book.baseline)
            twins = twin_configs(t, self.space, base, self.book.recorded, self.cfg.max_drop)
            if twins:
                self.events.message(f"twins of trial {t.number} ({t.config.precision.value}): "
                                    + ", ".join(map(quantization, twins)))
            for c in twins:
                if self.budget.out_of_time():
                    return
                self.book.run_trial(c, generation, self.space.encode(c))

    def _fastest_ptq(self, base: Trial, runtime: str) -> tuple[CandidateConfig, float]:
        """The hand-made seeds' quantization: the fastest feasible of FP32 and each
        post-training INT8 config the space offers (precision, per-channel or per-tensor),
        measured on this model (each PTQ config is a seed anyway; the book keeps it). Why: ORT's
        static INT8 suits convolutions and its dynamic INT8 MatMul and LSTM kernels; on a d64
        transformer static INT8 was 1.05x FP32's p50 and dynamic 0.95x, on a small depthwise CNN
        both were slower than FP32, and on ucr-OSULeaf only per-tensor kept the accuracy. With it,
        its p50 (FP32's when FP32 stays). A precision SLOW_PTQ x FP32 at its first weight scale
        skips its second here: same kernels (docs/search.md)."""
        best, fastest = base.config, base.measurement.p50_ms
        here: dict[Precision, list[float]] = {}  # this runtime's ratios
        for c in ptq_configs(base.config.threads, runtime, tuple(self.space.precision)):
            if self.budget.out_of_time():
                break
            if c.precision in slow_precisions(here):
                continue
            t = self._run_snapped(c)
            if t.measurement is not None:  # its speed, feasible or not
                here.setdefault(c.precision, []).append(t.measurement.p50_ms / base.measurement.p50_ms)
                self._ptq_ratios.setdefault(c.precision, []).append(here[c.precision][-1])
            if t.ok and t.measurement.p50_ms < fastest:
                best, fastest = t.config, t.measurement.p50_ms
        return best, fastest

    def _run_snapped(self, config: CandidateConfig) -> Trial:
        """The recorded trial of ``config`` snapped to the space's choices (a seed's probe)."""
        return self.book.run_trial(self.space.decode(self.space.encode(config)), 0)

    def _seeds(self) -> tuple[list[tuple[int, ...]], set[str]]:
        """The first population's seeds, and the keys of the hand-made ones among them."""
        seeds, handmade = [], []
        for runtime, base in self.book.baselines.items():
            threads, (ptq, ptq_p50) = base.config.threads, self._fastest_ptq(base, runtime)
            close = ptq_p50 / base.measurement.p50_ms > CLEAR_PTQ
            shaped = self._sensitivity_seeds(threads, runtime, ptq, close=close, ptq_p50=ptq_p50)
            configs = seed_configs(threads, runtime, shaped, screened=self.cfg.screen_settings,
                                   precision=ptq.precision, per_channel=ptq.per_channel)
            seeds += configs
            handmade += [c for c in configs if c not in shaped or skips_cheap_pass(c)]
        kept = self._drop_slow_precisions()
        seeds, handmade = ([c for c in cs if c.precision in kept] for cs in (seeds, handmade))
        return ([self.space.encode(c) for c in seeds],
                {self.space.decode(self.space.encode(c)).key for c in handmade})

    def _drop_slow_precisions(self) -> tuple[Precision, ...]:
        """Take the PTQ precisions that measured too slow to win (``slow_precisions``) out of
        the space, and say so; the precisions left. Their PTQ trials stay in the book."""
        slow = slow_precisions(self._ptq_ratios)
        kept = tuple(p for p in self.space.precision if p not in slow)
        if not slow or not kept:
            return tuple(self.space.precision)
        self.space = self.space.replace(precision=kept)
        removed = [("precision", f"{p.value} taken out: alone it ran {r:.1f}x FP32's p50, and "
                    f"{SLOW_PTQ}x or more on every runtime") for p, r in slow.items()]
        self.removed += removed
        self.events.genes_removed(removed)
        return kept

    def _sensitivity_seeds(self, threads: int, runtime: str, ptq: CandidateConfig,
                           close: bool, ptq_p50: float) -> list[CandidateConfig]:
        """Non-uniform seeds from one pruning pass per stage (once per run, on the first call).
        When the PTQ choice was ``close``, each is followed by its FP32 twin, which shares its
        torch stage and costs one measurement. Why: on the d64 transformer dynamic INT8 measured
        0.95x FP32 once and 1.19x in the final re-measurement; with the twins last, the
        population of 8 had no room for the FP32 twin of the block-removing seed (0.350x FP32
        where its twin had reached 0.308x). A clear choice needs no hedge, and the mild seed
        takes the room instead."""
        if not hasattr(self, "_sensitivity"):
            self._sensitivity = self._measure_sensitivity()
        if self._sensitivity is None:
            return []
        handmade = handmade_config(threads, runtime, ptq.precision, ptq.per_channel)
        sens = replace(self._sensitivity, depth_saved=self._depth_savings(ptq, ptq_p50))
        shaped = sensitivity_seeds(handmade, sens, self.space, mild=not close)
        if not close:
            return shaped
        twins = [c.replace(precision=Precision.FP32).canonical() for c in shaped]
        return [c for pair in zip(shaped, twins) for c in dict.fromkeys(pair)]

    def _measure_sensitivity(self) -> Sensitivity | None:
        n, depth = open_stages(self.space), open_depth(self.space)
        builder = getattr(self.book.executor, "builder", None)
        resumed = self.book.store.last_population() is not None
        if (n < 2 and not any(depth)) or resumed or getattr(builder, "teacher", None) is None:
            return None
        t0 = time.monotonic()
        try:
            sens = stage_sensitivity(builder.task, builder.teacher, n, depth=depth)
        except Exception as exc:  # a seed helps the search; it is never a reason to stop it
            self.events.message(f"sensitivity pass skipped ({type(exc).__name__}: {exc})")
            return None
        self.events.message(f"sensitivity: validation drop {describe(sens)} "
                            f"({time.monotonic() - t0:.1f}s)")
        return sens

    def _depth_savings(self, ptq: CandidateConfig, ptq_p50: float) -> tuple[float | None, ...]:
        """Per depth stage, the fraction of ``ptq``'s p50 (``ptq_p50``) saved by removing one
        block from that stage alone, each a recorded trial on this runtime (no fine-tune); empty
        where fewer than two stages are open, since there is nothing to rank. Why measured: the
        time a block takes is the runtime's, which its FLOPs do not tell (a ResNet's stages have
        about equal FLOPs per block, at very different activation sizes)."""
        drops = self._sensitivity.depth_drops
        if sum(d is not None for d in drops) < 2:
            return ()
        saved: list[float | None] = []
        for k, d in enumerate(drops):
            t = None
            if d is not None and not self.budget.out_of_time():
                t = self._run_snapped(ptq.replace(**{DEPTH_GENES[k]: 1}))
            # measured even when infeasible, as an untrained shortened model mostly is
            m = None if t is None else t.measurement
            saved.append(None if m is None else 1 - m.p50_ms / ptq_p50)
        shown = ", ".join("-" if s is None else f"{s:.0%}" for s in saved)
        self.events.message(f"sensitivity on {ptq.runtime}: p50 saved by removing one block from a "
                            f"depth stage alone: {shown}")
        return tuple(saved)

    def _stagnated(self, front: list[Trial]) -> bool:
        hv = front_hypervolume(front, self.book.baseline, self.cfg.max_drop)
        self.history[-1]["hypervolume_val"] = hv
        stop = self.stagnation.update(hv)
        self.book.store.set_meta("stagnation", self.stagnation.state())
        if stop:
            self.stopped = "stagnated"
            self.history[-1]["stopped"] = self.stopped
            self.events.message(f"search: the front has not improved for {self.stagnation.since} "
                                f"generations (validation hypervolume {self.stagnation.best:.3f}): "
                                "stopping before the budget is spent")
        return stop

    def summary(self, done: int, front: list[Trial]) -> dict:
        """What a generation's end reports: counts, time, the best pick's ratios."""
        base = self.book.baseline
        best = pick_best(front, base, self.cfg.prefer)
        return {
            "generation": done, "generations": self.cfg.generations,
            "trials": len(self.book.trials), "front_size": len(front),
            "elapsed_s": self.budget.elapsed(),
            "best": None if best is base else {
                "trial": best.number, "metric": best.val,
                "p50_ratio": best.measurement.p50_ms / base.measurement.p50_ms,
                "size_ratio": best.measurement.size_bytes / base.measurement.size_bytes,
            },
        }

    def _children(self, children: list) -> list:
        """A generation's children repaired (see ``repair``), those already built mutated again
        (``renew``), the last one a push (``push``)."""
        probes = probe_evidence(getattr(self, "_sensitivity", None), self.cfg.max_drop)
        fixed = repair_children(children, self.space, self.book.trials, self.events.message, probes)
        seed = self.cfg.seed + len(self.book.trials)
        built = {t.config.without_settings().key for t in self.book.trials}
        fixed, renewed = renew(fixed, self.space, built, np.random.default_rng(seed))
        if renewed:
            self.events.message(f"renew: {renewed} of {len(fixed)} children were built already; "
                                "each mutated again")
        return push_last(fixed, self.space, self.book.trials, self.cfg.max_drop, seed,
                         self.events.message)

    def run(self) -> None:
        """Seeded with the hand-made configs, or continued from the last stored population."""
        store = self.book.store
        seeds, self.seed_keys = self._seeds()
        start = self.completed
        stored = store.last_population()
        if stored is not None:  # resume: the last stored population, every finished trial cached
            start, seeds = stored
            self.completed = start
        else:  # what a run's best is checked against: a seed, or found by the search
            store.set_meta("seeds", sorted({self.space.decode(g).without_settings().key for g in seeds}))

        def on_generation(done: int, population) -> bool:
            store.save_population(done, population)
            if done == start:  # the starting population, before it is evaluated
                return self.budget.out_of_time()
            self.completed = done
            store.set_meta("generations_completed", done)
            front = self.book.front()
            self.history.append(self.summary(done, front))
            stagnated = self._stagnated(front)
            store.set_meta("history", self.history)
            self.events.generation_end(self.history[-1])
            self.on_generation(front)
            return stagnated or self.budget.out_of_time()

        cap = self.cfg.generations
        self.events.message(f"search: NSGA-II, population {self.cfg.population}, generations "
                            f"{start + 1}..{cap or 'until the budget'}, budget {self.cfg.time_budget:.0f}s, "
                            f"stop after {self.cfg.stagnation} without a better front")
        run_nsga2(self.space, self.evaluate_batch, generations=(cap or UNCAPPED) - start,
                  population=self.cfg.population, seeds=seeds, seed=self.cfg.seed,
                  on_generation=on_generation, start_generation=start, batched=True,
                  repair=self._children,
                  adopt=lambda pop: survivors(pop, self.space, self.book.trials, self.cfg.max_drop))
