"""Measurement: the one timing loop, latency/throughput/size, metric on the runtime, fingerprint."""

from petra.profilers.fingerprint import machine, versions
from petra.profilers.measure import Measurement, evaluate_metric, measure
from petra.profilers.timing import Timing, TimingPolicy, median_ci, time_calls

__all__ = ["Measurement", "Timing", "TimingPolicy", "evaluate_metric", "machine", "measure",
           "median_ci", "time_calls", "versions"]
