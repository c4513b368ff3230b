"""Measurements of a compiled session: metric, latency percentiles, throughput, memory, load.

All timing goes through ``petra.profilers.timing.time_calls``; this module only decides what
is timed (latency at the first batch size, throughput at each further one) and what is
recorded beside it, so that a figure never travels without its error bar, the load it was
taken under and the machine it came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from petra.errors import CandidateError
from petra.profilers.resources import CpuWatch, load_average
from petra.profilers.timing import Timing, TimingPolicy, time_calls
from petra.runtimes.base import Session

#: other processes keeping more than this many cores busy (mean over the measurement) = loaded.
#: An idle machine shows ~0.01-0.05 (kernel threads, this shell); one neighbour busy-loop ~1.
LOADED_CORES = 0.25
#: the fastest session's p50 stands once another fresh session comes within this of it
SESSION_AGREEMENT = 0.02


def sessions_agree(p50s: Sequence[float], agree: float = SESSION_AGREEMENT) -> bool:
    """Whether the fastest session's p50 was reproduced by a second session within ``agree``.

    Why: a slow session is slow from start to end with a tight interval of its own, so several
    slow sessions in a row (a stretch of host contention lasting seconds) look as trustworthy
    as fast ones, and the fastest of them is still too slow. Slow sessions scatter (measured:
    1.4-2.1x of the fast figure) while fast ones repeat within 1-3%, so the minimum is taken as
    the machine's figure only when it repeats; until then more sessions are opened.
    """
    if len(p50s) < 2:
        return False
    first, second = sorted(p50s)[:2]
    return second <= first * (1 + agree)


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
    latency_batch: int = 1
    #: timings at batch sizes other than the latency and throughput ones (``petra bench --batch``)
    batch_timings: dict[int, Timing] = field(default_factory=dict)
    #: highest resident memory of the measuring process while this session was compiled and run
    peak_rss_bytes: int | None = None
    #: that peak minus the resident memory before compiling: what the session itself took
    session_rss_bytes: int | None = None
    threads: dict = field(default_factory=dict)
    #: mean cores kept busy by other processes on the measured cores (see ``resources.CpuWatch``)
    other_load_cores: float | None = None
    fingerprint: dict = field(default_factory=dict)
    rounds: int = 1
    #: the cluster node that measured (a Ray node id); None on this machine
    node: str | None = None
    #: p50 of each independent session when the figure is the fastest of several (see fastest_of)
    session_p50s: tuple[float, ...] = ()
    #: the brief batch-1 screen before the figure: ``{"settings": ..., "p50_ms": ...}`` per setting
    #: (plain JSON values); the figure was then taken at the fastest one. Empty: not screened
    screened: list[dict] = field(default_factory=list)
    #: wall seconds the screen took (kept apart from the measurement's own time)
    screen_s: float = 0.0

    @property
    def p50_ms(self) -> float:
        return self.latency.p50

    @property
    def throughput_sps(self) -> float:
        return self.throughput_batch / (self.throughput_timing.p50 / 1e3)

    @property
    def chosen_settings(self) -> dict | None:
        """The screened setting with the lowest p50: the one the figure was taken at."""
        return min(self.screened, key=lambda e: e["p50_ms"])["settings"] if self.screened else None

    @property
    def timings(self) -> dict[int, Timing]:
        """Every timed batch size, ascending."""
        out = {self.latency_batch: self.latency, self.throughput_batch: self.throughput_timing}
        return dict(sorted((out | self.batch_timings).items()))

    def throughput(self, batch: int) -> float:
        return batch / (self.timings[batch].p50 / 1e3)

    @property
    def interval_met(self) -> bool:
        return all(t.met for t in self.timings.values())

    @property
    def loaded(self) -> bool:
        return self.other_load_cores is not None and self.other_load_cores > LOADED_CORES

    @property
    def reproduced(self) -> bool | None:
        """Whether the fastest of several sessions was reproduced (None: a single session)."""
        return sessions_agree(self.session_p50s) if len(self.session_p50s) > 1 else None

    @property
    def noisy(self) -> bool:
        """A figure not to be trusted as tight: interval missed, others used the cores, or the
        fastest of several sessions was never reproduced."""
        return not self.interval_met or self.loaded or self.reproduced is False

    @classmethod
    def fastest_of(cls, ms: Sequence[Measurement]) -> Measurement:
        """The session with the lowest p50 of several independent sessions (fresh compiles).

        Why not their median or pooled samples: on these machines 20-40% of fresh sessions run
        10-100% slow from start to end (placement of their buffers; stretches of host
        contention the VM cannot see) while each one's own interval is tight, and nothing ever
        runs faster than the machine can. In ``benchmarks/measurement_stability.py`` (10 rounds of
        8 artifacts, 5 sessions each spread across a round, idle) the fastest session's p50
        varied by 0.14-0.40% (CV) on the six artifacts of 0.03-0.30 ms, the median session's by
        up to 29%, and rankings held (Kendall tau >= 0.929 between every pair of rounds); the
        two smallest (0.02-0.03 ms) still varied by 18-21%, from one 15 s stretch in which all
        their sessions ran slow: hence callers open sessions until the fastest is reproduced
        (``sessions_agree``), and a figure whose fastest never was is flagged ``noisy``. Every
        session's p50 is kept beside the figure and the worst load is kept, so a spread-out or
        loaded figure stays visible.
        """
        if not ms:
            raise ValueError("fastest_of needs at least one measurement")
        p50s = [p for m in ms for p in (m.session_p50s or (m.p50_ms,))]
        chosen = dataclasses.replace(min(ms, key=lambda m: m.p50_ms))
        chosen.session_p50s = tuple(p50s)
        chosen.rounds = sum(m.rounds for m in ms)
        loads = [m.other_load_cores for m in ms if m.other_load_cores is not None]
        chosen.other_load_cores = max(loads) if loads else None
        chosen.load_before, chosen.load_after = ms[0].load_before, ms[-1].load_after
        return chosen

    def to_json(self, with_fingerprint: bool = False) -> dict:
        lat = self.latency.summary()
        out = {
            "latency_ms": {k: lat[k] for k in ("p50", "p90", "p99", "mean", "ci95_low", "ci95_high")},
            "latency_runs": lat["runs"],
            "latency_batch": self.latency_batch,
            "throughput_sps": self.throughput_sps,
            "throughput_batch": self.throughput_batch,
            "by_batch": {str(b): {**t.summary(), "throughput_sps": self.throughput(b)}
                         for b, t in self.timings.items()},
            "size_bytes": self.size_bytes,
            "compile_s": self.compile_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "session_rss_bytes": self.session_rss_bytes,
            "runtime_settings": self.settings,
            "thread_settings": self.threads,
            "load_avg_before": self.load_before,
            "load_avg_after": self.load_after,
            "other_load_cores": self.other_load_cores,
            "interval_met": self.interval_met,
            "loaded": self.loaded,
            "noisy": self.noisy,
            "rounds": self.rounds,
            "session_p50_ms": list(self.session_p50s),
            "reproduced": self.reproduced,
            "screened": self.screened,
            "fingerprint_id": self.fingerprint.get("id"),
            "node": self.node,
        }
        if with_fingerprint:
            out["fingerprint"] = self.fingerprint
        return out


def batch_of(sample: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` real inputs: the sample repeated as often as needed, contiguous."""
    reps = -(-batch // len(sample))
    return np.ascontiguousarray(np.concatenate([sample] * reps)[:batch])


def measure(
    session: Session,
    sample: np.ndarray,
    *,
    size_bytes: int,
    throughput_batch: int = 32,
    policy: TimingPolicy = TimingPolicy(),
    batches: Sequence[int] | None = None,
) -> Measurement:
    """Time ``session`` at each batch size (default: 1 and ``throughput_batch``) on real inputs.

    The first batch size gives the latency figure, the last the headline throughput; sizes are
    timed one after another, never at once.
    """
    sizes = sorted(set(batches or (1, throughput_batch)))
    before = load_average()
    watch = CpuWatch().start()
    timed = {b: time_calls(session.call(batch_of(sample, b)), policy) for b in sizes}
    other = watch.stop()
    first, last = sizes[0], sizes[-1]
    return Measurement(
        timed[first], last, timed[last], size_bytes, session.compile_s, dict(session.settings),
        before, load_average(), latency_batch=first,
        batch_timings={b: t for b, t in timed.items() if b not in (first, last)},
        threads={"intra_op": session.settings.get("threads")}, other_load_cores=other,
    )


def plain(settings: dict) -> dict:
    """Settings as JSON values (an enum's value), as results and the store keep them."""
    return {k: getattr(v, "value", v) for k, v in settings.items()}


def screen(open_session: Callable[[dict], Session], options: Sequence[dict], x: np.ndarray,
           policy: TimingPolicy) -> list[dict]:
    """Each of ``options`` compiled once (``open_session``) and timed briefly on ``x``: the
    entries of ``Measurement.screened``. A setting the runtime refuses is left out; when every
    one is refused, the first refusal is raised (the artifact's failure, not the setting's)."""
    out, refused = [], []
    for settings in options:
        try:
            session = open_session(settings)
        except CandidateError as exc:
            refused.append(exc)
            continue
        try:
            out.append({"settings": plain(settings), "p50_ms": time_calls(session.call(x), policy).p50})
        finally:
            del session
    if not out and refused:
        raise refused[0]
    return out


def interleaved_fastest(
    jobs: Sequence[Callable[[], Measurement]], failed: Callable[[int, CandidateError], None],
    rounds: int, max_rounds: int, more: Callable[[], bool] = lambda: True,
) -> list[Measurement | None]:
    """The final re-measurement's schedule: ``rounds`` interleaved rounds (A B A B ...) so
    that drift of the machine hits every figure alike, then further rounds, up to
    ``max_rounds`` and while ``more()`` (a run's time budget), for the figures whose fastest
    session is not yet reproduced (``sessions_agree``), interleaved among themselves. Returns
    each job's fastest session (``Measurement.fastest_of``), or None where every attempt failed
    (``failed`` was told why)."""
    done: list[list[Measurement]] = [[] for _ in jobs]
    for r in range(max(rounds, max_rounds)):
        if r >= rounds and not more():
            break
        for i, job in enumerate(jobs):
            settled = not done[i] or sessions_agree([m.p50_ms for m in done[i]])
            if r >= rounds and settled:  # reproduced, or never measured at all
                continue
            try:
                done[i].append(job())
            except CandidateError as exc:
                failed(i, exc)
    return [Measurement.fastest_of(ms) if ms else None for ms in done]
