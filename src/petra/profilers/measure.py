"""Measurements of a compiled session: metric, latency percentiles, throughput, size.

All timing goes through ``petra.profilers.timing.time_calls``; this module only decides what
is timed (batch 1 latency, batch-B throughput) and what is recorded beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from petra.models.base import Metric, Split
from petra.profilers.fingerprint import load_average
from petra.profilers.timing import Timing, TimingPolicy, time_calls
from petra.runtimes.base import Session


@dataclass
class Measurement:
    latency: Timing
    throughput_batch: int
    throughput_timing: Timing
    size_bytes: int
    compile_s: float
    settings: dict
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def p50_ms(self) -> float:
        return self.latency.p50

    @property
    def throughput_sps(self) -> float:
        return self.throughput_batch / (self.throughput_timing.p50 / 1e3)

    def merged(self, other: Measurement) -> Measurement:
        return Measurement(
            self.latency.merged(other.latency), self.throughput_batch,
            self.throughput_timing.merged(other.throughput_timing), self.size_bytes,
            self.compile_s, self.settings, self.load_before, other.load_after, self.extra,
        )

    def to_json(self) -> dict:
        lat = self.latency.summary()
        return {
            "latency_ms": {k: lat[k] for k in ("p50", "p90", "p99", "mean", "ci95_low", "ci95_high")},
            "latency_runs": lat["runs"],
            "throughput_sps": self.throughput_sps,
            "throughput_batch": self.throughput_batch,
            "size_bytes": self.size_bytes,
            "compile_s": self.compile_s,
            "runtime_settings": self.settings,
            "load_avg_before": self.load_before,
            "load_avg_after": self.load_after,
        }


def measure(
    session: Session,
    sample: np.ndarray,
    *,
    size_bytes: int,
    throughput_batch: int = 32,
    policy: TimingPolicy = TimingPolicy(),
) -> Measurement:
    """Latency at batch 1 and throughput at ``throughput_batch``, both on real inputs."""
    one = np.ascontiguousarray(sample[:1])
    reps = -(-throughput_batch // len(sample))
    batch = np.ascontiguousarray(np.concatenate([sample] * reps)[:throughput_batch])
    before = load_average()
    latency = time_calls(lambda: session.run(one), policy)
    throughput = time_calls(lambda: session.run(batch), policy)
    return Measurement(latency, throughput_batch, throughput, size_bytes, session.compile_s,
                       dict(session.settings), before, load_average())


def evaluate_metric(session: Session, split: Split, metric: Metric) -> float:
    """The task metric computed by the compiled session itself, never by eager torch."""
    return metric(session.run_batched(split.x), split.y)
