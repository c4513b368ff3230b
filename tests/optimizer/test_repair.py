"""Repair of children that change the model untrained where the book shows it cannot work."""

from __future__ import annotations

from petra.exporters import Precision
from petra.optimizer.genome import CandidateConfig, Regularizer, SearchSpace
from petra.optimizer.nsga import run_nsga2
from petra.optimizer.records import Trial, TrialState
from petra.optimizer.repair import (
    TRAINING_GENES,
    probe_evidence,
    repair,
    training_donor,
    trial_evidence,
    untrained_evidence,
)
from petra.optimizer.sensitivity import Sensitivity
from petra.profilers.measure import Measurement, Timing

SPACE = SearchSpace(prune_ratio=(0.0, 0.3, 0.5), epochs=(0, 4, 24), lr=(1e-3, 3e-3),
                    regularizer=(Regularizer.NONE, Regularizer.KD), drop_blocks1=(0, 1),
                    drop_blocks3=(0, 1), precision=(Precision.FP32, Precision.INT8_STATIC), threads=(1,))
KD = Regularizer.KD


def _trial(number: int, config: CandidateConfig, p50: float, drop: float,
           state=TrialState.COMPLETE) -> Trial:
    m = Measurement(Timing((p50,) * 3, 10), 8, Timing((4 * p50,) * 3, 10), 1000, 0.01, {})
    return Trial(number, 0, config.canonical(), state, drop=drop, measurement=m)


# a fashion-mnist-like book: one block of stage 2 removed untrained lost 1.78 points; one of
# stage 4 lost 0.23 (feasible); the deep seed trained 24 epochs with KD
ONE_BLOCK = _trial(1, CandidateConfig(drop_blocks1=1), 0.08, 1.78, TrialState.INFEASIBLE)
LAST_BLOCK = _trial(2, CandidateConfig(drop_blocks3=1), 0.08, 0.23)
DEEP = _trial(3, CandidateConfig(prune_ratio=0.3, drop_blocks1=1, drop_blocks3=1, epochs=24,
                                 regularizer=KD, precision=Precision.INT8_STATIC), 0.04, 0.06)
PRUNED = _trial(4, CandidateConfig(prune_ratio=0.5, epochs=4, lr=3e-3, regularizer=KD), 0.06, 0.5)
BOOK = [ONE_BLOCK, LAST_BLOCK, DEEP, PRUNED]


def _genome(**genes) -> tuple[int, ...]:
    return SPACE.encode(CandidateConfig(**genes))


def test_an_untrained_child_past_an_infeasible_smaller_change_trains_like_its_nearest_donor():
    child = _genome(prune_ratio=0.3, drop_blocks1=1, drop_blocks3=1, precision=Precision.INT8_STATIC)
    fixed, why = repair(child, SPACE, BOOK)
    c = SPACE.decode(fixed)
    assert (c.epochs, c.regularizer, c.lr) == (24, KD, 1e-3)  # the deep seed's, not PRUNED's
    assert (c.prune_ratio, c.drop_blocks1, c.drop_blocks3, c.precision) == (
        0.3, 1, 1, Precision.INT8_STATIC)
    assert "trial 1" in why and "trial 3" in why
    names = SPACE.gene_names
    changed = {names[i] for i, (a, b) in enumerate(zip(child, fixed)) if a != b}
    assert changed and changed <= set(TRAINING_GENES)


def test_a_child_is_left_alone_without_evidence_or_a_donor():
    last_only = _genome(drop_blocks3=1, prune_ratio=0.0)
    # only a feasible one is smaller
    assert untrained_evidence(SPACE.decode(last_only), trial_evidence(BOOK)) is None
    assert repair(last_only, SPACE, BOOK) == (last_only, None)
    trains = _genome(drop_blocks1=1, epochs=4, regularizer=KD)
    assert repair(trains, SPACE, BOOK) == (trains, None)
    untouched = _genome(precision=Precision.INT8_STATIC)  # changes nothing in torch
    assert repair(untouched, SPACE, BOOK) == (untouched, None)
    child = _genome(drop_blocks1=1, prune_ratio=0.5)
    assert repair(child, SPACE, [ONE_BLOCK, LAST_BLOCK]) == (child, None)  # nobody trained yet


