"""The cheap fine-tune of successive halving: how long it trains and how it is timed."""

from __future__ import annotations

from dataclasses import dataclass

from petra.profilers import TimingPolicy


@dataclass(frozen=True)
class Fidelity:
    """A cheaper fine-tune: the candidate's own epochs, each ``step_fraction`` as long, on all
    of the training data.

    Why a fraction of the candidate's own fine-tune, as Hyperband budgets a resource, and not a
    fixed one epoch on a quarter of the data: the fixed pass gave every candidate the same 32
    steps, so it ranked a candidate by how little it had changed, not by what its fine-tune
    could recover. On fashion-mnist every candidate that removed two residual blocks scored
    17-54 points of drop cheap and was stopped, while one of them (prune 50%, stages 0-1
    shortened), fine-tuned 24 epochs, lost 0.39 points at 0.78x the p50 of the best uniform
    prune. Latency and size depend on the architecture and quantization only, so a
    low-fidelity candidate measures them exactly; only its metric is a (pessimistic) estimate.
    """

    step_fraction: float = 0.25
    #: a ranking inside one generation needs less precision than the front's figures
    timing: TimingPolicy = TimingPolicy(rel_ci=0.1, min_runs=20, max_time_s=0.25, warmup_max_s=0.1)

    def describe(self) -> str:
        return f"{self.step_fraction:.0%} of its fine-tune steps"

    def steps(self, full: int) -> int:
        """Steps per epoch of the cheap fine-tune whose full epoch is ``full`` steps."""
        return max(1, round(full * self.step_fraction))


LOW_FIDELITY = Fidelity()
