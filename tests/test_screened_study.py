"""Runtime settings screened per artifact instead of searched: a tiny study on real data and ONNX
Runtime (prune/fine-tune off, so only the export, the quantizer and the measurements run)."""

import pytest
from typer.testing import CliRunner

from petra.config import load_config
from petra.exporters import Precision
from petra.optimizer.genome import CandidateConfig, SearchSpace
from petra.optimizer.remeasure import remeasure
from petra.optimizer.study import Study
from petra.runtimes import GraphOpt

SPACE = SearchSpace(prune_ratio=(0.0,), epochs=(0,), precision=(Precision.FP32, Precision.INT8_STATIC),
                    threads=(1, 2), graph_opt=(GraphOpt.BASIC, GraphOpt.EXTENDED, GraphOpt.ALL))


@pytest.fixture
def study(request, tiny_task, tmp_path):
    cfg = load_config(final_sessions=1, final_max_sessions=1, search_sessions=1, population=2, time_budget=60,
                      output=tmp_path, max_threads=2, **getattr(request, "param", {}))
    s = Study(cfg, task=tiny_task, space=SPACE, log=lambda line: None)
    s.prepare()
    yield s
    s.builder.close()


def _plain(settings: dict) -> dict:
    return {k: getattr(v, "value", v) for k, v in settings.items()}


def test_trials_record_the_setting_they_were_measured_at(study):
    assert study.space.threads == (1,) and study.space.graph_opt == (GraphOpt.ALL,)
    assert not {"threads", "graph_opt"} & set(study.space.open_genes)
    base = study.measure_baseline()
    int8 = CandidateConfig(precision=Precision.INT8_STATIC)
    asked = study.space.decode(study.space.encode(int8))
    trial = study.run_trial(int8, 0)
    for t in (base, trial):
        m, chosen = t.measurement, t.measurement.chosen_settings
        assert chosen == min(m.screened, key=lambda e: e["p50_ms"])["settings"]
        assert _plain(t.config.runtime_settings()) == chosen  # the record says how it was measured
        assert {k: m.settings[k] for k in chosen} == chosen  # and the session ran so
    assert any(e["settings"]["graph_opt"] == "basic" for e in base.measurement.screened)  # FP32 file
    assert all(e["settings"]["graph_opt"] != "basic" for e in trial.measurement.screened)  # QDQ file
    # the genome asked for the config at default settings: it finds the trial, nothing is rebuilt
    n = len(study.trials)
    assert study.run_trial(int8, 1) is trial and study.book.by_key[asked.key] is trial
    assert len(study.trials) == n
    # the final re-measurement re-times at the recorded setting, without a screen of its own
    remeasure(study.book, [trial], 1, 1)
    again, chosen = study.trials[trial.number].measurement, trial.measurement.chosen_settings
    assert again is not trial.measurement and again.screened == trial.measurement.screened
    assert {k: again.settings[k] for k in chosen} == chosen
    results = study.write_results(study.book.front(), None)
    assert results["screened_settings"] is True
    entry = results["all_trials"][trial.number]
    assert entry["config"]["threads"] == trial.config.threads and entry["runtime_settings"]["threads"] == (
        trial.config.threads)


@pytest.mark.parametrize("study", [{"screen_settings": False}], indirect=True)
def test_without_screening_settings_are_genes_as_before(study):
    assert study.space.threads == (1, 2) and study.space.graph_opt == SPACE.graph_opt
    asked = CandidateConfig(precision=Precision.INT8_STATIC, threads=2, graph_opt=GraphOpt.EXTENDED)
    trial = study.run_trial(asked, 0)
    assert trial.config == asked.canonical() and trial.measurement.screened == []
    settings = trial.measurement.settings
    assert settings["threads"] == 2 and settings["graph_opt"] == "extended"
    assert study.write_results([], None)["screened_settings"] is False


def test_no_screen_flag_reaches_the_run_config(monkeypatch, tmp_path):
    import petra.optimizer.study
    from petra.cli import app

    seen = []
    monkeypatch.setattr(petra.optimizer.study, "run_study", lambda cfg, **kw: seen.append(cfg) or {})
    for flags, expected in (([], True), (["--no-screen"], False)):
        run_dir = str(tmp_path / str(expected))
        out = CliRunner().invoke(app, ["optimize", "--progress", "json", "--output", run_dir, *flags])
        assert out.exit_code == 0, out.output
        assert seen[-1].screen_settings is expected


def test_a_ptq_precision_slow_at_one_weight_scale_skips_the_other(tiny_task, tmp_path):
    """The seeds' PTQ probes: per-channel and per-tensor run the same kernels, so a precision that
    ran SLOW_PTQ x FP32 at its first scale is not built at its second (dynamic INT8 on a CNN is
    ORT's ConvInteger, several times FP32 here)."""
    from petra.optimizer.space import SLOW_PTQ

    space = SearchSpace(prune_ratio=(0.0,), epochs=(0,), per_channel=(True, False), threads=(1,),
                        precision=(Precision.FP32, Precision.INT8_STATIC, Precision.INT8_DYNAMIC))
    cfg = load_config(final_sessions=1, final_max_sessions=1, search_sessions=1, population=2,
                      time_budget=120, output=tmp_path, max_threads=1)
    study = Study(cfg, task=tiny_task, space=space, log=lambda line: None)
    study.prepare()
    try:
        base = study.measure_baseline()
        study.loop._fastest_ptq(base, base.config.runtime)
    finally:
        study.builder.close()
    for p in (Precision.INT8_STATIC, Precision.INT8_DYNAMIC):
        built = [t for t in study.trials if t.config.precision is p]
        first = built[0].measurement.p50_ms / base.measurement.p50_ms
        assert built[0].config.per_channel and len(built) == (1 if first >= SLOW_PTQ else 2)
        ratios = study.loop._ptq_ratios[p]
        assert ratios[0] == pytest.approx(first) and len(ratios) == len(built)
    # ConvInteger: the second scale of dynamic INT8 was skipped, on whatever CPU
    assert len([t for t in study.trials if t.config.precision is Precision.INT8_DYNAMIC]) == 1
