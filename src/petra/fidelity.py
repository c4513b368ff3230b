"""The cheap fine-tune of successive halving: what it trains on and how it is timed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petra.models.base import Split
from petra.profilers import TimingPolicy


@dataclass(frozen=True)
class Fidelity:
    """A cheaper fine-tune: a fraction of the training data and at most ``max_epochs``.

    Latency and size depend on the architecture and quantization only, so a low-fidelity
    candidate measures them exactly; only its metric is a (pessimistic) estimate.
    """

    data_fraction: float = 0.25
    max_epochs: int = 1
    #: a ranking inside one generation needs less precision than the front's figures
    timing: TimingPolicy = TimingPolicy(rel_ci=0.1, min_runs=20, max_time_s=0.25, warmup_max_s=0.1)

    def describe(self) -> str:
        return f"{self.max_epochs} epoch(s) on {self.data_fraction:.0%} of the training data"

    def split(self, train: Split, seed: int) -> Split:
        n = max(2, int(len(train) * self.data_fraction))
        idx = np.sort(np.random.default_rng(seed).permutation(len(train))[:n])
        return Split(train.x[idx], train.y[idx])


LOW_FIDELITY = Fidelity()
