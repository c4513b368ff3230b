"""A whole tiny search, end to end, on real data and a real runtime."""

import json
import time

import onnxruntime as ort
import pytest
import torch

from petra.config import load_config
from petra.errors import ConfigError, MeasureError
from petra.models import Task
from petra.optimizer.estimators import SEARCH_SESSIONS
from petra.optimizer.records import TIE_WEIGHT, pareto_front
from petra.optimizer.search import Budget
from petra.optimizer.space import SLOW_PTQ
from petra.optimizer.study import Study
from petra.optimizer.trials import worth_remeasuring
from petra.profilers import Measurement, Timing, interleaved_fastest
from tests.conftest import TINY_SPACE


def test_results_json_fields(tiny_run):
    out, results, _ = tiny_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["status"] == "complete"
    for key in ("petra_version", "task", "runtime", "device", "elapsed_s", "trials", "failed",
                "machine", "baseline", "best", "pareto", "removed_genes"):
        assert key in on_disk, key
    assert {"cpu", "cores"} <= set(on_disk["machine"])
    for entry in [on_disk["baseline"], on_disk["best"], *on_disk["pareto"]]:
        assert {"config", "metric", "latency_ms", "throughput_sps", "size_bytes", "artifact"} <= set(entry)
        assert {"name", "val", "test"} <= set(entry["metric"])
        assert {"p50", "p90", "p99"} <= set(entry["latency_ms"])
        assert (out / entry["artifact"]).is_file()
    assert on_disk["trials"] == len(on_disk["all_trials"]) >= 4
    # the final re-measurement took the configured rounds (final_sessions = final_max_sessions = 2)
    assert on_disk["baseline"]["rounds"] == 2 and len(on_disk["baseline"]["session_p50_ms"]) == 2
    # and results.json says how its figures were made
    est = on_disk["estimator"]
    assert est["search"]["sessions"] == SEARCH_SESSIONS
    assert est["final"]["sessions"] == est["final"]["max_sessions"] == 2
    final = {e["trial"] for e in [on_disk["baseline"], *on_disk["pareto"]]}
    searched = [t for t in on_disk["all_trials"] if t["trial"] not in final and t.get("latency_ms")]
    assert searched and all(len(t["session_p50_ms"]) == SEARCH_SESSIONS for t in searched)
    assert est["final"]["policy"]["rel_ci"] < est["search"]["policy"]["rel_ci"]
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert len(lines) == on_disk["trials"]  # every trial was written the moment it ended


def test_no_config_evaluated_twice(tiny_run):
    _, results, _ = tiny_run
    keys = [t["key"] for t in results["all_trials"]]
    assert len(keys) == len(set(keys))


def test_seeds_are_in_the_first_generation(tiny_run):
    """PTQ alone at each INT8 precision, per-channel and per-tensor, then the hand-made recipe
    at the quantization measured fastest of those (within the drop) and FP32. The search
    decides on search-time figures, which trials.jsonl keeps (results.json's are re-measured
    for the front and the baseline: a baseline at 0.020 ms in the search measured 0.029 there)."""
    out, _, _ = tiny_run
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    base = next(t for t in trials if t["generation"] == -1)
    gen0 = [t for t in trials if t["generation"] == 0]
    alone = [t for t in gen0 if t["config"]["prune_ratio"] == 0.0 and t["config"]["epochs"] == 0]
    probed = {(t["config"]["precision"], t["config"]["per_channel"]): t for t in alone}
    for p in ("int8_static", "int8_dynamic"):  # per-tensor too, unless per-channel ran too slow
        ratio = probed[(p, True)]["latency_ms"]["p50"] / base["latency_ms"]["p50"]
        assert ((p, False) in probed) == (ratio < SLOW_PTQ)
    ptq = {(t["config"]["precision"], t["config"]["per_channel"]): t["latency_ms"]["p50"]
           for t in alone if t["state"] == "COMPLETE"}
    p50 = {("fp32", True): base["latency_ms"]["p50"]} | ptq
    precision, per_channel = min(p50, key=p50.get)
    assert any(t["config"]["precision"] == precision and t["config"]["prune_ratio"] == 0.5
               and (precision == "fp32" or t["config"]["per_channel"] == per_channel) for t in gen0)


def test_best_is_feasible_fast_and_loads_in_plain_onnxruntime(tiny_run, tiny_task):
    out, results, _ = tiny_run
    best, base = results["best"], results["baseline"]
    assert best["latency_ms"]["p50"] <= base["latency_ms"]["p50"]
    assert best["metric"]["drop_val"] <= 1.0
    sess = ort.InferenceSession(str(out / "best" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: tiny_task.test.x})[0]
    acc = float((logits.argmax(1) == tiny_task.test.y).mean() * 100)
    assert acc == pytest.approx(best["metric"]["test"])
    manifest = json.loads((out / "best" / "manifest.json").read_text())
    assert manifest["config"] == best["config"] and "onnxruntime" in manifest["versions"]


