"""Repair of GA children that change the model and train nothing, where the book shows that
an untrained change no larger than theirs already missed the constraint.

Why: uniform crossover between a trained model-changing parent (the deep seed: blocks removed,
24 epochs of distillation) and an untrained one (PTQ alone, FP32) gives many children the
architecture genes of the first and the epochs 0 of the second. On fashion-mnist (Xeon AMX VM,
15 min per searcher) 13 of 48 trials were untrained shortened or pruned models (10 of them such
children); all lost 1.7-83 points, and they filled the population the next parents came from.
Their shapes were never tried with the training that makes them work.

A child is repaired on evidence: pruning more channels or removing more blocks without
training is not expected to lose less than a smaller untrained change of the same kind, so
once a smaller such change was infeasible, the child is taken to be too. A small untrained
change can be feasible (one block of fashion-mnist's last stage removed untrained lost 0.23
points), and such children are left as they are. The evidence is the book's infeasible
untrained trials and the sensitivity pass's probes that lost more than the constraint allows
(see ``probe_evidence``). The repaired child takes the training genes
(the fine-tune's and the regularizer's) of the nearest feasible trained trial that changed the
model: the training that made a similar shape work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from petra.candidate import TORCH_GENES
from petra.compression.depth import DEPTH_GENES
from petra.compression.lowrank import LowRank
from petra.compression.pruning import STAGE_GENES, stage_ratios
from petra.compression.regularizers import Regularization
from petra.compression.training import FineTune
from petra.exporters import Precision
from petra.optimizer.genome import CandidateConfig, SearchSpace, graft
from petra.optimizer.records import Trial, TrialState
from petra.optimizer.sensitivity import PROBE_RATIO, Sensitivity

#: the genes that say how a changed model is trained, declared by their passes
TRAINING_GENES: tuple[str, ...] = tuple(g.name for p in (FineTune, Regularization) for g in p.genes)


def model_change(config: CandidateConfig) -> tuple[float, ...]:
    """How much ``config`` changes the torch model, per component: each depth stage's pruning
    ratio, blocks removed per depth stage, low-rank ratios. All zero: the model as given."""
    return (*stage_ratios(config), *(getattr(config, g, 0) for g in DEPTH_GENES),
            *(getattr(config, g.name) or 0.0 for g in LowRank.genes))


def changes_model(config: CandidateConfig) -> bool:
    return any(v > 0 for v in model_change(config))


def _at_most(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b))


@dataclass(frozen=True)
class Evidence:
    """An untrained model change known to miss the constraint: a trial, or a probe of the
    sensitivity pass. ``precision`` is None where the loss cannot be the quantization's."""

    change: tuple[float, ...]
    drop: float
    source: str
    precision: tuple | None = None


def trial_evidence(trials: Sequence[Trial]) -> list[Evidence]:
    """The book's infeasible untrained trials that changed the model. A quantized one is kept
    with its quantization: its loss may be the INT8's (on the AMD EPYC VM, per-channel INT8 alone
    lost 9 points on ucr-OSULeaf), so it speaks only for children quantized the same way."""
    return [Evidence(model_change(t.config), t.drop, f"trial {t.number}",
                     None if t.config.precision is Precision.FP32 else _quantization(t.config))
            for t in trials if t.state is TrialState.INFEASIBLE and t.config.epochs == 0
            and changes_model(t.config)]


def probe_evidence(sens: Sensitivity | None, max_drop: float) -> list[Evidence]:
    """The sensitivity pass's probes that lost more than ``max_drop``: each prunes one stage at
    PROBE_RATIO or removes one block of one depth stage, untrained, with its BatchNorms
    re-estimated (which an untrained build does not get), in FP32. Why: without them a pruned
    child had no evidence until an untrained pruned trial was built; in the fashion-mnist 10 min
    run (Xeon AMX VM) the book held none, and three untrained pruned children lost 5.2-83 points."""
    if sens is None:
        return []
    probes = [(CandidateConfig(**{STAGE_GENES[k]: PROBE_RATIO}), d, f"stage {k + 1}")
              for k, d in enumerate(sens.drops)]
    probes += [(CandidateConfig(**{DEPTH_GENES[k]: 1}), d, f"depth stage {k + 1}")
               for k, d in enumerate(sens.depth_drops) if d is not None]
    return [Evidence(model_change(c), d, f"the sensitivity probe of {what}")
            for c, d, what in probes if d > max_drop]


def _quantization(config: CandidateConfig) -> tuple:
    return config.precision, config.per_channel


def untrained_evidence(config: CandidateConfig, evidence: Sequence[Evidence]) -> Evidence | None:
    """Evidence whose change is at most ``config``'s in every component and whose loss can be
    ``config``'s: that ``config``, untrained, is infeasible too (None when there is none, or
    when ``config`` trains or changes nothing)."""
    if config.epochs > 0 or not changes_model(config):
        return None
    change, quant = model_change(config), _quantization(config)
    return next((e for e in evidence if _at_most(e.change, change)
                 and e.precision in (None, quant)), None)


def training_donor(config: CandidateConfig, trials: Sequence[Trial]) -> Trial | None:
    """The feasible trained trial that changed the model and is nearest to ``config`` (fewest
    torch genes apart, the training genes aside), the faster one on a tie."""
    others = [g for g in TORCH_GENES if g not in TRAINING_GENES]
    donors = [t for t in trials if t.ok and t.config.epochs > 0 and changes_model(t.config)]
    if not donors:
        return None
    return min(donors, key=lambda t: (sum(getattr(t.config, g) != getattr(config, g) for g in others),
                                      t.measurement.p50_ms))


def repair(genome: tuple[int, ...], space: SearchSpace, trials: Sequence[Trial],
           probes: Sequence[Evidence] = ()) -> tuple[tuple[int, ...], str | None]:
    """``genome``, or its repaired version with a line for the log saying why."""
    config = space.decode(genome)
    evidence = untrained_evidence(config, [*trial_evidence(trials), *probes])
    donor = training_donor(config, trials) if evidence is not None else None
    if donor is None:
        return genome, None
    fixed = graft(space, genome, donor.config, TRAINING_GENES)
    if fixed == tuple(genome):
        return genome, None
    why = (f"repair: a child changes the model untrained, as {evidence.source} did with a "
           f"smaller change (lost {evidence.drop:.2f}); it trains like trial {donor.number} "
           f"({donor.config.epochs} epochs, {donor.config.regularizer.value})")
    return fixed, why


def repair_children(children: list[tuple[int, ...]], space: SearchSpace, trials: Sequence[Trial],
                    log: Callable[[str], None], probes: Sequence[Evidence] = ()) -> list[tuple[int, ...]]:
    """NSGA-II's children after crossover and mutation, each through ``repair`` (``probes``:
    see ``probe_evidence``); the reason of each repair goes to ``log``."""
    out = []
    for child in children:
        fixed, why = repair(child, space, trials, probes)
        if why:
            log(why)
        out.append(fixed)
    return out
