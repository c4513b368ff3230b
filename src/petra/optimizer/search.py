"""The generation loop and its budget: NSGA-II over the search space, one batch of new
candidates per generation, stopped when the time left is what the final re-measurement needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from petra.config import RunConfig
from petra.errors import stop_requested
from petra.optimizer.events import Events
from petra.optimizer.genome import CandidateConfig, SearchSpace
from petra.optimizer.halving import SuccessiveHalving
from petra.optimizer.nsga import run_nsga2
from petra.optimizer.records import FAILED, Trial, pick_best
from petra.optimizer.space import seed_configs
from petra.optimizer.trials import TrialBook


class Budget:
    """``time_budget`` is the whole run's wall time, the final re-measurement included."""

    def __init__(self, time_budget: float, final_sessions: int,
                 to_remeasure: Callable[[], list[Trial]], spent: float = 0.0) -> None:
        self.time_budget, self.final_sessions, self.to_remeasure = time_budget, final_sessions, to_remeasure
        self.start = time.monotonic() - spent  # a resumed run counts what was spent

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def final_reserve(self) -> float:
        """Seconds kept from the search for the final re-measurement: ``final_sessions``
        rounds of the current front and the baselines, each as long as that trial's own search
        measurement (with the metric's inference, an upper bound). Without it a run re-measured
        after its budget was spent: NSGA-II took 406 s of a 150 s budget on ucr-GunPoint."""
        return self.final_sessions * sum(t.stage_s.get("measure_s", 0.0) for t in self.to_remeasure())

    def out_of_time(self) -> bool:
        if stop_requested():  # a Ctrl-C whose KeyboardInterrupt was lost in a finalizer
            raise KeyboardInterrupt
        return self.elapsed() + self.final_reserve() >= self.time_budget


class GenerationLoop:
    """NSGA-II's generations: each new genome is built once (the book caches by config key);
    the population is stored after every generation so that a resumed run continues it."""

    def __init__(self, cfg: RunConfig, space: SearchSpace, book: TrialBook, budget: Budget,
                 events: Events, on_generation: Callable[[list[Trial]], None],
                 halving: SuccessiveHalving | None = None) -> None:
        self.cfg, self.space, self.book, self.budget, self.events = cfg, space, book, budget, events
        #: called with the front after each generation (the results file is rewritten there)
        self.on_generation = on_generation
        self.halving = halving or SuccessiveHalving()
        #: the seeded configs (hand-made pipeline among them): always built at full fidelity
        self.seed_keys: set[str] = set()
        self.completed = book.store.get_meta("generations_completed", 0)
        self.history: list[dict] = book.store.get_meta("history", [])

    def evaluate_batch(self, genomes: list[tuple[int, ...]], generation: int) -> list[list[float]]:
        """One generation's new candidates, their fitness in the order of ``genomes``. Seeded
        configs skip successive halving: they are there so the front holds at least what an
        expert would build by hand, and one epoch on a quarter of the data under-rates exactly
        the aggressive pruning it needs (cdnow: prune-50% + KD + INT8 scored 72.63 cheap and
        73.87, the baseline's AUC, at full fidelity)."""
        configs = [self.space.decode(g) for g in genomes]
        fresh: dict[str, int] = {}
        for i, c in enumerate(configs):
            if c.key not in self.book.by_key and c.key not in fresh:
                fresh[c.key] = i
        trainable = [i for i in fresh.values()
                     if configs[i].epochs > 0 and configs[i].key not in self.seed_keys]
        if self.cfg.multi_fidelity and len(trainable) >= 2 and not self.budget.out_of_time():
            stopped = self.halving.stopped(self.book, configs, trainable, generation, self.budget.out_of_time)
            for i, t in stopped.items():
                self.book.record(t, genomes[i])
        full = [i for i in fresh.values() if configs[i].key not in self.book.by_key]
        if full and not self.budget.out_of_time():
            self._full_pass(configs, full, genomes, generation)
        return [self.book.by_key[c.key].fitness() if c.key in self.book.by_key else [FAILED] * 3
                for c in configs]

    def _full_pass(self, configs: list[CandidateConfig], full: list[int], genomes, generation: int) -> None:
        finished = self.book.build_trials([configs[i] for i in full], generation)
        try:
            for j, t in finished:
                self.book.record(t, genomes[full[j]])
                if self.budget.out_of_time():
                    break
        finally:
            finished.close()

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

    def run(self) -> None:
        """Seeded with the hand-made configs on each runtime's baseline threads, or continued
        from the last stored population."""
        store = self.book.store
        seeds = [self.space.encode(c) for r, b in self.book.baselines.items()
                 for c in seed_configs(b.config.threads, r)]
        self.seed_keys = {self.space.decode(g).key for g in seeds}
        start = self.completed
        stored = store.last_population()
        if stored is not None:  # resume: the last stored population, every finished trial cached
            start, seeds = stored
            self.completed = start

        def on_generation(done: int, population) -> bool:
            store.save_population(done, population)
            if done == start:  # the starting population, before it is evaluated
                return self.budget.out_of_time()
            self.completed = done
            store.set_meta("generations_completed", done)
            front = self.book.front()
            self.history.append(self.summary(done, front))
            store.set_meta("history", self.history)
            self.events.generation_end(self.history[-1])
            self.on_generation(front)
            return self.budget.out_of_time()

        self.events.message(f"search: NSGA-II, population {self.cfg.population}, generations "
                            f"{start + 1}..{self.cfg.generations}, budget {self.cfg.time_budget:.0f}s")
        run_nsga2(self.space, self.evaluate_batch, generations=self.cfg.generations - start,
                  population=self.cfg.population, seeds=seeds, seed=self.cfg.seed,
                  on_generation=on_generation, start_generation=start, batched=True)
