"""One child a generation takes the fastest feasible model one notch further.

Why: mutation steps an ordered gene up or down with equal odds, and over a dozen open genes it
touches a compression gene of a good parent about as often as a learning rate or a thread count.
On cdnow (ORT, 10 min per searcher, Xeon AMX VM, 4ad7bc8) 30 of NSGA-II's 33 trials after the
first generation kept the GRU's remaining layer at 50-60% pruning, with validation drops 0.2 under
the baseline's, while TPE's 70% ran at 0.242x against NSGA-II's 0.263x. NetAdapt (Yang et al. 2018)
goes the other way round: every step prunes one layer more, as long as accuracy holds.

So the last child of each generation is a push, as long as there is slack to push into: the
fastest feasible trial that changes the model and keeps a drop of at most ``PUSH_SLACK`` x
``max_drop`` gets one component of ``repair.model_change`` one choice further (one depth stage
pruned to the next ratio the space offers, one more block of one depth stage removed, a
higher low-rank ratio), its training genes kept. A push already built, or already among the
children, is not made again: the next component, or the next fastest trial, is taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from petra.compression.depth import DEPTH_GENES
from petra.compression.lowrank import LowRank
from petra.compression.pruning import STAGE_GENES, stage_ratios
from petra.optimizer.elitism import expressible
from petra.optimizer.genome import CandidateConfig, SearchSpace, graft
from petra.optimizer.records import Trial
from petra.optimizer.repair import changes_model

Genome = tuple[int, ...]
#: a trial is pushed only while its drop is at most this fraction of ``max_drop``
PUSH_SLACK = 0.5


def further(config: CandidateConfig, space: SearchSpace) -> list[tuple[str, object]]:
    """Each single-gene change that takes one component of ``config``'s model change one choice
    further than it is: (gene, value). A stage gene's "now" is the ratio the stage runs at."""
    now = dict(zip(STAGE_GENES, stage_ratios(config)))
    now |= {g: getattr(config, g, None) or 0 for g in (*DEPTH_GENES, *(g.name for g in LowRank.genes))}
    out: list[tuple[str, object]] = []
    for gene, value in now.items():
        higher = [c for c in getattr(space, gene, ()) if c is not None and c > value]
        if higher:
            out.append((gene, min(higher)))
    return out


def push(space: SearchSpace, trials: Sequence[Trial], max_drop: float, taken: set[str],
         rng: np.random.Generator) -> tuple[Genome, str] | None:
    """The push (see the module) and a line for the log; None when no trial has slack or every
    push of those that do is in ``taken`` (keys of configs without their runtime settings)."""
    book = expressible(space, trials)
    ranked = sorted(((g, t) for g, t in book.items() if t.ok and t.drop <= PUSH_SLACK * max_drop
                     and changes_model(t.config)),
                    key=lambda p: p[1].measurement.p50_ms)
    for genome, trial in ranked:
        options = further(trial.config, space)
        for k in rng.permutation(len(options)):
            gene, value = options[int(k)]
            child = graft(space, genome, trial.config.replace(**{gene: value}), (gene,))
            key = space.decode(child).without_settings().key
            if child != genome and key not in taken:
                return child, (f"push: trial {trial.number} (drop {trial.drop:.2f}, p50 "
                               f"{trial.measurement.p50_ms:.4g} ms) with {gene} = {value}")
    return None


def push_last(children: list[Genome], space: SearchSpace, trials: Sequence[Trial], max_drop: float,
              seed: int, log: Callable[[str], None]) -> list[Genome]:
    """``children`` with the last one replaced by ``push``'s, when there is one (``seed``: the
    order in which a trial's pushes are tried)."""
    if not children:
        return children
    taken = {t.config.without_settings().key for t in trials}
    taken |= {space.decode(c).without_settings().key for c in children[:-1]}
    found = push(space, trials, max_drop, taken, np.random.default_rng(seed))
    if found is None:
        return children
    log(found[1])
    return [*children[:-1], found[0]]
