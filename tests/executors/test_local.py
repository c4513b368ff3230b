"""The local executors: sequential, and parallel training with measurements one at a time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from petra.compression.pruning import Importance
from petra.config import load_config
from petra.executors import Job, ParallelExecutor, SequentialExecutor, make_executor
from petra.executors.local import split_cores
from petra.exporters import Precision
from petra.optimizer.genome import CandidateConfig, Regularizer
from petra.optimizer.records import TrialState
from petra.optimizer.study import Study
from petra.pipeline import CandidateBuilder
from petra.runtimes import get_runtime
from tests.conftest import TINY_SPACE
from tests.tiny_tasks import digits_killed_in_training

FP32 = CandidateConfig(threads=1)
INT8 = CandidateConfig(precision=Precision.INT8_STATIC, threads=1)
TRAINED = CandidateConfig(prune_ratio=0.5, importance=Importance.L2, round_to=4, epochs=1, lr=3e-3,
                          regularizer=Regularizer.KD, reg_weight=0.5, precision=Precision.INT8_STATIC,
                          threads=1)


def test_split_cores_disjoint_then_shared():
    assert split_cores([0, 1, 2, 3], 2) == [[0, 2], [1, 3]]
    assert split_cores([0, 1], 1) == [[0, 1]]
    assert split_cores([0, 1], 3) == [[0], [1], [0]]


def test_make_executor_follows_the_config(tmp_path):
    assert isinstance(make_executor(load_config(output=tmp_path)), SequentialExecutor)
    par = make_executor(load_config(output=tmp_path, workers=2))
    assert isinstance(par, ParallelExecutor) and par.workers == 2
    limited = make_executor(load_config(output=tmp_path, trial_timeout=60, trial_memory_mb=2048))
    assert isinstance(limited, ParallelExecutor) and limited.workers == 1
    assert (limited.timeout_s, limited.memory_mb) == (60, 2048)


def builder(task, teacher, out: Path) -> CandidateBuilder:
    return CandidateBuilder(task, teacher, get_runtime("onnxruntime"), out, stage_cache=False)


def test_parallel_matches_sequential(tiny_task, tiny_teacher, tmp_path):
    """Same jobs, same artifacts and metrics: where a candidate trains does not change it."""
    jobs = [Job(i, c) for i, c in enumerate((FP32, INT8, TRAINED))]
    seq_builder = builder(tiny_task, tiny_teacher, tmp_path / "seq")
    seq = SequentialExecutor()
    seq.start(seq_builder)
    by_seq = {o.job.index: o for o in seq.run(jobs)}
    seq_builder.close()

    par_builder = builder(tiny_task, tiny_teacher, tmp_path / "par")
    par = ParallelExecutor(2)
    par.start(par_builder)
    try:
        by_par = {o.job.index: o for o in par.run(jobs)}
    finally:
        par.close()
        par_builder.close()
    assert sorted(by_par) == [0, 1, 2]
    for i in range(3):
        a, b = by_seq[i], by_par[i]
        assert a.ok and b.ok, (a.reason, b.reason)
        assert b.built.artifact.path.is_relative_to(tmp_path / "par")  # lands in the study's folder
        assert b.built.measurement.node is None
        assert "measure_s" in b.built.stage_s
        if i < 2:  # no training: bit-identical artifacts
            assert a.built.artifact.sha256 == b.built.artifact.sha256
            assert a.built.val == b.built.val
        else:  # trained on one core instead of two: the same model up to float reassociation
            assert abs(a.built.val - b.built.val) <= 1.5


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_training_is_paused_while_measuring(tiny_task, tiny_teacher, tmp_path):
    par_builder = builder(tiny_task, tiny_teacher, tmp_path)
    par = ParallelExecutor(2)
    par.start(par_builder)
    try:
        list(par.run([Job(0, FP32), Job(1, INT8)]))  # the pool's processes exist now
        pids = par._pids()
        assert len(pids) == 2
        with par.paused():
            time.sleep(0.2)
            assert {_state(p) for p in pids} == {"T"}  # stopped
        time.sleep(0.2)
        assert "T" not in {_state(p) for p in pids}
    finally:
        par.close()
        par_builder.close()


def test_lost_training_process_fails_only_its_trials(tiny_teacher, tmp_path):
    """A training process killed (SIGKILL) on every attempt: those trials end FAIL with the
    reason after the retries; candidates without training still complete."""
    task = digits_killed_in_training()
    teacher = task.build_model()
    teacher.load_state_dict(tiny_teacher.state_dict())
    b = builder(task, teacher, tmp_path)
    par = ParallelExecutor(2)
    par.start(b)
    try:
        out = {o.job.index: o for o in par.run([Job(0, FP32), Job(1, TRAINED), Job(2, INT8)])}
    finally:
        par.close()
        b.close()
    assert out[0].ok and out[2].ok
    assert not out[1].ok and "training process died" in out[1].reason
    assert out[1].retries == 3 and par.restarts >= 3


@pytest.mark.slow
def test_study_with_parallel_training(tiny_task, tiny_run, tmp_path):
    """A whole tiny search with two training processes has the shape of a sequential one."""
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      generations=1, population=4, time_budget=120, output=tmp_path, max_threads=1,
                      workers=2)
    results = Study(cfg, task=tiny_task, space=TINY_SPACE, log=lambda s: None).run()
    _, local, _ = tiny_run
    assert results["status"] == "complete"
    assert results["executor"]["name"] == "local-parallel" and results["executor"]["workers"] == 2
    assert set(results) - {"executor"} == set(local) - {"executor"}
    assert set(results["all_trials"][0]) == set(local["all_trials"][0])
    states = {t["state"] for t in results["all_trials"]}
    assert TrialState.COMPLETE.value in states
    assert results["best"]["ratios_to_baseline"]["p50_latency"] <= 1.0


def test_limits_stop_one_build_and_spare_the_others(tiny_task, tiny_teacher, tmp_path):
    """A build past the wall-time limit, or past the memory limit, is FAIL with that reason;
    a build without training finishes (it started again after the pool was replaced)."""
    slow = CandidateConfig(prune_ratio=0.5, round_to=4, epochs=30, lr=3e-3, threads=1)
    for limits, words in (({"timeout_s": 2.0}, "wall-time limit of 2s"),
                          ({"memory_mb": 64}, "exceeded the limit of 64 MB")):
        b = builder(tiny_task, tiny_teacher, tmp_path / next(iter(limits)))
        par = ParallelExecutor(2, **limits)
        par.start(b)
        try:
            out = {o.job.index: o for o in par.run([Job(0, slow), Job(1, INT8)])}
        finally:
            par.close()
            b.close()
        assert not out[0].ok and words in out[0].reason, out[0].reason
        if "memory_mb" not in limits:  # a process with torch loaded is over 64 MB at once
            assert out[1].ok, out[1].reason
        assert out[0].retries == 0
