import dataclasses

import numpy as np
import pytest

from petra.models.base import ACCURACY, Metric
from petra.optimizer.genome import CandidateConfig
from petra.optimizer.records import (
    Prefer,
    Trial,
    TrialState,
    divergence,
    dominates,
    pareto_front,
    pick_best,
)
from petra.profilers.measure import Measurement
from petra.profilers.timing import Timing

MSE = Metric("mse", lambda out, y: float(((out - y) ** 2).mean()), higher_is_better=False)


def _trial(n, val, p50, size, state=TrialState.COMPLETE, drop=None, thr_p50=None, metric=ACCURACY, base=99.0):
    """A measured trial; its drop is against a baseline scoring ``base``, unless given."""
    m = Measurement(Timing((p50,) * 5, 0), 8, Timing(((thr_p50 or p50 * 4),) * 5, 0), size, 0.0, {})
    drop = metric.drop(base, val) if drop is None else drop
    return Trial(n, 0, CandidateConfig(prune_ratio=n / 100), state, val=val, test=val, drop=drop,
                 measurement=m)


def test_constraint_domination():
    feasible_bad = _trial(1, 50.0, 10.0, 10_000_000)
    infeasible_great = _trial(2, 99.0, 0.01, 10, TrialState.INFEASIBLE, drop=3.0)
    infeasible_less = _trial(3, 99.0, 5.0, 100, TrialState.INFEASIBLE, drop=1.5)
    failed = Trial(4, 0, CandidateConfig(), TrialState.FAIL, reason="boom")
    assert dominates(feasible_bad, infeasible_great)
    assert dominates(infeasible_less, infeasible_great)  # smaller violation wins
    assert dominates(infeasible_great, failed)
    assert not dominates(infeasible_great, feasible_bad)


def test_pareto_front_keeps_tradeoffs_only():
    a = _trial(1, 99.0, 1.0, 1000)
    b = _trial(2, 98.5, 0.5, 800)
    c = _trial(3, 98.0, 0.8, 900)  # dominated by b
    d = _trial(4, 99.5, 0.1, 10, TrialState.INFEASIBLE, drop=2)
    front = pareto_front([a, b, c, d])
    assert front == [b, a]


def test_best_is_never_slower_than_baseline():
    base = _trial(0, 99.0, 1.0, 1000)
    slow_small = _trial(1, 99.0, 1.2, 10)
    assert pick_best([slow_small], base, Prefer.SIZE) is base
    fast = _trial(2, 98.5, 0.4, 500, thr_p50=1.0)
    faster_bigger = _trial(3, 98.2, 0.3, 700, thr_p50=2.0)
    assert pick_best([fast, faster_bigger], base, Prefer.LATENCY) is faster_bigger
    assert pick_best([fast, faster_bigger], base, Prefer.SIZE) is fast
    assert pick_best([fast, faster_bigger], base, Prefer.THROUGHPUT) is fast


def test_entry_has_results_fields():
    e = _trial(1, 99.0, 1.0, 1000).entry("accuracy")
    for key in ("config", "metric", "latency_ms", "throughput_sps", "size_bytes", "artifact"):
        assert key in e
    assert set(e["latency_ms"]) >= {"p50", "p90", "p99"}
    assert e["metric"]["name"] == "accuracy"


def test_nondominated_rank():
    from petra.optimizer.records import nondominated_rank

    a = _trial(1, 99.0, 1.0, 1000)
    b = _trial(2, 98.0, 2.0, 2000)  # dominated by a
    c = _trial(3, 99.5, 3.0, 500)  # trade-off with a
    d = _trial(4, 99.9, 0.1, 10, TrialState.STOPPED_EARLY, drop=2.0)  # stopped ranks like infeasible
    assert nondominated_rank([a, b, c, d]) == [0, 1, 0, 2]


def test_lower_is_better_metric_is_minimised():
    """An MSE: the trial with the lower error has the higher metric objective and, all else
    equal, dominates; the one with the higher error is not on the front."""
    low = _trial(1, 0.20, 1.0, 1000, metric=MSE, base=0.25)  # better than the baseline
    high = _trial(2, 0.40, 1.0, 1000, metric=MSE, base=0.25)
    assert low.drop == pytest.approx(-0.05) and high.drop == pytest.approx(0.15)
    assert low.fitness()[0] > high.fitness()[0]
    assert dominates(low, high) and not dominates(high, low)
    assert pareto_front([high, low]) == [low]
    # a trade-off: more error for less latency stays on the front beside the accurate one
    fast = _trial(3, 0.30, 0.5, 1000, metric=MSE, base=0.25)
    assert pareto_front([high, low, fast]) == [fast, low]


