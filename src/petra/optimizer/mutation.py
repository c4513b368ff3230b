"""Mutation that stays near the parent: about one expressed gene per child, an ordered gene
moved to a neighbouring choice.

Why: the GA's best parents are configs that already work (a seed that prunes, removes blocks
and trains 24 epochs), and what beats them is a small step from them: a stage pruned one notch
more, one epoch choice longer. PyGAD's random replacement at 0.25 per gene redrew about five of
fashion-mnist's 21 open genes per child, each to any of its choices (24 epochs to 0, a 10%
stage to 90%), and in a 10 min run on the Xeon AMX VM no child came within 1.2x of the deep
seed's p50 (0.164x against 0.137x). NSGA-II as published mutates each gene with probability
1/n and perturbs a real gene locally (polynomial mutation); this is that, for genes whose
choices are indices.

A mutation that the config does not express (the learning rate of a child that does not train)
builds the same model as its parent, and the evaluator would answer from its records: such
draws are retried on another gene, so each child differs from what crossover gave it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from petra.optimizer.genome import SearchSpace

#: the step of an ordered gene's index, and its probability: mostly one notch, sometimes two
STEPS, STEP_P = (-2, -1, 1, 2), (0.15, 0.35, 0.35, 0.15)
#: how many other genes are tried when a mutation changes nothing the config expresses
RETRIES = 8


def ordered(choices: Sequence) -> bool:
    """Whether a neighbour in ``choices`` is a small change: numbers in rising order (None, the
    'not set' of a stage ratio, may come first)."""
    values = [c for c in choices if c is not None]
    numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in values)
    return len(values) > 1 and numeric and values == sorted(values)


def _step(index: int, size: int, is_ordered: bool, rng: np.random.Generator) -> int:
    if not is_ordered:
        return int(rng.choice([i for i in range(size) if i != index]))
    step = int(rng.choice(STEPS, p=STEP_P))
    new = min(size - 1, max(0, index + step))
    if new == index:  # at an end: go the other way
        new = min(size - 1, max(0, index - step))
    return new


def mutate(genome: Sequence[int], space: SearchSpace, rng: np.random.Generator) -> tuple[int, ...]:
    """``genome`` with each open gene changed with probability 1/(open genes), at least one, and
    each change one the decoded config expresses (up to RETRIES tries)."""
    sizes = space.sizes
    open_ = [i for i, n in enumerate(sizes) if n > 1]
    if not open_:
        return tuple(int(g) for g in genome)
    kinds = [ordered(getattr(space, name)) for name in space.gene_names]
    out = [int(g) for g in genome]
    hits = [i for i in open_ if rng.random() < 1.0 / len(open_)] or [int(rng.choice(open_))]
    for i in hits:
        out[i] = _step(out[i], sizes[i], kinds[i], rng)
    before = space.decode(genome)
    for _ in range(RETRIES):
        if space.decode(out) != before:
            break
        i = int(rng.choice(open_))
        out[i] = _step(out[i], sizes[i], kinds[i], rng)
    return tuple(out)


def mutate_all(offspring: Sequence[Sequence[int]], space: SearchSpace,
               rng: np.random.Generator) -> list[tuple[int, ...]]:
    return [mutate(child, space, rng) for child in offspring]


def renew(children: Sequence[Sequence[int]], space: SearchSpace, built: set[str],
          rng: np.random.Generator) -> tuple[list[tuple[int, ...]], int]:
    """``children`` with each one that decodes to a config already ``built`` (keys of configs
    without their runtime settings), or to an earlier child's, mutated again until it does not
    (up to RETRIES more mutations, each from the last); and how many were renewed.

    Why: a child the book already holds costs no build and adds nothing, and a generation has
    six children. In the default digits run on a0b9159, one of generation 1's six was a trial
    already built. Re-mutating a duplicate is how GA libraries keep a small population from
    collapsing (pymoo's duplicate elimination)."""
    seen, out, renewed = set(built), [], 0
    for child in children:
        genome = tuple(int(g) for g in child)
        key = space.decode(genome).without_settings().key
        tries = 0
        while key in seen and tries < RETRIES:
            genome, tries = mutate(genome, space, rng), tries + 1
            key = space.decode(genome).without_settings().key
        if tries and key not in seen:
            renewed += 1
        seen.add(key)
        out.append(genome)
    return out, renewed
