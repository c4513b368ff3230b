"""Survival from everything evaluated: NSGA-II breeds from the best of the book, not of its last
population.

Why: PyGAD's NSGA-II keeps ``keep_elitism`` members of a population and fills the rest with the
new children, whatever they scored, while NSGA-II proper (Deb et al. 2002) chooses the next
population from parents and children together. And petra builds more than the population holds:
post-training twins, the PTQ probes, the cheap-pass survivors and the seeds all join the book,
but only the genomes NSGA-II made could become parents. A fast point the GA made once could leave
the population after one generation and never be bred from again (docs/search.md, "Survival").

Here the population handed to parent selection is the best ``len(population)`` of every trial
the space can express, ranked by constraint-domination and, within the last admitted front, by
crowding distance, the order NSGA-II's own survival uses. One change to the objectives, for
survival only: drops are compared in steps of ``DROP_STEP`` x ``max_drop`` (epsilon-dominance,
Laumanns et al. 2002). Exact drops differ by validation noise, and every untrained one-gene
change of FP32 that lost 0.01 point less than a trained, four times faster candidate would
survive beside it and be bred from; the front the user sees keeps exact drops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from petra.optimizer.genome import SearchSpace
from petra.optimizer.records import Trial, nondominated_rank

Genome = tuple[int, ...]
#: survival compares feasible drops in steps of this fraction of ``max_drop``
DROP_STEP = 0.25


def coarse(trial: Trial, max_drop: float) -> list[float]:
    """``trial.fitness()`` with a feasible drop rounded down to its ``DROP_STEP`` step."""
    fit = trial.fitness()
    if not trial.ok or max_drop <= 0:
        return fit
    step = DROP_STEP * max_drop
    return [-math.floor(float(trial.drop) / step + 1e-9) * step, *fit[1:]]


def crowding(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point within one front: the extremes of every
    objective are infinite, so that a front's ends always survive."""
    n = len(points)
    distance = [0.0] * n
    if n == 0:
        return distance
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][k])
        low, high = points[order[0]][k], points[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = float("inf")
        if high <= low:
            continue
        for a, i, b in zip(order, order[1:], order[2:]):
            distance[i] += (points[b][k] - points[a][k]) / (high - low)
    return distance


def expressible(space: SearchSpace, trials: Sequence[Trial]) -> dict[Genome, Trial]:
    """Each trial whose config the space encodes exactly, by genome; the first trial wins. A
    config from another space, or one snapped to a choice, would stand for a genome it is not.
    In a screened search a trial records the runtime setting it was measured at, which the space
    does not offer (see ``SearchSpace.without_settings``): it stands for the genome asked for."""
    out: dict[Genome, Trial] = {}
    for t in trials:
        genome = space.encode(t.config)
        if genome not in out and space.decode(genome).key in (t.config.canonical().key,
                                                               t.config.without_settings().key):
            out[genome] = t
    return out


def survivors(population: Sequence[Genome], space: SearchSpace, trials: Sequence[Trial],
              max_drop: float) -> list[Genome]:
    """The ``len(population)`` genomes to breed from, best first: the book's expressible trials
    by front (drops in steps, see ``coarse``), then crowding. Members the book does not hold
    (not built: the budget ran out) only fill places no trial takes. A member keeps its own
    genome when its trial is chosen, so that the genes it does not express, which its children
    may, are not reset."""
    pool = expressible(space, trials)
    asked = {space.decode(g).key: g for g in pool}
    for genome in population:  # the member's own genome stands for its trial
        match = asked.get(space.decode(genome).key)
        if match is not None and match != tuple(genome) and match in pool:
            pool[tuple(genome)] = pool.pop(match)
    genomes, chosen = list(pool), []
    ranks = nondominated_rank([pool[g] for g in genomes], lambda t: coarse(t, max_drop))
    for level in sorted(set(ranks)):
        front = [g for g, r in zip(genomes, ranks) if r == level]
        distance = crowding([coarse(pool[g], max_drop) for g in front])
        chosen += [g for _, g in sorted(zip(distance, front), key=lambda p: -p[0])]
        if len(chosen) >= len(population):
            break
    chosen = chosen[:len(population)]
    chosen += [tuple(g) for g in population if tuple(g) not in chosen][:len(population) - len(chosen)]
    return (chosen * len(population))[:len(population)] if chosen else list(map(tuple, population))
