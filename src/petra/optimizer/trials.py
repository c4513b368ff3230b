"""The trial book: every finished trial of a run, the FP32 baselines, and how an executor's
outcome becomes a record (its drop against the baseline, feasibility, its reason).

A trial is appended to the store, ``trials.jsonl`` and the sinks the moment it is recorded.
Records are immutable: a later figure (a re-measurement, a drop against the baseline chosen
after it) is a new record put in the old one's place, in the list and in the store alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from petra.executors import Executor, Job, Outcome
from petra.fidelity import Fidelity
from petra.models.base import Task
from petra.optimizer.events import Events
from petra.optimizer.genome import CandidateConfig
from petra.optimizer.records import Trial, TrialState, divergence, pareto_front
from petra.optimizer.store import StudyStore

#: see ``TrialBook.to_remeasure``: search figures are noisy (a 20% swing between runs is common
#: here), so a point up to this share slower than FP32 is still re-timed
REMEASURE_SLOWER = 1.25


def worth_remeasuring(bases: list[Trial], front: list[Trial]) -> list[Trial]:
    """``bases``, then the points of ``front`` within REMEASURE_SLOWER of the slowest of them,
    each once."""
    timed = [b.measurement.p50_ms for b in bases if b.measurement is not None]
    limit = REMEASURE_SLOWER * max(timed) if timed else float("inf")
    picks = [t for t in front if t.measurement is not None and t.measurement.p50_ms <= limit]
    out: dict[int, Trial] = {}
    for t in [*bases, *picks]:  # by number: a baseline on the front is one trial, not two
        out.setdefault(t.number, t)
    return list(out.values())


class TrialBook:
    def __init__(self, task: Task, max_drop: float, out: Path, store: StudyStore, events: Events,
                 clock: Callable[[], float], screened: bool = False) -> None:
        self.task, self.max_drop, self.out = task, max_drop, out
        self.store, self.events, self.clock = store, events, clock
        #: whether artifacts are screened at the runtime settings: a trial's config then holds
        #: the settings it was measured at, and ``by_key`` also finds it by the config that was
        #: asked for (its settings at their defaults), so that no genome is evaluated twice
        self.screened = screened
        #: where candidates are built and measured; set when the study starts it
        self.executor: Executor | None = None
        self.trials: list[Trial] = []
        self.by_key: dict[str, Trial] = {}
        #: the reference of every drop and ratio: the fastest FP32 baseline
        self.baseline: Trial | None = None
        #: the FP32 baseline of each runtime (f32 forced on OpenVINO)
        self.baselines: dict[str, Trial] = {}
        #: validation outputs by config key: paired-bootstrap bounds of the drop need them
        self.val_outputs: dict[str, object] = {}

    def load(self) -> None:
        """The finished trials and baselines of an earlier run in the store."""
        self.trials = self.store.trials()
        self.by_key = {k: t for t in self.trials for k in self._keys(t)}
        base = self.store.get_meta("baseline")
        self.baseline = self.trials[base] if base is not None else None
        self.baselines = {r: self.trials[n] for r, n in self.store.get_meta("baselines", {}).items()}
        self._complete_log()

    def _complete_log(self) -> None:
        """trials.jsonl is rewritten from the store when it lacks a stored trial: a kill between
        the store's commit and the append (or during the append) leaves the log short, and the
        store is the truth."""
        path = self.out / "trials.jsonl"
        logged = set()
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                logged.add(json.loads(line).get("trial"))
            except ValueError:  # a line cut short by the kill
                logged.add(None)
        if None in logged or any(t.number not in logged for t in self.trials):
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(t.entry(self.task.metric.name)) + "\n" for t in self.trials))
            tmp.replace(path)

    def set_baselines(self, baselines: dict[str, Trial], best: Trial) -> None:
        self.baselines, self.baseline = dict(baselines), best
        self.store.set_meta("baseline", best.number)
        self.store.set_meta("baselines", {r: b.number for r, b in self.baselines.items()})

    def front(self) -> list[Trial]:
        return pareto_front(self.trials)

    def to_remeasure(self) -> list[Trial]:
        """What the final re-measurement times, each once: the reference baseline first, the
        other baselines, then the front's points that can still be the pick. A point slower
        than REMEASURE_SLOWER x the slowest baseline at search time is on the front for its size
        alone, and the pick is never slower than FP32: on the default digits run (2026-12-02,
        e1a3cbf33584) dynamic INT8 alone at 3.3x FP32's p50 took most of the 136 s the final
        re-measurement spent, and the search stopped at 42 s of 180 to leave room for it."""
        bases = [b for b in (self.baseline, *self.baselines.values()) if b is not None]
        return worth_remeasuring(bases, self.front())

    # -- building ---------------------------------------------------------------------------
    def run_trial(self, config: CandidateConfig, generation: int, genome=None) -> Trial:
        """The recorded trial of ``config``: built and measured once, then from the book."""
        config = config.without_settings() if self.screened else config.canonical()
        return self.recorded(config) or self.record(self.build_trial(config, generation), genome)

    def recorded(self, config: CandidateConfig) -> Trial | None:
        """The trial of ``config`` if the book holds one (in a screened search, asked for at
        any setting)."""
        config = config.without_settings() if self.screened else config.canonical()
        return self.by_key.get(config.key)

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
            self.events.trial_start(len(self.trials) + i, generation, c.to_json())
        outcomes = self.executor.run(Job(i, c, fidelity) for i, c in enumerate(configs))
        try:
            for outcome in outcomes:
                yield outcome.job.index, self.judge(outcome, generation)
        finally:
            outcomes.close()

    def judge(self, outcome: Outcome, generation: int) -> Trial:
        """The record of an outcome: FAIL with its reason, or scored against the baseline and
        COMPLETE or INFEASIBLE by the drop feasibility is decided on."""
        config, built = outcome.job.config, outcome.built
        if built is not None:  # the config it was measured at (a screen's fastest setting)
            config = built.config
        if built is None:
            return Trial(number=len(self.trials), generation=generation, config=config,
                         state=TrialState.FAIL, reason=outcome.reason, elapsed_s=outcome.elapsed_s)
        self.val_outputs[config.key] = built.val_outputs
        base_val = self.baseline.val if self.baseline is not None else built.val
        drop = self.task.metric.drop(base_val, built.val)
        bounds = self._drop_bounds(config)
        decisive = bounds[1] if bounds is not None else drop
        state, reason = TrialState.COMPLETE, None
        if decisive > self.max_drop:
            state, reason = TrialState.INFEASIBLE, f"metric drop {decisive:.2f} > max_drop {self.max_drop}"
            if bounds is not None:
                reason += f" (upper {self.task.drop_confidence:.0%} bound; point {drop:.2f})"
        base_out = None if self.baseline is None else self.val_outputs.get(self.baseline.config.key)
        return Trial(number=len(self.trials), generation=generation, config=config, state=state,
                     reason=reason, val=built.val, test=built.test, drop=drop, drop_bounds=bounds,
                     divergence=divergence(base_out, built.val_outputs),
                     measurement=built.measurement, artifact=str(built.artifact.path.relative_to(self.out)),
                     stage_s=built.stage_s, elapsed_s=outcome.elapsed_s)

    def _drop_bounds(self, config: CandidateConfig) -> tuple[float, float] | None:
        """For tasks with small validation sets (``Task.drop_confidence``), the paired-bootstrap
        bounds of the drop: feasibility is then decided on the upper one."""
        if not self.task.drop_confidence or self.baseline is None:
            return None
        base_out = self.val_outputs.get(self.baseline.config.key)
        if base_out is None:
            return None
        return self.task.drop_interval(base_out, self.val_outputs[config.key])

    # -- the record -------------------------------------------------------------------------
    def record(self, trial: Trial, genome=None) -> Trial:
        """A finished trial goes to the store, trials.jsonl and the sinks at once."""
        trial = replace(trial, number=len(self.trials))
        self.trials.append(trial)
        self.by_key.update(dict.fromkeys(self._keys(trial), trial))
        self.store.save_trial(trial, genome)
        self.store.set_meta("elapsed_s", self.clock())
        entry = trial.entry(self.task.metric.name)
        with open(self.out / "trials.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.events.trial_end(entry)
        return trial

    def update(self, trial: Trial) -> Trial:
        """``trial``, a newer record of a recorded one, takes its place everywhere."""
        old = self.trials[trial.number]
        self.trials[trial.number] = trial
        self.by_key.update(dict.fromkeys(self._keys(trial), trial))
        self.baselines = {r: trial if b is old else b for r, b in self.baselines.items()}
        if self.baseline is old:
            self.baseline = trial
        self.store.update_trial(trial)
        return trial

    def _keys(self, trial: Trial) -> tuple[str, ...]:
        """The keys a trial answers to: its config's, and in a screened search also the key of
        the config that was asked for (every setting at its default)."""
        if not self.screened:
            return (trial.config.key,)
        return tuple(dict.fromkeys((trial.config.key, trial.config.without_settings().key)))