def test_pareto_entries_are_mutually_non_dominated(tiny_run):
    """On the search's objectives, which order equal drops by divergence from the baseline's
    outputs (``TIE_WEIGHT``): two INT8 twins at the same drop can both stay, the faster one and
    the more faithful one."""
    _, results, _ = tiny_run
    pts = [(-e["metric"]["drop_val"] - TIE_WEIGHT * e["metric"].get("divergence_val", 0.0),
            -e["latency_ms"]["p50"], -e["size_bytes"]) for e in results["pareto"]]
    for a in pts:
        for b in pts:
            dominated = all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))
            assert not dominated


def test_time_budget_stops_cleanly(tiny_task, tmp_path):
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      generations=50, population=4, time_budget=1, output=tmp_path, max_threads=1)
    results = Study(cfg, task=tiny_task, space=TINY_SPACE, log=lambda s: None).run()
    assert results["status"] == "complete" and results["generations_completed"] < 50
    assert results["best"] is not None


class Unexportable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.linalg.svdvals(x.flatten(1)[:, :64].reshape(-1, 8, 8)).repeat(1, 8))


def test_unexportable_baseline_is_a_clear_error(tiny_task, tmp_path):
    task = Task("broken", Unexportable, tiny_task.train, tiny_task.val, tiny_task.test)
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      generations=1, population=2, time_budget=30, output=tmp_path, max_threads=1)
    with pytest.raises(ConfigError, match="does not export to ONNX"):  # the probe, before training
        Study(cfg, task=task, space=TINY_SPACE, log=lambda s: None).run()


def _four_trainable_candidates(tiny_task, tmp_path):
    """A study with its baseline measured, and 4 new genomes that all train (2 prune ratios x
    with and without KD): one generation's worth for successive halving."""
    from petra.optimizer.genome import CandidateConfig, Regularizer

    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      generations=1, population=4, time_budget=1200, output=tmp_path, max_threads=1)
    study = Study(cfg, task=tiny_task, space=TINY_SPACE, log=lambda s: None)
    study.prepare()
    study.measure_baseline()
    configs = [CandidateConfig(prune_ratio=p, regularizer=r, epochs=2, lr=3e-3)
               for p in (0.0, 0.5) for r in (Regularizer.NONE, Regularizer.KD)]
    return study, [study.space.encode(c) for c in configs], len(study.trials)


def test_multi_fidelity_halves_a_generation(tiny_task, tmp_path):
    """4 new candidates that train: all get the cheap fine-tune, 2 the full one, 2 are STOPPED."""
    study, genomes, before = _four_trainable_candidates(tiny_task, tmp_path)
    fits = study.loop.evaluate_batch(genomes, 1)
    new = study.trials[before:]
    states = sorted(t.state.value for t in new)
    assert len(new) == 4 and states.count("STOPPED") == 2, states
    for t in new:
        if t.state.value == "STOPPED":
            assert "low fidelity" in t.reason and t.artifact.endswith("-low/model.onnx")
            assert t not in pareto_front(study.trials)
        else:
            assert "-low" not in t.artifact
    assert len(fits) == 4 and all(len(f) == 3 for f in fits)
    # a second call re-evaluates nothing
    assert study.loop.evaluate_batch(genomes, 2) == fits and len(study.trials) == before + 4


def test_a_child_that_removes_a_block_skips_the_cheap_pass(tiny_task, tmp_path):
    """Beside the 4 candidates that halving ranks, one that removes a residual block: it is built
    at full fidelity whatever its cheap score would have been, as a block-removing seed is."""
    from petra.compression.depth import DEPTH_GENES

    study, genomes, before = _four_trainable_candidates(tiny_task, tmp_path)
    depth = next(g for g in DEPTH_GENES if len(getattr(study.space, g)) > 1)
    shortened = study.space.decode(genomes[0]).replace(**{depth: 1})
    study.loop.evaluate_batch([*genomes, study.space.encode(shortened)], 1)
    new = {t.config.without_settings().key: t for t in study.trials[before:]}
    assert len(new) == 5 and [t.state.value for t in new.values()].count("STOPPED") == 2
    built = new[study.space.decode(study.space.encode(shortened)).key]
    assert built.state.value != "STOPPED" and "-low" not in built.artifact


