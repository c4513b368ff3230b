"""Crossover that leaves half the children whole: each child is, with probability LOCAL, a copy
of one parent (which the mutation then moves by about one gene), and otherwise a uniform mix of
two neighbouring parents.

Why: a candidate here costs seconds to minutes, so a run sees two to four generations of six
children, and the parents NSGA-II picks are few and unlike each other: the FP32 baseline, INT8
alone, the deep seed (blocks removed, 24 epochs of distillation). A uniform mix of the deep seed
and the baseline keeps half of each: in the fashion-mnist 10 min run on the Xeon AMX VM
(7120106), the first generation's children were two untrained models with a block removed
(validation drops 3.1 and 71) and one 24-epoch model with most of the deep seed's shape lost
(144 s for 0.208x FP32's p50, against the deep seed's 0.127x), and no child was a small step
from the deep seed. Recombination still pays where the parents share a shape: on digits the
deep seed's shape with an aggressive seed's stage ratios was the run's best (0.097x). Copy then
mutate is the local search of memetic algorithms; mixing is the GA's own; this keeps both.
"""

from __future__ import annotations

import numpy as np

#: the probability that a child is a copy of one parent (before mutation)
LOCAL = 0.5


def crossover(parents: np.ndarray, n_children: int, rng: np.random.Generator,
              local: float = LOCAL) -> np.ndarray:
    """``n_children`` genomes from ``parents`` (one per row, best first as NSGA-II's selection
    orders them): child k starts from parent k mod n; with probability ``local``, or when
    there is one parent, it is that parent's copy, otherwise each gene comes from it or from
    parent k+1 mod n with equal odds."""
    parents = np.asarray(parents)
    n = len(parents)
    children = []
    for k in range(n_children):
        a = parents[k % n]
        if n < 2 or rng.random() < local:
            children.append(a.copy())
            continue
        b = parents[(k + 1) % n]
        children.append(np.where(rng.random(a.shape[0]) < 0.5, b, a))
    return np.array(children, dtype=parents.dtype).reshape(n_children, parents.shape[1])
