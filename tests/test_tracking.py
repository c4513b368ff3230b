"""MLflow logging against a real local store: one parent run, one nested run per trial."""

import pytest

from petra.config import load_config
from petra.optimizer.events import LogEvents
from petra.optimizer.study import Study
from petra.tracking import with_mlflow
from tests.conftest import TINY_SPACE

mlflow = pytest.importorskip("mlflow")


def test_study_logs_to_a_local_file_store(tiny_task, tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      generations=1, population=2, time_budget=60, output=tmp_path / "run",
                      max_threads=1, mlflow_uri=uri)
    sink = with_mlflow(LogEvents(lambda s: None), cfg.mlflow_uri)
    results = Study(cfg, task=tiny_task, space=TINY_SPACE, progress=sink).run()
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("petra")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == results["trials"]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best.ratio.p50_latency"] == pytest.approx(
        results["best"]["ratios_to_baseline"]["p50_latency"])
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all("latency_ms.p50" in c.data.metrics for c in children if c.data.tags["state"] != "FAIL")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "best")}
    assert "best/model.onnx" in artifacts and "best/USAGE.md" in artifacts