def test_budget_stops_the_low_fidelity_pass_part_way(tiny_task, tmp_path):
    """The budget ends after the first cheap fine-tune: the other three are not built, nothing
    half-ranked is recorded, and the generation ends at once."""
    study, genomes, before = _four_trainable_candidates(tiny_task, tmp_path)
    built = []
    real_build = study.book.build_trials

    def counting(configs, generation, fidelity=None):
        for item in real_build(configs, generation, fidelity):
            built.append(fidelity)
            yield item

    study.book.build_trials = counting
    study.budget.out_of_time = lambda next_s=0.0: len(built) >= 1
    fits = study.loop.evaluate_batch(genomes, 1)
    assert len(built) == 1 and built[0] is not None  # one low-fidelity build, no full one
    assert len(study.trials) == before and len(fits) == 4


def test_a_cheap_pass_expected_to_overrun_does_not_start(tiny_task, tmp_path):
    """Once a full trained build is in the book, the cheap pass has an expected length; a
    budget that cannot hold it starts none of it (nor a full build, expected longer still),
    where it used to run until the budget was spent and then throw the pass away."""
    from petra.optimizer.genome import CandidateConfig

    study, genomes, before = _four_trainable_candidates(tiny_task, tmp_path)
    study.run_trial(CandidateConfig(prune_ratio=0.5, epochs=2, lr=1e-3), 0)
    built = []
    real_build = study.book.build_trials

    def counting(configs, generation, fidelity=None):
        built.append(fidelity)
        yield from real_build(configs, generation, fidelity)

    study.book.build_trials = counting
    study.budget.out_of_time = lambda next_s=0.0: next_s > 0  # time for nothing that takes time
    fits = study.loop.evaluate_batch(genomes, 1)
    assert built == [] and len(study.trials) == before + 1 and len(fits) == 4


def test_resume_into_another_search_space_is_a_one_line_error(tiny_task, tmp_path):
    """Stored genomes are indices into the space the run started with (a newer petra or an
    edited task may have narrowed a gene): resuming into another space says so up front."""
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      generations=1, population=2, time_budget=30, output=tmp_path, max_threads=1)
    Study(cfg, task=tiny_task, space=TINY_SPACE, log=lambda s: None).store.close()
    Study(cfg, task=tiny_task, space=TINY_SPACE, resume=True, log=lambda s: None).store.close()  # same: fine
    narrowed = TINY_SPACE.replace(prune_ratio=TINY_SPACE.prune_ratio[:1])
    with pytest.raises(ConfigError, match="search space changed.*gene 'prune_ratio'") as info:
        Study(cfg, task=tiny_task, space=narrowed, resume=True, log=lambda s: None)
    assert "\n" not in str(info.value)
    study = Study(cfg, task=tiny_task, space=TINY_SPACE, resume=True, log=lambda s: None)
    stored = study.store.get_meta("space")
    study.store.set_meta("space", dict(reversed(list(stored.items()))))  # an older petra's gene order
    study.store.close()
    with pytest.raises(ConfigError, match="another order") as info:
        Study(cfg, task=tiny_task, space=TINY_SPACE, resume=True, log=lambda s: None)
    assert "\n" not in str(info.value)


def test_seeded_configs_skip_the_cheap_pass(tiny_task, tmp_path):
    """The hand-made pipeline is a seed so that the front holds at least what an expert would
    build: the cheap pass must not discard it on a 1-epoch estimate."""
    study, genomes, before = _four_trainable_candidates(tiny_task, tmp_path)
    seed = study.space.decode(genomes[3])
    study.loop.seed_keys = {seed.key}
    study.loop.evaluate_batch(genomes, 1)
    new = study.trials[before:]
    assert len(new) == 4 and sum(t.state.value == "STOPPED" for t in new) == 1  # half of 3, rounded
    seeded = study.book.by_key[seed.key]  # found by the config asked for, whatever setting it ran at
    assert seeded in new and seeded.state.value != "STOPPED" and "-low" not in seeded.artifact


def _session(p50: float) -> Measurement:
    return Measurement(Timing((p50,) * 3, 10), 8, Timing((4 * p50,) * 3, 10), 100, 0.01, {})


