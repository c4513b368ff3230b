"""Mutation near the parent: few genes, neighbouring choices, always a different config."""

from __future__ import annotations

import numpy as np

from petra.exporters import Precision
from petra.optimizer.genome import CandidateConfig, Regularizer, SearchSpace
from petra.optimizer.mutation import mutate, ordered, renew

SPACE = SearchSpace(prune_ratio=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), epochs=(0, 1, 2, 4, 6, 12, 24),
                    lr=(3e-4, 1e-3, 3e-3), regularizer=(Regularizer.NONE, Regularizer.KD),
                    precision=(Precision.FP32, Precision.INT8_STATIC, Precision.INT8_DYNAMIC),
                    threads=(1, 2))


def test_ordered_genes_are_rising_numbers():
    assert ordered((0, 1, 2, 4, 24)) and ordered((None, 0.0, 0.5, 0.9))
    assert not ordered((Precision.FP32, Precision.INT8_STATIC)) and not ordered((True, False))
    assert not ordered((3, 1)) and not ordered((1,))


def test_a_child_moves_few_genes_by_a_notch_or_two():
    rng = np.random.default_rng(0)
    parent = SPACE.encode(CandidateConfig(prune_ratio=0.3, epochs=12, regularizer=Regularizer.KD,
                                          precision=Precision.INT8_STATIC))
    names = SPACE.gene_names
    moved = []
    for _ in range(300):
        child = mutate(parent, SPACE, rng)
        diff = [i for i, (a, b) in enumerate(zip(parent, child)) if a != b]
        assert diff and SPACE.decode(child) != SPACE.decode(parent)
        moved.append(len(diff))
        for i in diff:
            if names[i] in ("prune_ratio", "epochs", "lr", "threads"):
                assert abs(child[i] - parent[i]) <= 2
    assert np.mean(moved) < 2.0  # about one gene a child, where 0.25 per gene moved ~1.5 of 6


def test_a_change_the_config_does_not_express_is_retried():
    # FP32 and untrained: lr, regularizer and calibration genes are not expressed
    rng = np.random.default_rng(1)
    parent = SPACE.encode(CandidateConfig())
    for _ in range(100):
        assert SPACE.decode(mutate(parent, SPACE, rng)) != SPACE.decode(parent)


def test_a_space_with_nothing_open_is_left_alone():
    space = SearchSpace(**{n: (getattr(SearchSpace(), n)[0],) for n in SearchSpace().gene_names})
    genome = (0,) * len(space.gene_names)
    assert mutate(genome, space, np.random.default_rng(0)) == genome


def test_children_already_built_are_mutated_until_new():
    rng = np.random.default_rng(3)
    space = SPACE.without_settings()
    built_cfg = CandidateConfig(prune_ratio=0.3, epochs=12, regularizer=Regularizer.KD,
                                precision=Precision.INT8_STATIC)
    new_cfg = built_cfg.replace(prune_ratio=0.5)
    key = lambda g: space.decode(g).without_settings().key  # noqa: E731
    dup, fresh = space.encode(built_cfg), space.encode(new_cfg)
    out, renewed = renew([dup, fresh, fresh, dup], space, {key(dup)}, rng)
    assert renewed == 3  # both copies of the built one, and the second copy of the new one
    assert out[1] == fresh  # a new child is left as it is
    keys = [key(g) for g in out]
    assert len(set(keys)) == 4 and key(dup) not in keys
    for g, was in ((out[0], dup), (out[2], fresh), (out[3], dup)):  # near where it was
        assert sum(a != b for a, b in zip(g, was)) <= 4
