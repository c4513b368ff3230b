import time

import numpy as np
import pytest

from petra.profilers import TimingPolicy, machine, measure, median_ci, should_stop, time_calls, versions
from petra.profilers.timing import Timing


def test_median_ci_on_known_samples():
    samples = list(range(1, 101))  # 1..100, median 50.5
    lo, hi = median_ci(samples)
    # n=100: ranks 50 -/+ 1.96*sqrt(100)/2 = 9.8 -> sorted[40] .. sorted[60]
    assert (lo, hi) == (41.0, 61.0)
    assert median_ci([5.0]) == (5.0, 5.0)


def test_timing_percentiles():
    t = Timing(tuple(float(i) for i in range(1, 101)), warmup_runs=10)
    assert t.p50 == pytest.approx(50.5)
    assert t.percentile(99) == pytest.approx(99.01)
    s = t.summary()
    assert s["runs"] == 100 and s["ci95_low"] <= s["p50"] <= s["ci95_high"]


def test_loop_stops_when_interval_is_tight():
    t = time_calls(lambda: time.sleep(0.0005), TimingPolicy(rel_ci=0.5, min_runs=30, max_time_s=5))
    assert t.runs < 200 and t.rel_ci <= 0.5 and t.warmup_runs >= 20
    assert 0.4 < t.p50 < 5.0


def test_loop_respects_time_cap_on_noise():
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    t = time_calls(lambda: time.sleep(float(rng.exponential(0.0005))),
                   TimingPolicy(rel_ci=1e-6, min_runs=30, max_time_s=0.3, warmup_max_s=0.05))
    assert time.perf_counter() - start < 2.0
    assert t.rel_ci > 1e-6  # reported as noisy, not as tight


def test_measure_session(tiny_task, tiny_onnx):
    from petra.runtimes import get_runtime

    session = get_runtime("onnxruntime").compile(tiny_onnx.path)
    m = measure(session, tiny_task.val.x[:8], size_bytes=tiny_onnx.size_bytes, throughput_batch=16,
                policy=TimingPolicy(max_time_s=0.3))
    j = m.to_json()
    assert j["latency_ms"]["p50"] > 0 and j["throughput_batch"] == 16
    assert j["latency_ms"]["p50"] <= j["latency_ms"]["p90"] <= j["latency_ms"]["p99"]
    assert j["throughput_sps"] > 1000 / j["latency_ms"]["p50"]  # batching pays


def test_fingerprint():
    m = machine()
    assert m["cores"] >= 1 and m["cpu"]
    assert "torch" in versions() and "onnxruntime" in versions()


def test_stopping_rule_on_known_samples():
    policy = TimingPolicy(rel_ci=0.02, min_runs=30, max_time_s=1.0)
    tight = [1.0] * 15 + [1.001] * 15  # CI 1.0 .. 1.001: 0.1% wide
    assert should_stop(tight, elapsed_s=0.0, policy=policy)
    assert not should_stop(tight[:20], elapsed_s=0.0, policy=policy)  # too few runs, however tight
    spread = list(np.linspace(1.0, 2.0, 40))  # CI of the median 1.33 .. 1.69: far over 2%
    assert not should_stop(spread, elapsed_s=0.5, policy=policy)
    assert should_stop(spread, elapsed_s=1.5, policy=policy)  # time cap ends it ...
    noisy = Timing(tuple(spread), 0, policy.rel_ci)
    assert not noisy.met and noisy.summary()["interval_met"] is False  # ... and it says so
    assert Timing(tuple(tight), 0, policy.rel_ci).met


def test_policy_rejects_nonsense():
    from petra.errors import ConfigError

    for bad in ({"rel_ci": 0}, {"rel_ci": 1.5}, {"min_runs": 0}, {"max_time_s": 0}):
        with pytest.raises(ConfigError):
            TimingPolicy(**bad)
