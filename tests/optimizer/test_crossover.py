"""Crossover that leaves half the children whole."""

import numpy as np

from petra.optimizer.crossover import LOCAL, crossover

PARENTS = np.array([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2], [3, 3, 3, 3, 3, 3]])


def test_a_local_child_is_its_parent_whole():
    children = crossover(PARENTS, 6, np.random.default_rng(0), local=1.0)
    assert children.shape == (6, 6) and children.dtype == PARENTS.dtype
    assert [list(c) for c in children] == [list(PARENTS[k % 4]) for k in range(6)]


def test_a_mixed_child_takes_each_gene_from_its_two_neighbouring_parents():
    children = crossover(PARENTS, 6, np.random.default_rng(0), local=0.0)
    for k, child in enumerate(children):
        assert set(child) <= {k % 4, (k + 1) % 4}
    assert all(len(set(child)) == 2 for child in children)  # 6 genes at even odds: both parents


def test_about_half_the_children_are_whole_and_one_parent_is_copied():
    rng = np.random.default_rng(1)
    whole = sum(len(set(c)) == 1 for _ in range(2000) for c in crossover(PARENTS, 6, rng))
    expected = LOCAL + (1 - LOCAL) / 32  # a mixed child of 6 genes is whole 1 in 32 times
    assert abs(whole / 12000 - expected) < 0.015
    alone = crossover(PARENTS[:1], 3, np.random.default_rng(2), local=0.0)
    assert (alone == PARENTS[0]).all()
