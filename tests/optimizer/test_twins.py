"""Post-training twins: which quantizations of a trained candidate are worth a build."""

from __future__ import annotations

from petra.exporters import Precision
from petra.optimizer.genome import CandidateConfig, SearchSpace
from petra.optimizer.records import Trial, TrialState
from petra.optimizer.twins import twin_configs
from petra.profilers.measure import Measurement, Timing

SPACE = SearchSpace(precision=(Precision.FP32, Precision.INT8_STATIC), per_channel=(True, False),
                    prune_ratio=(0.0, 0.5), epochs=(0, 4), threads=(1,))
STATIC = Precision.INT8_STATIC


def _trial(config: CandidateConfig, p50: float, drop: float, state=TrialState.COMPLETE) -> Trial:
    m = Measurement(Timing((p50,) * 3, 10), 8, Timing((4 * p50,) * 3, 10), 1000, 0.01, {})
    return Trial(0, 0, config.canonical(), state, drop=drop, measurement=m)


def _book(*trials: Trial):
    """The lookup ``TrialBook.recorded`` gives: the trial of a config's key, or None."""
    by_key = {t.config.key: t for t in trials}
    return lambda c: by_key.get(c.canonical().key)


# fashion-mnist's PTQ-alone figures (Xeon AMX VM): FP32 0.28 ms, static INT8 ~0.33x
BASE = _trial(CandidateConfig(), 0.28, 0.0)
PER_CHANNEL = _trial(CandidateConfig(precision=STATIC, per_channel=True), 0.094, 0.02)
PER_TENSOR = _trial(CandidateConfig(precision=STATIC, per_channel=False), 0.093, 0.01)
TRAINED = CandidateConfig(prune_ratio=0.5, epochs=4)


def _twins(trial: Trial, *extra: Trial) -> list[tuple[Precision, bool]]:
    found = twin_configs(trial, SPACE, BASE, _book(BASE, PER_CHANNEL, PER_TENSOR, trial, *extra), 1.0)
    return sorted((c.precision.value, c.per_channel) for c in found)


def test_a_feasible_trained_candidate_gets_the_faster_quantizations():
    fp32 = _trial(TRAINED, 0.08, 0.3)
    assert _twins(fp32) == [("int8_static", False), ("int8_static", True)]
    per_channel = _trial(TRAINED.replace(precision=STATIC, per_channel=True), 0.03, 0.4)
    assert _twins(per_channel) == [("int8_static", False)]  # FP32 alone ran slower: no FP32 twin
    assert _twins(per_channel, _trial(TRAINED.replace(precision=STATIC, per_channel=False), 0.03, 0.5)) == []


def test_an_infeasible_one_close_to_the_bound_gets_the_more_accurate_ones():
    per_channel = TRAINED.replace(precision=STATIC, per_channel=True)
    near = _trial(per_channel, 0.03, 1.4, TrialState.INFEASIBLE)
    assert _twins(near) == [("fp32", True), ("int8_static", False)]
    assert _twins(_trial(per_channel, 0.03, 2.5, TrialState.INFEASIBLE)) == []  # past TWIN_DROP x max_drop
    assert _twins(_trial(per_channel, 0.03, 1.2, TrialState.STOPPED_EARLY)) == []  # a cheap-pass score


def test_no_twins_without_a_trained_stage_or_a_reference():
    assert _twins(PER_CHANNEL) == []  # PTQ alone: its twins are the seeds already
    lost = twin_configs(_trial(TRAINED, 0.08, 0.3), SPACE, BASE, _book(BASE), 1.0)
    assert lost == []  # no PTQ-alone trial measured: nothing says which would be faster


def test_a_real_runs_twins_share_the_trained_stage(tiny_task, tmp_path):
    """On the digits CNN: a fine-tuned FP32 model and a fine-tuned per-channel INT8 one (another
    torch stage) each get the twins whose choices alone ran faster than their own; whichever of
    FP32 and per-channel INT8 is faster on this machine, one of the two gets a twin. Every twin
    reuses its trained stage (never fine-tuned again) and is recorded in the batch's
    generation."""
    from petra.config import load_config
    from petra.optimizer.space import ptq_configs
    from petra.optimizer.study import Study

    cfg = load_config(final_sessions=1, final_max_sessions=1, search_sessions=1, max_drop=5.0,
                      generations=1, population=4, time_budget=600, output=tmp_path, max_threads=1)
    study = Study(cfg, task=tiny_task, space=SPACE.replace(round_to=(8,)), log=lambda s: None)
    study.prepare()
    try:
        base = study.measure_baseline()
        for c in ptq_configs(1, base.config.runtime, (STATIC,)):
            study.run_trial(c, 0)
        trained = [study.run_trial(CandidateConfig(prune_ratio=0.5, epochs=4, lr=lr, precision=p), 1)
                   for lr, p in ((1e-3, Precision.FP32), (3e-3, STATIC))]
        expected = [twin_configs(t, study.space, base, study.book.recorded, 5.0) for t in trained]
        before = len(study.trials)
        study.loop._twin_pass(trained, 2)
    finally:
        study.executor.close()
        study.builder.close()
    twins = study.trials[before:]
    assert len(twins) == sum(map(len, expected)) >= 1
    # every trial judged after the baseline knows how far its outputs are from the baseline's
    assert all(0 <= t.divergence <= 1 for t in study.trials[1:]) and study.trials[0].divergence is None
    assert study.trials[1].entry("accuracy")["metric"]["divergence_val"] == study.trials[1].divergence
    for t, want in zip(trained, expected):
        for c in want:
            twin = study.book.recorded(c)
            assert twin.config.torch_key == t.config.torch_key and twin.generation == 2
            assert twin.stage_s.get("torch_cached") == 1.0 and "finetune_s" not in twin.stage_s