def test_a_pruned_child_is_repaired_on_the_sensitivity_probes():
    # no untrained pruned trial in the book; stage 2 pruned 50% alone lost 6 points, stage 1 0.4
    probes = probe_evidence(Sensitivity((0.4, 6.0, 0.1, 0.2), (None, 2.5, None, 0.1)), max_drop=1.0)
    assert [e.source for e in probes] == ["the sensitivity probe of stage 2",
                                          "the sensitivity probe of depth stage 2"]
    child = _genome(prune_ratio=0.5)
    assert repair(child, SPACE, BOOK) == (child, None)
    fixed, why = repair(child, SPACE, BOOK, probes)
    assert SPACE.decode(fixed).epochs == 4 and "probe of stage 2" in why
    mild = _genome(prune_ratio=0.3)  # prunes stage 2 less than its probe did: no evidence
    assert repair(mild, SPACE, BOOK, probes) == (mild, None)
    assert probe_evidence(Sensitivity((0.4, 0.9)), max_drop=1.0) == [] and probe_evidence(None, 1.0) == []


def test_a_quantized_trial_is_evidence_only_for_children_quantized_alike():
    # an untrained 30%-pruned INT8 trial lost 9 points: maybe its INT8's doing, not the pruning's
    int8 = _trial(6, CandidateConfig(prune_ratio=0.3, precision=Precision.INT8_STATIC), 0.05, 9.0,
                  TrialState.INFEASIBLE)
    book = [int8, PRUNED]
    fp32_child = _genome(prune_ratio=0.5)
    assert repair(fp32_child, SPACE, book) == (fp32_child, None)
    int8_child = _genome(prune_ratio=0.5, precision=Precision.INT8_STATIC)
    assert "trial 6" in repair(int8_child, SPACE, book)[1]


def test_the_nearest_donor_wins_and_infeasible_ones_never_donate():
    pruned_child = SPACE.decode(_genome(prune_ratio=0.5))
    assert training_donor(pruned_child, BOOK) is PRUNED
    lost = _trial(5, PRUNED.config, 0.06, 4.0, TrialState.INFEASIBLE)
    assert training_donor(pruned_child, [ONE_BLOCK, DEEP, lost]) is DEEP


def test_nsga2_evaluates_the_repaired_children():
    """The repair runs between mutation and evaluation: no child evaluated after the first
    population carries what the repair takes away."""
    space = SearchSpace()
    b = space.gene_names.index("precision")
    seen: list[tuple[tuple[int, ...], int]] = []

    def evaluate(genome, generation):
        seen.append((genome, generation))
        return [float(genome[0]), float(-genome[0])]

    def no_precision_1(children):
        return [tuple(0 if i == b and g == 1 else g for i, g in enumerate(c)) for c in children]

    seed = tuple(int(i == b) for i in range(len(space.gene_names)))  # precision 1 from the start
    run_nsga2(space, evaluate, generations=4, population=8, seed=3, repair=no_precision_1, seeds=[seed])
    later = [g for g, gen in seen if gen > 0]
    assert later and all(g[b] != 1 for g in later)
    assert any(g[b] == 1 for g, gen in seen if gen == 0)  # the first population is not repaired


def test_nsga2_breeds_from_the_adopted_population():
    """What ``adopt`` returns replaces the evaluated population, with its fitness asked of the
    evaluator, and the next generation's parents come from it."""
    space = SearchSpace()
    b = space.gene_names.index("precision")
    seen: list[tuple[int, ...]] = []
    asked: list[tuple[int, ...]] = []

    def evaluate(genomes, generation):
        seen.extend(genomes)
        return [[float(g[0]), float(-g[0])] for g in genomes]

    def no_precision_2(population):
        out = [tuple(0 if i == b and g == 2 else g for i, g in enumerate(p)) for p in population]
        asked.extend(o for o, p in zip(out, population) if o != p)
        return out

    populations = []
    run_nsga2(space, evaluate, generations=3, population=8, seed=5, batched=True, adopt=no_precision_2,
              on_generation=lambda done, pop: populations.append((done, pop)) and False)
    assert asked and all(a in seen for a in asked)  # the adopted genomes' fitness was asked for
    assert [d for d, _ in populations] == [0, 1, 2, 3]
    assert any(g[b] == 2 for g in populations[0][1])  # the first population, before adoption
    # the elites PyGAD keeps (the first population // 4 members) come from the adopted population;
    # the children may draw precision 2 again by mutation, so only the elites are checked
    assert all(g[b] != 2 for _, pop in populations[1:] for g in pop[:2])
