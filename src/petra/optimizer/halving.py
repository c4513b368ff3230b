"""Successive halving inside one generation: a pruner in Optuna's sense (it stops trials
early), named so that it is not mistaken for channel pruning.

The generation's new candidates that train first get a cheap fine-tune (``Fidelity``: a quarter
of their own fine-tune steps); only the better half of those cheap results, by non-dominated rank and
then by drop, go on to the full fine-tune. The rest are recorded STOPPED with their cheap
figures: latency and size are exact at low fidelity, only the metric is an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from petra.fidelity import LOW_FIDELITY, Fidelity
from petra.optimizer.genome import CandidateConfig
from petra.optimizer.records import Trial, TrialState, nondominated_rank
from petra.optimizer.trials import TrialBook

#: a cheap result counts as feasible for the ranking up to this many times max_drop. Why: a
#: short fine-tune under-rates exactly the aggressive candidates worth a full one. Measured with
#: the earlier cheap pass (1 epoch on a quarter of the data): a d64 transformer with a block
#: removed and 50% pruned scored 3.06 AUC points of drop cheap (ranked below every cheap-feasible
#: candidate, so stopped); the same removal with uniform 50% pruning, built by hand with 6 full
#: epochs, dropped 0.43. cdnow's hand-made pipeline scored 1.24 points lower cheap than full.
CHEAP_TOLERANCE = 4.0


class SuccessiveHalving:
    def __init__(self, fidelity: Fidelity = LOW_FIDELITY, keep: float = 0.5) -> None:
        self.fidelity, self.keep = fidelity, keep

    def stopped(self, book: TrialBook, configs: list[CandidateConfig], positions: list[int],
                generation: int, out_of_time: Callable[[], bool]) -> dict[int, Trial]:
        """The candidates at ``positions`` of ``configs`` that stop after their cheap pass, as
        records to be kept (position -> trial, not recorded yet). Empty when the budget ran out
        during the cheap pass: half a generation cannot be ranked, so nothing stops."""
        cheap = self.cheap_pass(book, [configs[i] for i in positions], positions, generation, out_of_time)
        if not cheap:
            return {}
        return self.split(cheap, generation, book.task.metric.name, book.max_drop)

    def cheap_pass(self, book: TrialBook, configs: list[CandidateConfig], positions: list[int],
                   generation: int, out_of_time: Callable[[], bool]) -> dict[int, Trial]:
        """Every cheap estimate (position -> trial), or nothing when the budget stops the pass
        part way, like the full pass (a generation of long fine-tunes once overran a 240 s
        budget nearly five times here); on resume it is rebuilt from the stage cache."""
        done: dict[int, Trial] = {}
        cheap = book.build_trials(configs, generation, self.fidelity)
        try:
            for j, t in cheap:
                done[positions[j]] = t
                if out_of_time() and len(done) < len(configs):
                    return {}
        finally:
            cheap.close()
        return dict(sorted(done.items()))

    def split(self, cheap: dict[int, Trial], generation: int, metric: str,
              max_drop: float = math.inf) -> dict[int, Trial]:
        """The worse part of the cheap results (position -> STOPPED record; a failed build keeps
        FAIL): ranked by constraint-domination, with a drop up to CHEAP_TOLERANCE x ``max_drop``
        counted feasible; within a rank the feasible first, fastest first (the full fine-tune
        recovers most of a cheap drop; by drop, the conservative candidates won every tie), then
        the rest by drop."""
        ranked = {i: replace(t, state=TrialState.COMPLETE) if t.state is TrialState.INFEASIBLE
                  and t.drop is not None and t.drop <= CHEAP_TOLERANCE * max_drop else t
                  for i, t in cheap.items()}
        rank = dict(zip(ranked, nondominated_rank(list(ranked.values()))))

        def order_key(i: int) -> tuple:
            t = ranked[i]
            if t.ok:
                return rank[i], 0, t.measurement.p50_ms
            return rank[i], 1, math.inf if t.drop is None else t.drop

        order = sorted(cheap, key=order_key)
        out = {}
        for i in order[math.ceil(len(order) * self.keep):]:
            t = cheap[i]
            if t.state is not TrialState.FAIL:
                t = replace(t, state=TrialState.STOPPED_EARLY, reason=(
                    f"low fidelity ({self.fidelity.describe()}): {metric} {t.val:.2f}, "
                    f"not in the better half of generation {generation}"))
            out[i] = t
        return out
