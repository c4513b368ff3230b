"""How a latency figure is made, in the search and in the final re-measurement: one place, so
that the code that measures and results.json, which says how, cannot disagree.

Why these: ``benchmarks/measurement_stability.py`` measures rankings of artifacts of known
order, repeated over rounds, under each estimator; docs/measurement.md has the figures.
"""

from __future__ import annotations

from dataclasses import asdict

from petra.config import RunConfig
from petra.profilers import TimingPolicy

#: a search-time figure: the fastest p50 of SEARCH_SESSIONS fresh sessions (after the settings
#: screen), each timed until a 3% interval of the median or for 1 s. Why 3: candidates of a
#: search are measured minutes apart, and the ranking of 8 artifacts of known order, each
#: figure taken from a random round, must hold Kendall tau >= 0.9 in every one of 300 pairs.
#: On one AMD EPYC VM one session fell to 0.81 and the fastest of 2 held 0.905 (2026-12-02); on
#: the same kind of VM three days later 1 session fell to 0.62 and 2 to 0.81, while 3 held 1.000
#: both times. Dividing by an interleaved reference's figure did not help either time
#: (benchmarks/results/measurement_stability_search*.json; 0.42-0.46 s per session)
SEARCH_POLICY = TimingPolicy(rel_ci=0.03, min_runs=30, max_time_s=1.0)
SEARCH_SESSIONS: int = RunConfig.model_fields["search_sessions"].default
#: a final figure: each round a fresh session, rounds interleaved across the front and the
#: baselines, the fastest round's p50 (``Measurement.fastest_of``), more rounds until reproduced
FINAL_POLICY = TimingPolicy(rel_ci=0.01, min_runs=50, max_time_s=1.0)


def describe(final_sessions: int, final_max_sessions: int, search_sessions: int) -> dict:
    """The ``estimator`` entry of results.json."""
    return {
        "search": {"statistic": f"fastest p50 of {search_sessions} fresh sessions",
                   "sessions": search_sessions, "paired_reference": False, "policy": asdict(SEARCH_POLICY)},
        "final": {"statistic": "fastest session's p50; sessions interleaved across the front and "
                               "the baselines, more until the fastest is reproduced within 2%",
                  "sessions": final_sessions, "max_sessions": final_max_sessions,
                  "policy": asdict(FINAL_POLICY)},
    }
