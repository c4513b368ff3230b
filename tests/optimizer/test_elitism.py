"""Survival from the whole book: which genomes NSGA-II breeds from."""

import math

from petra.exporters import Precision
from petra.optimizer.elitism import coarse, crowding, expressible, survivors
from petra.optimizer.genome import CandidateConfig, SearchSpace
from petra.optimizer.nsga import run_nsga2
from petra.optimizer.records import Trial, TrialState
from petra.profilers.measure import Measurement, Timing
from petra.runtimes.onnxruntime import GraphOpt

SPACE = SearchSpace(precision=(Precision.FP32, Precision.INT8_STATIC), prune_ratio=(0.0, 0.1, 0.3, 0.5),
                    epochs=(0, 4, 24), threads=(1,))
STATIC = Precision.INT8_STATIC


def _trial(n: int, config: CandidateConfig, p50: float, drop: float, state=TrialState.COMPLETE) -> Trial:
    m = Measurement(Timing((p50,) * 3, 10), 8, Timing((4 * p50,) * 3, 10), int(p50 * 1e6), 0.01, {})
    return Trial(n, 0, config.canonical(), state, drop=drop, measurement=m)


# shaped like fashion-mnist's first generation (Xeon AMX VM, 8121654), p50 as a share of FP32's
FP32 = _trial(0, CandidateConfig(), 1.0, 0.0)
PTQ = _trial(1, CandidateConfig(precision=STATIC), 0.356, 0.01)
UNTRAINED = _trial(2, CandidateConfig(prune_ratio=0.1), 0.97, 0.15)
TRAINED = _trial(3, CandidateConfig(prune_ratio=0.3, epochs=24, precision=STATIC), 0.14, 0.06)
FASTEST = _trial(4, CandidateConfig(prune_ratio=0.5, epochs=24, precision=STATIC), 0.10, 0.52)
LOST = _trial(5, CandidateConfig(prune_ratio=0.5, epochs=4, precision=STATIC), 0.09, 5.0,
              TrialState.INFEASIBLE)
BOOK = [FP32, PTQ, UNTRAINED, TRAINED, FASTEST, LOST]


def test_crowding_keeps_every_objectives_extremes():
    d = crowding([[0.0, 3.0], [1.0, 2.0], [3.0, 0.0], [2.0, 1.0]])
    assert d[0] == d[2] == math.inf
    assert d[1] == d[3] == 2 / 3 + 2 / 3
    assert crowding([]) == [] and crowding([[1.0, 1.0]]) == [math.inf]


def test_feasible_drops_compare_in_steps_of_a_quarter_of_the_bound():
    assert coarse(FP32, 1.0)[0] == coarse(PTQ, 1.0)[0] == coarse(TRAINED, 1.0)[0] == 0.0
    assert coarse(FASTEST, 1.0)[0] == -0.5 and coarse(FASTEST, 3.0)[0] == 0.0
    assert coarse(FASTEST, 1.0)[1:] == FASTEST.fitness()[1:]
    assert coarse(LOST, 1.0) == LOST.fitness()  # infeasible: ranked by its violation alone


def test_the_population_is_the_best_of_the_book_not_of_its_members():
    """The members are FP32 and two slow ones; the book holds a trained point and a faster one
    no member is. FP32 and the PTQ seed tie the trained point on drop at this step, and lose."""
    members = [SPACE.encode(t.config) for t in (FP32, UNTRAINED, PTQ, LOST)]
    chosen = [SPACE.decode(g) for g in survivors(members, SPACE, BOOK, 1.0)]
    assert chosen[:2] in ([TRAINED.config, FASTEST.config], [FASTEST.config, TRAINED.config])
    assert chosen[2:] == [PTQ.config, UNTRAINED.config]  # each dominates the next at this step
    assert FP32.config not in chosen and LOST.config not in chosen
    exact = [SPACE.decode(g) for g in survivors(members, SPACE, BOOK, 0.0)]  # no step: exact drops
    assert FP32.config in exact[:3]


def test_members_keep_their_genomes_and_unbuilt_ones_fill_the_rest():
    """A member's learning rate, which an untrained config does not express, is kept: its
    children may train."""
    lr = SPACE.gene_names.index("lr")
    own = list(SPACE.encode(PTQ.config))
    own[lr] = (own[lr] + 1) % SPACE.sizes[lr]
    own = tuple(own)
    assert SPACE.decode(own).key == PTQ.config.key and own != SPACE.encode(PTQ.config)
    assert survivors([own, SPACE.encode(FP32.config)], SPACE, [FP32, PTQ], 1.0)[0] == own
    unbuilt = SPACE.encode(CandidateConfig(prune_ratio=0.3, epochs=4))
    out = survivors([unbuilt, unbuilt, SPACE.encode(PTQ.config)], SPACE, [PTQ], 1.0)
    assert out[:2] == [SPACE.encode(PTQ.config), unbuilt] and len(out) == 3


def test_only_trials_the_space_expresses_exactly_are_candidates():
    odd = _trial(9, CandidateConfig(prune_ratio=0.2), 0.5, 0.0)  # 0.2 is no choice here
    assert [t.number for t in expressible(SPACE, [*BOOK, odd]).values()] == [t.number for t in BOOK]


def test_the_first_parents_come_from_what_adopt_returns():
    """``adopt`` sees the evaluated seeds before the first parents are drawn; if it hands back
    one genome for every member, the children are all a few genes from it (the random seeds
    are many genes away)."""
    space = SearchSpace()
    best = tuple(min(1, s - 1) for s in space.sizes)
    calls: list[list[tuple[int, ...]]] = []

    def adopt(population):
        calls.append(list(population))
        return [best] * len(population)

    batches: list[list[tuple[int, ...]]] = []
    run_nsga2(space, lambda gs, gen: batches.append(gs) or [[0.0, 0.0]] * len(gs), generations=1,
              population=6, seed=3, batched=True, adopt=adopt)
    assert calls[0] == batches[0] and best not in calls[0]  # the evaluated seeds, first
    assert batches[1] == [best] * 6  # adopted: its fitness comes from the evaluator
    def apart(g):
        return sum(a != b for a, b in zip(g, best))

    assert len(batches[2]) == 5 and max(map(apart, batches[2])) <= 3 < 10 < min(map(apart, batches[0]))


def test_a_trial_measured_at_a_screened_setting_stands_for_the_genome_asked_for():
    """cdnow's GRUs ran fastest at ORT's BASIC graph level, and every trained trial recorded it;
    a screened space offers only the default level. They must still survive."""
    screened = SPACE.without_settings()
    basic = _trial(6, TRAINED.config.replace(graph_opt=GraphOpt.BASIC), 0.14, 0.06)
    assert basic.config.key != basic.config.without_settings().key
    members = [screened.encode(t.config) for t in (FP32, PTQ)]
    chosen = [screened.decode(g) for g in survivors(members, screened, [FP32, PTQ, basic], 1.0)]
    assert chosen[0] == basic.config.without_settings()
