"""Trial records, objectives with constraint-domination, the Pareto front and the best pick.

PyGAD's NSGA-II maximises every objective and knows no constraints. Constraint-domination
(Deb 2000) is encoded in the fitness itself: a feasible candidate's fitness is
(-drop, -p50, -size), the drop being the metric lost against the FP32 baseline in the
metric's own direction (``Metric.drop``), so an MSE is minimised like an accuracy is
maximised; an infeasible one gets the same very low value on every objective,
lower the larger its violation, so any feasible candidate dominates any infeasible one and
infeasible candidates are ranked by violation alone. A failed build is worse than both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from petra.optimizer.genome import CandidateConfig
from petra.optimizer.prefer import Prefer
from petra.profilers.measure import Measurement

INFEASIBLE_BASE = -1e6
FAILED = -1e9
#: the weight of a trial's output divergence (``divergence``, at most 1) in its drop objective:
#: far below any difference of drops that means something, so it only orders equal drops
TIE_WEIGHT = 1e-6


def divergence(base: np.ndarray | None, outputs: np.ndarray | None) -> float | None:
    """How far a candidate's validation outputs are from the baseline's: their mean squared
    difference over the variance of the baseline's, clipped to 1 (None where either is missing
    or the shapes differ). Scores, logits or regression outputs alike: the metric is not asked.

    Why: a small validation split saturates. On ucr-OSULeaf the baseline is right on all 88
    validation series, and so were four candidates of a 15 min run (Xeon AMX VM, OpenVINO):
    INT8 alone at 0.52x FP32's p50, prune 30% + KD + INT8 at 0.44x, and two pruned 70-80% at
    0.36-0.37x. The fastest dominated the others, and the front was that one point; on the 89
    test series it lost one or two, the 0.44x one none. At an equal drop, the candidate closer
    to the baseline's outputs is the safer one, and it stays on the front beside the faster."""
    if base is None or outputs is None:
        return None
    base, outputs = np.asarray(base, dtype=np.float64), np.asarray(outputs, dtype=np.float64)
    if base.shape != outputs.shape or base.size == 0:
        return None
    spread = float(base.var())
    return min(1.0, float(np.mean((outputs - base) ** 2)) / spread) if spread > 0 else None


class TrialState(str, Enum):
    COMPLETE = "COMPLETE"
    INFEASIBLE = "INFEASIBLE"
    FAIL = "FAIL"
    #: stopped after its low-fidelity evaluation (successive halving); once spelled "PRUNED"
    STOPPED_EARLY = "STOPPED"

    @classmethod
    def _missing_(cls, value):
        """Stores and results.json written before the rename still read."""
        return cls.STOPPED_EARLY if value == "PRUNED" else None


@dataclass(frozen=True)
class Trial:
    """A finished trial: an immutable record; a change of state is a new record
    (``dataclasses.replace``) that the study puts in place of the old one."""

    number: int
    generation: int
    config: CandidateConfig
    state: TrialState
    reason: str | None = None
    val: float | None = None
    test: float | None = None
    drop: float | None = None
    #: (lower, upper) one-sided bounds of the drop when the task decides on a confidence bound
    drop_bounds: tuple[float, float] | None = None
    #: ``divergence`` of its validation outputs from the baseline's (None: not known)
    divergence: float | None = None
    measurement: Measurement | None = None
    artifact: str | None = None
    stage_s: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state is TrialState.COMPLETE

    def fitness(self) -> list[float]:
        """Every objective higher-is-better. The metric's is the negated drop, not the raw
        metric: maximising a raw MSE would search for the worst model; at equal drops, the
        divergence from the baseline's outputs orders them (see ``divergence``)."""
        if self.state is TrialState.FAIL or self.measurement is None:
            return [FAILED] * 3
        if self.state in (TrialState.INFEASIBLE, TrialState.STOPPED_EARLY):
            return [INFEASIBLE_BASE - max(0.0, float(self.drop or 0.0))] * 3
        tie = TIE_WEIGHT * (self.divergence or 0.0)
        return [-float(self.drop) - tie, -self.measurement.p50_ms, -self.measurement.size_bytes / 1e6]

    def entry(self, metric_name: str) -> dict:
        """The ENTRY shape of results.json; measurement figures flattened beside the config."""
        out = {
            "trial": self.number,
            "generation": self.generation,
            "state": self.state.value,
            "key": self.config.key,
            "config": self.config.to_json(),
            "metric": {"name": metric_name, "val": self.val, "test": self.test, "drop_val": self.drop},
            "artifact": self.artifact,
            "stage_s": self.stage_s,
            "elapsed_s": self.elapsed_s,
        }
        if self.drop_bounds is not None:
            out["metric"]["drop_val_bounds"] = list(self.drop_bounds)
        if self.divergence is not None:
            out["metric"]["divergence_val"] = self.divergence
        if self.reason:
            out["reason"] = self.reason
        if self.measurement is not None:
            out.update(self.measurement.to_json())
        return out


def better(fa: Sequence[float], fb: Sequence[float]) -> bool:
    """Pareto dominance of two maximised objective vectors."""
    return all(x >= y for x, y in zip(fa, fb)) and any(x > y for x, y in zip(fa, fb))


def dominates(a: Trial, b: Trial) -> bool:
    return better(a.fitness(), b.fitness())


def nondominated_rank(trials: list[Trial],
                      objectives: Callable[[Trial], Sequence[float]] = Trial.fitness) -> list[int]:
    """NSGA-II front index of each trial (0 = non-dominated), by constraint-domination."""
    points = [objectives(t) for t in trials]
    rank = [0] * len(trials)
    left = set(range(len(trials)))
    level = 0
    while left:
        front = {i for i in left if not any(better(points[j], points[i]) for j in left if j != i)}
        for i in front:
            rank[i] = level
        left -= front
        level += 1
    return rank


def pareto_front(trials: list[Trial]) -> list[Trial]:
    """Non-dominated feasible trials, one per distinct config, ordered by latency."""
    ok = [t for t in trials if t.ok]
    front = [t for t in ok if not any(dominates(o, t) for o in ok if o is not t)]
    return sorted(front, key=lambda t: (t.measurement.p50_ms, t.measurement.size_bytes))


def pick_best(candidates: list[Trial], baseline: Trial, prefer: Prefer) -> Trial:
    """The feasible candidate best on ``prefer``; never one slower than the baseline.

    When nothing qualifies the baseline itself is the answer: shipping the FP32 model is
    always better than shipping something slower or less accurate.
    """
    base_p50 = baseline.measurement.p50_ms
    eligible = [t for t in candidates if t.ok and t.measurement.p50_ms <= base_p50]
    if not eligible:
        return baseline
    if prefer is Prefer.SIZE:
        return min(eligible, key=lambda t: (t.measurement.size_bytes, t.measurement.p50_ms))
    if prefer is Prefer.THROUGHPUT:
        return max(eligible, key=lambda t: (t.measurement.throughput_sps, -t.measurement.p50_ms))
    return min(eligible, key=lambda t: (t.measurement.p50_ms, t.measurement.size_bytes))
