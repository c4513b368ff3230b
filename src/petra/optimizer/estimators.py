"""How a latency figure is made, in the search and in the final re-measurement: one place, so
that the code that measures and results.json, which says how, cannot disagree.

Why these: ``benchmarks/measurement_stability.py`` measures rankings of artifacts of known
order, repeated over rounds, under each estimator; docs/measurement.md has the figures.
"""

from __future__ import annotations

from dataclasses import asdict

from petra.profilers import TimingPolicy

#: a search-time figure: one fresh session per artifact (after its settings screen), the p50 of
#: its timed calls; the loop stops at a 3% interval of the median or after 1 s
SEARCH_POLICY = TimingPolicy(rel_ci=0.03, min_runs=30, max_time_s=1.0)
#: a final figure: each round a fresh session, rounds interleaved across the front and the
#: baselines, the fastest round's p50 (``Measurement.fastest_of``), more rounds until reproduced
FINAL_POLICY = TimingPolicy(rel_ci=0.01, min_runs=50, max_time_s=1.0)


def describe(final_sessions: int, final_max_sessions: int) -> dict:
    """The ``estimator`` entry of results.json."""
    return {
        "search": {"statistic": "p50 of one session", "sessions": 1, "paired_reference": False,
                   "policy": asdict(SEARCH_POLICY)},
        "final": {"statistic": "fastest session's p50; sessions interleaved across the front and "
                               "the baselines, more until the fastest is reproduced within 2%",
                  "sessions": final_sessions, "max_sessions": final_max_sessions,
                  "policy": asdict(FINAL_POLICY)},
    }
