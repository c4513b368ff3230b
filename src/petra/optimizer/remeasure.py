"""The final re-measurement: the front and the baselines re-timed in interleaved rounds, and
the reference baseline chosen again by the final figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from petra.errors import CandidateError
from petra.exporters import Artifact
from petra.optimizer.estimators import FINAL_POLICY
from petra.optimizer.records import Trial
from petra.optimizer.trials import TrialBook
from petra.profilers import interleaved_fastest


def remeasure(book: TrialBook, trials: list[Trial], rounds: int, max_rounds: int,
              more: Callable[[], bool] = lambda: True) -> None:
    """Re-time ``trials`` in interleaved rounds (A B A B ...) so that drift of the machine hits
    all of them alike; the final figures replace the search's. Each round is a fresh session in
    the isolated worker and the figure is the fastest round's (slow sessions cannot move it, see
    ``Measurement.fastest_of``); trials whose fastest round was not reproduced get further
    rounds, interleaved among themselves. A trial whose re-measurement fails keeps its search
    figure (the reason is logged). Each is re-timed at the settings its config records (the
    fastest of its screen in a screened search): nothing is screened again. Rounds past
    ``rounds`` run only while ``more()``: the default digits run took 201 s of its 180 s when four
    noisy figures each ran 10 rounds against a reserve of 7.5."""
    log = book.events.message
    arts = {t.number: Artifact.of(book.out / t.artifact) for t in trials}

    def failed(i: int, exc: CandidateError) -> None:
        log(f"  re-measuring trial {trials[i].number} failed ({exc}); keeping its search figure")

    merged = interleaved_fastest(
        [lambda t=t: book.executor.measure(t.config, arts[t.number], FINAL_POLICY) for t in trials],
        failed, rounds, max_rounds, more)
    for t, m in zip(trials, merged):
        if m is None:
            continue
        if t.measurement is not None:  # re-timed at the recorded settings; the screen stays on record
            m = replace(m, screened=t.measurement.screened, screen_s=t.measurement.screen_s)
        book.update(replace(t, measurement=m))
    noisy = [t.number for t in trials if (m := book.trials[t.number].measurement) is not None and m.noisy]
    if noisy:
        log(f"  note: trials {noisy} did not reach the {FINAL_POLICY.rel_ci:.0%} interval, ran beside "
            "other load or never reproduced their fastest session; their figures are flagged noisy "
            "in results.json")


def refer_to_faster_baseline(book: TrialBook) -> None:
    """After the re-measurement, the reference of every ratio is the baseline that is faster
    by the final figures: the search-time pick can flip on a noisy machine (a run here said
    "onnxruntime 0.3568 ms, openvino 0.4069 ms; openvino is faster"), and ratios to the slower
    one overstate every gain. Drops and feasibility stay as decided: both FP32 baselines score
    the same validation metric, and where they do not, nothing switches."""
    measured = [b for b in book.baselines.values() if b.measurement is not None]
    faster = min(measured, key=lambda b: b.measurement.p50_ms, default=book.baseline)
    if faster is book.baseline or faster.val != book.baseline.val:
        return
    book.events.message(
        f"  re-measured: the {faster.config.runtime} baseline is the faster one "
        f"({faster.measurement.p50_ms:.4f} ms against {book.baseline.measurement.p50_ms:.4f} ms); "
        "ratios are to it")
    book.set_baselines(book.baselines, faster)
