"""THE timing loop of petra. Every latency and throughput figure goes through ``time_calls``.

Fixed "10 warm-up / 20 repeats" schemes give a number without an error bar. Here the warm-up
runs until consecutive chunk medians agree, then calls are repeated until the distribution-free
95% confidence interval of the median is narrower than ``rel_ci`` of the median, or a time cap
is reached; the interval is reported either way, so a noisy figure is visible as noisy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from petra.errors import ConfigError

CHUNK = 10


@dataclass(frozen=True)
class TimingPolicy:
    """``rel_ci``: target width of the median's 95% CI relative to the median (0.02 = 2%)."""

    rel_ci: float = 0.02
    min_runs: int = 30
    max_time_s: float = 2.0
    warmup_max_s: float = 0.5
    warmup_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.rel_ci < 1:
            raise ConfigError(f"the interval target rel_ci must be in (0, 1), got {self.rel_ci}")
        if self.min_runs < 1:
            raise ConfigError(f"min_runs must be >= 1, got {self.min_runs}")
        if self.max_time_s <= 0 or self.warmup_max_s < 0:
            raise ConfigError(f"time caps must be positive, got max_time_s={self.max_time_s}, "
                              f"warmup_max_s={self.warmup_max_s}")


@dataclass(frozen=True)
class Timing:
    """Wall-clock milliseconds of repeated calls, with the 95% CI of the median."""

    samples_ms: tuple[float, ...]
    warmup_runs: int
    #: the relative CI width the loop aimed at; None for timings not made by ``time_calls``
    target_rel_ci: float | None = None

    @property
    def runs(self) -> int:
        return len(self.samples_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def ci(self) -> tuple[float, float]:
        return median_ci(self.samples_ms)

    @property
    def rel_ci(self) -> float:
        lo, hi = self.ci
        return (hi - lo) / self.p50 if self.p50 > 0 else math.inf

    @property
    def met(self) -> bool:
        """Whether the interval reached its target; a timing without a target is taken as met."""
        return self.target_rel_ci is None or self.rel_ci <= self.target_rel_ci

    def summary(self) -> dict[str, float]:
        lo, hi = self.ci
        return {
            "p50": self.p50, "p90": self.percentile(90), "p99": self.percentile(99),
            "mean": float(np.mean(self.samples_ms)), "ci95_low": lo, "ci95_high": hi,
            "runs": self.runs, "rel_ci": self.rel_ci, "target_rel_ci": self.target_rel_ci,
            "interval_met": self.met,
        }


def median_ci(samples: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Order-statistic CI of the median (binomial normal approximation): no normality assumed."""
    s = np.sort(np.asarray(samples))
    n = len(s)
    if n == 0:
        return (math.nan, math.nan)
    half = z * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)))
    hi = min(n - 1, int(math.ceil(n / 2 + half)))
    return float(s[lo]), float(s[hi])


def should_stop(samples: Sequence[float], elapsed_s: float, policy: TimingPolicy) -> bool:
    """The stopping rule: enough runs and a tight interval, or the time cap (reported as noisy)."""
    if len(samples) < policy.min_runs:
        return False
    lo, hi = median_ci(samples)
    med = float(np.median(samples))
    if med > 0 and (hi - lo) / med <= policy.rel_ci:
        return True
    return elapsed_s > policy.max_time_s


def time_calls(fn: Callable[[], object], policy: TimingPolicy = TimingPolicy()) -> Timing:
    clock = time.perf_counter
    # Warm-up: until two consecutive chunk medians agree (caches, allocators, lazy init).
    warm, prev, start = 0, None, clock()
    while True:
        chunk = []
        for _ in range(CHUNK):
            t0 = clock()
            fn()
            chunk.append(clock() - t0)
        warm += CHUNK
        med = float(np.median(chunk))
        if prev is not None and abs(med - prev) <= policy.warmup_tolerance * prev:
            break
        if clock() - start > policy.warmup_max_s:
            break
        prev = med
    # Measurement: until the median's CI is tight enough or the time cap is hit.
    samples: list[float] = []
    start = clock()
    while True:
        for _ in range(CHUNK):
            t0 = clock()
            fn()
            samples.append((clock() - t0) * 1e3)
        if should_stop(samples, clock() - start, policy):
            break
    return Timing(tuple(samples), warm, policy.rel_ci)
