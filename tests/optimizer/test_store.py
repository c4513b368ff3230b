"""The study store, and resume after kill -9 / Ctrl-C of a real `petra optimize` process."""

import dataclasses
import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from petra.optimizer.genome import CandidateConfig
from petra.optimizer.records import Trial, TrialState
from petra.optimizer.store import TRIALS, StudyStore
from petra.profilers.measure import Measurement
from petra.profilers.timing import Timing


def _trial(n, state=TrialState.COMPLETE):
    m = Measurement(Timing((1.0, 1.1, 0.9), 10), 8, Timing((4.0, 4.2), 10), 1234, 0.01,
                    {"threads": 1}, (0.1, 0.2, 0.3), (0.2, 0.2, 0.3))
    return Trial(n, 0, CandidateConfig(prune_ratio=n / 10), state, reason=None, val=99.0, test=98.5,
                 drop=0.1, measurement=m, artifact=f"trials/{n}/model.onnx", stage_s={"prune_s": 0.1},
                 elapsed_s=1.5)


def test_roundtrip_and_wal(tmp_path):
    store = StudyStore(tmp_path / "study.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.init_study("0.1.0", "digits", "onnxruntime", {"task": "digits"})
    store.init_study("9.9.9", "other", "x", {})  # never overwrites the study it holds
    assert store.run_config() == {"task": "digits"}
    t = _trial(1)
    store.save_trial(t, (1, 2, 3))
    failed = Trial(2, 1, CandidateConfig(prune_ratio=0.7), TrialState.FAIL, reason="export: boom")
    store.save_trial(failed)
    back = store.trials()
    assert [x.number for x in back] == [1, 2]
    assert back[0].config == t.config and back[0].measurement.p50_ms == t.measurement.p50_ms
    assert back[0].measurement.throughput_sps == pytest.approx(t.measurement.throughput_sps)
    assert back[0].fitness() == t.fitness() and back[1].reason == "export: boom"
    with pytest.raises(sqlite3.IntegrityError):  # a config is stored once, ever
        store.save_trial(_trial(1))
    store.save_population(0, [(0, 1), (1, 1)])
    store.save_population(1, [(2, 2), (3, 3)])
    assert store.last_population() == (1, [(2, 2), (3, 3)])
    store.set_meta("baseline", 1)
    assert store.get_meta("baseline") == 1 and store.get_meta("missing", 7) == 7


def test_update_trial_replaces_the_record(tmp_path):
    store = StudyStore(tmp_path / "study.db")
    t = _trial(1)
    store.save_trial(t, (1, 2))
    faster = dataclasses.replace(t.measurement, rounds=3)
    store.update_trial(dataclasses.replace(t, drop=-0.2, measurement=faster))
    (back,) = store.trials()
    assert back.drop == -0.2 and back.measurement.rounds == 3 and back.config == t.config


def test_a_store_with_pruned_trials_reads_and_takes_stopped_ones(tmp_path):
    """Before the rename successive halving's state was PRUNED, and the table's CHECK knew only
    that name: opening such a store renames the state and accepts STOPPED."""
    path = tmp_path / "study.db"
    old = sqlite3.connect(path)
    old.executescript(TRIALS.replace("'STOPPED'", "'PRUNED'"))
    old.execute("INSERT INTO trials (number, key, generation, state, config, finished) "
                "VALUES (0, 'k0', 1, 'PRUNED', ?, 0)", (json.dumps(CandidateConfig().to_json()),))
    old.commit()
    old.close()
    store = StudyStore(path)
    assert [t.state for t in store.trials()] == [TrialState.STOPPED_EARLY]
    store.save_trial(_trial(1, TrialState.STOPPED_EARLY))
    assert [t.state for t in store.trials()] == [TrialState.STOPPED_EARLY] * 2


def _start(out, *extra):
    quick_end = out.parent / "quick-end.yaml"  # 2 final rounds: the end is not under test here
    quick_end.write_text("final_sessions: 2\nfinal_max_sessions: 2\nsearch_sessions: 1\n")
    cmd = [sys.executable, "-m", "petra.cli", "optimize", "--task", "tests.tiny_tasks:digits_w8_short",
           "--config", str(quick_end), "--output", str(out), "--max-threads", "1", "--progress", "quiet",
           *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_trials(out, n, proc, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        db = out / "study.db"
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    if con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] >= n:
                        return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.3)
    raise AssertionError("no trials finished in time")


def _rows(out):
    with sqlite3.connect(out / "study.db") as con:
        return con.execute("SELECT number, key, finished FROM trials ORDER BY number").fetchall()


def test_kill_9_then_resume_loses_and_reruns_nothing(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--generations", "1", "--population", "4", "--time-budget", "3000")
    _wait_for_trials(out, 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(out)
    assert len(before) >= 4
    done = subprocess.run([sys.executable, "-m", "petra.cli", "resume", str(out), "--progress", "quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    after = _rows(out)
    assert after[: len(before)] == before  # untouched: same numbers, keys, finish times
    assert len({k for _, k, _ in after}) == len(after)  # nothing evaluated twice
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "complete" and results["trials"] == len(after)
    assert results["generations_completed"] == 1
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert len(lines) == len(after)


def test_ctrl_c_writes_valid_results(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--generations", "20", "--population", "4", "--time-budget", "600")
    _wait_for_trials(out, 3, proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr.read()
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert results["trials"] == len(_rows(out)) >= 3
    assert (out / "best" / "model.onnx").is_file()


def test_optimize_refuses_a_folder_holding_a_study(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    StudyStore(out.mkdir() or out / "study.db").init_study("0", "digits-w8", "onnxruntime", {})
    proc = subprocess.run([sys.executable, "-m", "petra.cli", "optimize", "--output", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "petra resume" in proc.stderr and "Traceback" not in proc.stderr


def test_measurement_with_batch_timings_roundtrips():
    from petra.optimizer.store import measurement_from_state, measurement_to_state

    m = _trial(1).measurement
    m.batch_timings = {8: Timing((2.0, 2.1), 10, 0.02)}
    back = measurement_from_state(json.loads(json.dumps(measurement_to_state(m))))
    assert back.batch_timings[8].p50 == m.batch_timings[8].p50 and back.timings.keys() == m.timings.keys()
    assert back.load_before == m.load_before


def test_a_log_left_short_by_a_kill_is_completed_from_the_store(tmp_path, tiny_task):
    """A kill between the store's commit and the append to trials.jsonl (or during it) leaves
    the log short; loading the run rewrites it from the store, which is the truth."""
    from petra.optimizer.events import Fanout
    from petra.optimizer.trials import TrialBook

    store = StudyStore(tmp_path / "study.db")
    store.init_study("0.1.0", "digits", "onnxruntime", {"task": "digits"})
    book = TrialBook(tiny_task, 1.0, tmp_path, store, Fanout(), clock=lambda: 0.0)
    for n in range(3):
        book.record(_trial(n))
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    (tmp_path / "trials.jsonl").write_text(lines[0] + "\n" + lines[1][:17])  # a line cut short
    again = TrialBook(tiny_task, 1.0, tmp_path, StudyStore(tmp_path / "study.db"), Fanout(),
                      clock=lambda: 0.0)
    again.load()
    entries = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert [e["trial"] for e in entries] == [0, 1, 2]
