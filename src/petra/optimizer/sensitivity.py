"""A cheap per-stage sensitivity pass that seeds the first population with non-uniform pruning.

Why: a GA that starts from uniform ratios and random genomes needs generations to find out
which depths tolerate pruning; one pass that prunes each stage alone, re-estimates the
BatchNorms and scores the validation split (no training, seconds on a small model) says it up
front. The seeds then prune the stages that lost least the hardest (the shape AMC and NetAdapt
learn with many more evaluations), and the evolution refines them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from petra.candidate import CandidateConfig, SearchSpace
from petra.compression.depth import DEPTH_GENES, drop_blocks, ranking_inputs
from petra.compression.pruning import STAGE_GENES, StructuredPruning, recalibrate_bn
from petra.compression.training import predict

#: the ratio each stage is pruned at, alone, to measure how much the metric minds
PROBE_RATIO = 0.5
#: the mean ratios of the seeded non-uniform configs: one moderate, one aggressive
SEED_MEANS = (0.5, 0.7)
#: the mean of the mild seed, added last and built at full fidelity. Why: under a tight
#: constraint every seed at 0.5 or more can be infeasible (ucr-OSULeaf at --max-drop 3, the
#: baseline at 100% on 88 validation series: prune-50% + KD lost 2 series, a bound of 4.55
#: points), and the cheap pass ranks the fastest first, so it would stop the mild one first.
MILD_MEAN = 0.3
SPREAD = 0.3
#: the mean ratio of the seed that also removes a block: the block is most of its compression
#: (cdnow d64 transformer, one of two blocks removed: at mean 0.5, 1.50 points lost after the
#: fine-tune; the 600 s search's winner pruned the remaining block 60%, mean 0.3 here)
DEPTH_SEED_MEAN = 0.3
#: the deep seed (one block removed from every open depth stage but the costliest, see Sensitivity)
#: needs at least this many open stages: with fewer it is the block-removing seed again, which
#: then takes the deep seed's longest fine-tune. Why: cdnow's 2-layer GRU without its second
#: layer lost 1.62 points after 4 epochs of KD and 0.03 (test) after 24 (docs/benchmarks.md)
DEEP_MIN_STAGES = 3


@dataclass(frozen=True)
class Sensitivity:
    #: validation drop (points, positive = worse) with each stage pruned alone at PROBE_RATIO
    drops: tuple[float, ...]
    #: the same with one block removed from each depth stage alone (None: the stage is closed)
    depth_drops: tuple[float | None, ...] = ()
    #: per depth stage, the fraction of the p50 that removing one block saved, measured on the
    #: runtime (empty, or None for an open stage: not measured, and the drop alone ranks)
    depth_saved: tuple[float | None, ...] = ()

    def depths_by_cost(self) -> list[int]:
        """The open depth stages, the cheapest block removal first: the least validation drop
        per fraction of p50 saved where every open stage's saving was measured, else the least
        drop. Why per saving: what a seed buys with a block is time, and blocks need not cost the
        same (one block of the tiny digits CNN's third stage saved 12% of the p50, of its first
        two 25-26%). Where they do (fashion-mnist's ResNet: 13-17% each), the drop alone ranks."""
        open_ = [k for k, d in enumerate(self.depth_drops) if d is not None]
        saved = dict(enumerate(self.depth_saved))
        if open_ and all(saved.get(k) is not None for k in open_):
            def cost(k: int) -> tuple[float, float]:
                s = saved[k]
                return (max(self.depth_drops[k], 0.0) / s if s > 0 else math.inf), -s
            return sorted(open_, key=cost)
        return sorted(open_, key=lambda k: (self.depth_drops[k], k))

    def least_sensitive_depth(self) -> int | None:
        """The depth stage whose block removal cost least, or None when no stage may lose one."""
        return next(iter(self.depths_by_cost()), None)

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


def stage_sensitivity(task, teacher, n_stages: int, ratio: float = PROBE_RATIO,
                      depth: tuple[bool, ...] = ()) -> Sensitivity:
    """Each stage pruned alone at ``ratio``, and one block removed from each depth stage
    ``depth`` opens, alone (BatchNorms re-estimated, no training), scored on the validation split
    against the unmodified model."""
    base = task.metric(predict(teacher, task.val.x), task.val.y)

    def drop_after(change) -> float:
        model = copy.deepcopy(teacher)
        change(model)
        recalibrate_bn(model, task.train.x)
        return task.metric.drop(base, task.metric(predict(model, task.val.x), task.val.y))

    def pruned(k: int):
        stages = tuple(ratio if i == k else 0.0 for i in range(n_stages))
        return lambda m: StructuredPruning.prune(m, task.example_input, ratio=0.0, round_to=1,
                                                 stage_ratios=stages)

    calibration = ranking_inputs(task.train.x)

    def shortened(k: int):
        per_stage = tuple(1 if i == k else 0 for i in range(len(depth)))
        return lambda m: drop_blocks(m, task.example_input, per_stage, inputs=calibration)

    return Sensitivity(tuple(drop_after(pruned(k)) for k in range(n_stages)),
                       tuple(drop_after(shortened(k)) if on else None for k, on in enumerate(depth)))


def open_stages(space: SearchSpace) -> int:
    """How many depth stages the run's space lets the search set (0: uniform pruning only)."""
    return sum(1 for g in STAGE_GENES if len(getattr(space, g)) > 1)


def open_depth(space: SearchSpace) -> tuple[bool, ...]:
    """Per depth stage, whether the space lets the search remove a block from it."""
    return tuple(len(getattr(space, g, (0,))) > 1 for g in DEPTH_GENES)


def removes_blocks(config: CandidateConfig) -> bool:
    """Whether the config removes a residual block. Such a candidate is built at full fidelity,
    seed or child: a cheap pass scores the shortened model long before distillation has
    recovered what the block added. On the cdnow d64 transformer, one of two blocks removed was
    stopped by the cheap pass, while the same shape won a 600 s run at 0.306x FP32's p50. On
    fashion-mnist (Xeon AMX VM) a child with two blocks removed and 24 epochs of KD was stopped
    at a cheap drop of 17.6 points; another with the same blocks removed, built in full, lost
    0.26. The evidence is mixed: in the next run six such children were built in full, one was
    feasible (its INT8 twin ran 0.147x FP32), and the one stopped before lost 4.28 in full."""
    return any(getattr(config, g, 0) for g in DEPTH_GENES)


def skips_cheap_pass(seed: CandidateConfig) -> bool:
    """A seed built at full fidelity, like the hand-made ones: one that removes a block
    (``removes_blocks``), and the mild seed (see MILD_MEAN)."""
    return removes_blocks(seed) or 0.0 < seed.prune_ratio <= MILD_MEAN


def sensitivity_seeds(template: CandidateConfig, sens: Sensitivity, space: SearchSpace,
                      mild: bool = False) -> list[CandidateConfig]:
    """``template`` (the hand-made recipe) with each SEED_MEANS's per-stage ratios, snapped to
    the choices the space offers; after the moderate one, one that removes a block from the depth
    stage that minded it least and prunes at DEPTH_SEED_MEAN (distillation then recovers what the
    block added), and the middle and deep seeds (see ``deep_seeds``; without them, the
    block-removing seed trains as long); with ``mild``, last, the MILD_MEAN one."""
    seeds = [_shaped(template, sens, space, mean) for mean in SEED_MEANS + ((MILD_MEAN,) if mild else ())]
    k = sens.least_sensitive_depth()
    if k is not None:
        shallow = _shaped(template, sens, space, DEPTH_SEED_MEAN)
        deep = deep_seeds(shallow, sens, space)
        shortened = shallow.replace(**{DEPTH_GENES[k]: 1})
        if not deep:  # the one seed that removes a block: it gets the deep seed's fine-tune
            shortened = shortened.replace(epochs=max(space.epochs))
        seeds[1:1] = [shortened.canonical(), *deep]
    return seeds


def deep_seeds(shallow: CandidateConfig, sens: Sensitivity, space: SearchSpace) -> list[CandidateConfig]:
    """``shallow`` with one block removed from every open depth stage but the costliest one (see
    ``Sensitivity.depths_by_cost``), and the longest fine-tune the space offers (none below
    DEEP_MIN_STAGES open stages); before it, where half the open stages are two or more, the
    middle seed: the same with blocks removed from the cheapest half only.
    Why deep: on fashion-mnist's ResNet the p50 of a pruned INT8 model stops falling past 50%
    pruning (70% measured 0.0676 ms, 50% 0.0655), since what is left is per-layer work; removing
    three of its four blocks and fine-tuning 24 epochs measured 0.0434 ms at 0.36 points of
    validation drop, where 4 epochs of the same lose points. The GA reaches such a shape rarely
    within a 10-15 min budget (2 of 28 candidates had 24 epochs), so the seed starts there.
    Why middle: on OSULeaf's InceptionTime the deep seed (three of the five removable modules)
    lost 4 of 88 validation series after 24 epochs, the one-block seed left most of the time in
    place (0.291x), and two modules removed with 24 epochs kept every series (0.287 ms, ~0.19x)."""
    order = sens.depths_by_cost()
    if len(order) < DEEP_MIN_STAGES or max(space.epochs) == 0:
        return []
    shapes = ([order[:len(order) // 2]] if len(order) // 2 >= 2 else []) + [order[:-1]]
    long = shallow.replace(epochs=max(space.epochs))
    return [long.replace(**{DEPTH_GENES[k]: 1 for k in ks}).canonical() for ks in shapes]


def _shaped(template: CandidateConfig, sens: Sensitivity, space: SearchSpace, mean: float) -> CandidateConfig:
    stages = {}
    for gene, r in zip(STAGE_GENES, sens.ratios(mean)):
        offered = [c for c in getattr(space, gene) if c is not None]
        stages[gene] = min(offered, key=lambda c: abs(c - r)) if offered else None
    return template.replace(prune_ratio=mean, **stages).canonical()


def describe(sens: Sensitivity) -> str:
    """The sensitivity pass's drops as the log states them."""
    parts = []
    if sens.drops:
        parts.append(f"with one depth stage pruned {PROBE_RATIO:.0%} alone: "
                     + ", ".join(f"{d:.2f}" for d in sens.drops))
    if any(d is not None for d in sens.depth_drops):
        parts.append("with one block removed from a depth stage alone: " + ", ".join(
            "-" if d is None else f"{d:.2f}" for d in sens.depth_drops))
    return "; ".join(parts)
