"""A cheap per-stage sensitivity pass that seeds the first population with non-uniform pruning.

Why: a GA that starts from uniform ratios and random genomes needs generations to find out
which depths tolerate pruning; one pass that prunes each stage alone, re-estimates the
BatchNorms and scores the validation split (no training, seconds on a small model) says it up
front. The seeds then prune the stages that lost least the hardest (the shape AMC and NetAdapt
learn with many more evaluations), and the evolution refines them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from petra.candidate import CandidateConfig, SearchSpace
from petra.compression.pruning import STAGE_GENES, StructuredPruning, recalibrate_bn
from petra.compression.training import predict

#: the ratio each stage is pruned at, alone, to measure how much the metric minds
PROBE_RATIO = 0.5
#: the mean ratios of the seeded non-uniform configs: one moderate, one aggressive
SEED_MEANS = (0.5, 0.7)
SPREAD = 0.3


@dataclass(frozen=True)
class Sensitivity:
    #: validation drop (points, positive = worse) with each stage pruned alone at PROBE_RATIO
    drops: tuple[float, ...]

    def ratios(self, mean: float) -> tuple[float, ...]:
        """Per-stage ratios averaging ``mean``: the least sensitive stage gets the most."""
        n = len(self.drops)
        if n < 2:
            return (mean,) * n
        ladder = [mean + SPREAD * (1 - 2 * i / (n - 1)) for i in range(n)]  # high to low
        ladder = [round(min(0.9, max(0.0, r)), 1) for r in ladder]
        order = sorted(range(n), key=lambda k: self.drops[k])  # least sensitive first
        out = [0.0] * n
        for rank, k in enumerate(order):
            out[k] = ladder[rank]
        return tuple(out)


def stage_sensitivity(task, teacher, n_stages: int, ratio: float = PROBE_RATIO) -> Sensitivity:
    """Each stage pruned alone at ``ratio`` (BatchNorms re-estimated, no training), scored on
    the validation split against the unpruned model."""
    base = task.metric(predict(teacher, task.val.x), task.val.y)
    drops = []
    for k in range(n_stages):
        model = copy.deepcopy(teacher)
        stages = tuple(ratio if i == k else 0.0 for i in range(n_stages))
        StructuredPruning.prune(model, task.example_input, ratio=0.0, round_to=1, stage_ratios=stages)
        recalibrate_bn(model, task.train.x)
        drops.append(task.metric.drop(base, task.metric(predict(model, task.val.x), task.val.y)))
    return Sensitivity(tuple(drops))


def open_stages(space: SearchSpace) -> int:
    """How many depth stages the run's space lets the search set (0: uniform pruning only)."""
    return sum(1 for g in STAGE_GENES if len(getattr(space, g)) > 1)


def sensitivity_seeds(template: CandidateConfig, sens: Sensitivity,
                      space: SearchSpace) -> list[CandidateConfig]:
    """``template`` (the hand-made recipe) with each SEED_MEANS's per-stage ratios, snapped to
    the choices the space offers."""
    seeds = []
    for mean in SEED_MEANS:
        stages = {}
        for gene, r in zip(STAGE_GENES, sens.ratios(mean)):
            offered = [c for c in getattr(space, gene) if c is not None]
            stages[gene] = min(offered, key=lambda c: abs(c - r)) if offered else None
        seeds.append(template.replace(prune_ratio=mean, **stages).canonical())
    return seeds