def test_fitness_is_the_negated_drop_for_either_direction():
    """Accuracy 97 against 99 and MSE 0.27 against 0.25 are both a loss of 2 / 0.02 points."""
    acc = _trial(1, 97.0, 1.0, 1000)
    mse = _trial(2, 0.27, 1.0, 1000, metric=MSE, base=0.25)
    assert acc.fitness()[0] == pytest.approx(-2.0) and mse.fitness()[0] == pytest.approx(-0.02)


def test_equal_drops_are_ordered_by_divergence_and_unequal_ones_are_not():
    """OSULeaf's saturated validation split: INT8 alone and a pruned model both at drop 0. The
    pruned one is faster, the INT8 one closer to the baseline's outputs: both stay on the front.
    A real difference of drops still decides, whatever the divergences."""
    int8 = dataclasses.replace(_trial(1, 99.0, 0.52, 600), divergence=0.001)
    pruned = dataclasses.replace(_trial(2, 99.0, 0.37, 300), divergence=0.2)
    assert pareto_front([int8, pruned]) == [pruned, int8]
    unknown = dataclasses.replace(int8, divergence=None)  # e.g. a resumed run's trial
    blind = dataclasses.replace(pruned, divergence=None)
    assert pareto_front([unknown, blind]) == [blind]
    lost = dataclasses.replace(_trial(3, 98.9, 0.6, 700), divergence=0.0)  # drop 0.1, faithful
    assert dominates(int8, lost) and not dominates(lost, int8)
    assert pareto_front([int8, pruned, lost]) == [pruned, int8]


def test_divergence_is_relative_to_the_baselines_spread():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 3, (50, 4))
    assert divergence(base, base) == 0.0
    assert divergence(base, base + rng.normal(0, 0.3, base.shape)) == pytest.approx(0.01, rel=0.3)
    assert divergence(base, -10 * base) == 1.0  # clipped
    assert divergence(base, base[:, :3]) is None and divergence(None, base) is None
    assert divergence(np.ones((5, 2)), np.zeros((5, 2))) is None  # no spread to compare to


def test_trials_are_immutable_and_old_pruned_state_reads():
    t = _trial(1, 98.0, 1.0, 1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.state = TrialState.INFEASIBLE
    stopped = dataclasses.replace(t, state=TrialState.STOPPED_EARLY)
    assert t.state is TrialState.COMPLETE and stopped.entry("accuracy")["state"] == "STOPPED"
    assert TrialState("PRUNED") is TrialState.STOPPED_EARLY  # stores and results from before the rename


def test_halving_keeps_a_fast_candidate_whose_cheap_drop_is_within_the_tolerance():
    from petra.optimizer.halving import CHEAP_TOLERANCE, SuccessiveHalving

    fast = _trial(1, 96.0, 0.1, 100, TrialState.INFEASIBLE, drop=3.0)  # a block removed, one cheap epoch
    slow = _trial(2, 99.0, 0.5, 100, drop=0.0)
    hopeless = _trial(3, 20.0, 0.05, 100, TrialState.INFEASIBLE, drop=CHEAP_TOLERANCE + 1)
    stopped = SuccessiveHalving(keep=0.5).split({0: fast, 1: slow, 2: hopeless}, 1, "accuracy", max_drop=1.0)
    assert set(stopped) == {2} and stopped[2].state is TrialState.STOPPED_EARLY
    # judged strictly (no tolerance), the slow feasible one would have won the only place left
    strict = SuccessiveHalving(keep=0.34).split({0: fast, 1: slow}, 1, "accuracy", max_drop=0.0)
    assert set(strict) == {0}


def test_halving_breaks_a_tie_of_ranks_by_speed_among_the_feasible():
    from petra.optimizer.halving import SuccessiveHalving

    careful = _trial(1, 98.9, 0.5, 100, drop=0.1)
    bold = _trial(2, 97.0, 0.2, 200, TrialState.INFEASIBLE, drop=2.0)  # faster, bigger: same rank
    stopped = SuccessiveHalving(keep=0.5).split({0: careful, 1: bold}, 1, "accuracy", max_drop=1.0)
    assert set(stopped) == {0}
