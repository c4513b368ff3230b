"""When a search stops before its budget: the validation front has not improved for a set number
of generations (``--stagnation``), measured as its hypervolume."""

from __future__ import annotations

from petra.optimizer.hypervolume import normalized_hypervolume
from petra.optimizer.records import Trial

#: a front "improved" when its validation hypervolume grew by more than this share: smaller
#: gains are what re-measuring the same points gives on a noisy machine
IMPROVEMENT = 0.01


def front_hypervolume(front: list[Trial], baseline: Trial, max_drop: float) -> float:
    """Share of the (validation drop, p50 ratio) box [0, max_drop] x [0, 1] the front dominates."""
    base = baseline.measurement.p50_ms
    points = [(max(0.0, t.drop or 0.0), t.measurement.p50_ms / base) for t in front if t.ok]
    return normalized_hypervolume(points, max(max_drop, 1e-3))


class Stagnation:
    """Counts generations whose front is no better than the best so far (kept across resume)."""

    def __init__(self, limit: int, state: dict | None = None) -> None:
        self.limit = limit
        self.best, self.since = (state or {}).get("best", 0.0), (state or {}).get("since", 0)

    def update(self, hv: float) -> bool:
        """True when the run should stop: ``limit`` generations without improvement. Before the
        first feasible point that beats the baseline there is nothing to improve on, and the
        search goes on for as long as the budget lasts."""
        if hv > self.best * (1 + IMPROVEMENT) + 1e-9:
            self.best, self.since = hv, 0
        elif self.best > 0:
            self.since += 1
        return self.since >= self.limit

    def state(self) -> dict:
        return {"best": self.best, "since": self.since}
