"""Measurement: the one timing loop, latency/throughput/size, metric on the runtime, fingerprint."""

from petra.profilers.fingerprint import fingerprint, machine, versions
from petra.profilers.isolated import IsolatedMeasurer, MeasureRequest, measure_isolated
from petra.profilers.measure import Measurement, interleaved_fastest, measure, sessions_agree
from petra.profilers.timing import Timing, TimingPolicy, median_ci, should_stop, time_calls

__all__ = ["IsolatedMeasurer", "MeasureRequest", "Measurement", "Timing", "TimingPolicy",
           "fingerprint", "interleaved_fastest", "machine", "measure", "measure_isolated", "median_ci",
           "sessions_agree", "should_stop", "time_calls", "versions"]