def test_final_schedule_rounds_then_more_only_for_figures_not_reproduced():
    """Figures measured in ``rounds`` interleaved rounds; one whose fastest session is not
    reproduced within 2% gets more, up to ``max_rounds``; a failing one is reported, not fatal."""
    order: list[str] = []
    p50s = {"A": iter([1.0, 1.01, 9, 9, 9, 9]), "B": iter([2.0, 1.5, 1.2, 1.1, 1.0, 0.9])}

    def job(name):
        def run():
            order.append(name)
            if name == "C":
                raise MeasureError("boom")
            return _session(next(p50s[name]))
        return run

    failures = []
    a, b, c = interleaved_fastest([job("A"), job("B"), job("C")], lambda i, e: failures.append((i, str(e))),
                                  rounds=2, max_rounds=4)
    assert order[:6] == ["A", "B", "C"] * 2  # interleaved: A B C A B C
    assert order[6:] == ["B", "B"]  # A reproduced (1.01 within 2% of 1.0); C never measured
    assert a.p50_ms == 1.0 and a.rounds == 2 and a.reproduced
    assert b.p50_ms == 1.1 and b.rounds == 4 and b.reproduced is False and b.noisy
    assert c is None and failures == [(2, "boom"), (2, "boom")]


def test_final_schedule_stops_adding_rounds_once_the_budget_is_spent():
    """The rounds asked for always run; the further ones for unreproduced figures only while
    ``more()`` (the run's budget) says there is time."""
    order: list[str] = []
    p50s = {"A": iter([2.0, 1.5, 1.2, 1.1]), "B": iter([1.0, 1.3, 1.2, 1.1])}

    def job(name):
        def run():
            order.append(name)
            return _session(next(p50s[name]))
        return run

    left = iter([True, False])
    a, b = interleaved_fastest([job("A"), job("B")], lambda i, e: None, rounds=2, max_rounds=4,
                               more=lambda: next(left))
    assert order == ["A", "B", "A", "B", "A", "B"]  # round 3 had time, round 4 did not
    assert a.rounds == 3 and b.rounds == 3 and a.p50_ms == 1.2 and b.p50_ms == 1.0


def _measured(n: int, p50: float, size: int, val: float, measure_s: float):
    from petra.optimizer.genome import CandidateConfig
    from petra.optimizer.records import Trial, TrialState

    m = Measurement(Timing((p50,) * 3, 10), 8, Timing((4 * p50,) * 3, 10), size, 0.01, {})
    return Trial(n, 0, CandidateConfig(prune_ratio=n / 10), TrialState.COMPLETE, val=val, drop=99.0 - val,
                 measurement=m, stage_s={"measure_s": measure_s})


def test_final_reserve_is_what_re_measuring_the_front_and_baselines_will_take():
    """time_budget is the whole run's: the search stops while the final rounds still fit."""
    base = _measured(0, p50=1.0, size=100, val=99.0, measure_s=0.5)
    fast = _measured(1, p50=0.5, size=50, val=98.8, measure_s=0.2)  # on the front
    slow = _measured(2, p50=2.0, size=200, val=98.0, measure_s=9.0)  # dominated: not re-measured

    def to_remeasure():  # what TrialBook.to_remeasure gives: the baselines and the front, once
        return list({id(t): t for t in [base, *pareto_front([base, fast, slow])]}.values())

    budget = Budget(10, 3, to_remeasure)
    assert budget.final_reserve() == pytest.approx(3 * (0.5 + 0.2))
    budget.start = time.monotonic() - 7.5  # 7.5 s spent + 2.1 s reserved < 10 s
    assert not budget.out_of_time()
    budget.start = time.monotonic() - 8.0  # 8 + 2.1 >= 10: stop searching now
    assert budget.out_of_time()


def test_the_study_reserves_final_rounds_of_one_session_each(tiny_task, tmp_path):
    """A search figure took search_sessions sessions, a final round takes one."""
    cfg = load_config(final_sessions=4, final_max_sessions=8, search_sessions=3, output=tmp_path)
    study = Study(cfg, task=tiny_task, space=TINY_SPACE, log=lambda s: None)
    assert study.budget.final_sessions == pytest.approx((4 + 8) / 2 / 3)


def test_points_on_the_front_for_their_size_alone_are_not_re_timed():
    base = _measured(0, p50=1.0, size=100, val=99.0, measure_s=0.5)
    fast = _measured(1, p50=0.5, size=50, val=98.8, measure_s=0.2)
    noisy = _measured(2, p50=1.2, size=40, val=98.8, measure_s=0.6)  # may be faster in the final
    tiny = _measured(3, p50=3.3, size=10, val=98.8, measure_s=9.0)  # can never be the pick
    front = pareto_front([base, fast, noisy, tiny])
    assert tiny in front and noisy in front
    assert worth_remeasuring([base], front) == [base, fast, noisy]


def test_a_build_expected_to_overrun_the_budget_is_not_started():
    budget = Budget(100.0, final_sessions=1, to_remeasure=lambda: [], spent=60.0)
    assert not budget.out_of_time() and not budget.out_of_time(next_s=30.0)
    assert budget.out_of_time(next_s=45.0)  # 60 s spent + 45 s expected > 100 s
