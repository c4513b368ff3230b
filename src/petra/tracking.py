"""Optional MLflow logging as a progress sink: one run per study, one nested run per trial.

MLflow is an extra (``pip install petra[mlflow]``); it is imported only when a URI is given, so
the core install stays small and a missing package is a one-line error, not an ImportError.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from petra.errors import ConfigError
from petra.optimizer.events import Events, Fanout


def with_mlflow(sink: Events, uri: str | None) -> Events:
    """``sink``, and MLflow beside it when a tracking URI is given (the CLI and ``petra.optimize``
    compose the sinks; the optimizer only emits events)."""
    return Fanout(sink, MlflowProgress(uri)) if uri else sink


class MlflowProgress(Events):
    def __init__(self, uri: str, experiment: str = "petra") -> None:
        try:
            import mlflow
        except ImportError:
            raise ConfigError("--mlflow-uri needs MLflow: pip install 'petra[mlflow]'") from None
        self.mlflow = mlflow
        self.uri, self.experiment = uri, experiment
        self.parent = None

    def run_start(self, info: dict[str, Any]) -> None:
        mlflow = self.mlflow
        if self.uri.startswith("file:") or "://" not in self.uri and not self.uri.startswith("sqlite"):
            # MLflow 3 refuses plain folders unless asked; the user asked by naming one
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_experiment(self.experiment)
            self.parent = mlflow.start_run(run_name=f"{info['task']}-{info['runtime']}")
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"MLflow at {self.uri!r} is not usable ({first}); "
                              "check --mlflow-uri (e.g. file:./mlruns or sqlite:///mlflow.db)") from None
        mlflow.log_params({k: info[k] for k in ("task", "runtime", "generations", "population",
                                                "time_budget_s")})
        mlflow.set_tags({"petra.output": info.get("output", ""), "cpu": info["machine"]["cpu"]})

    def trial_end(self, entry: dict[str, Any]) -> None:
        if self.parent is None:
            return
        mlflow = self.mlflow
        with mlflow.start_run(run_name=f"trial-{entry['trial']}", nested=True):
            mlflow.log_params({f"gene.{k}": v for k, v in entry["config"].items()})
            mlflow.set_tags({"state": entry["state"], "key": entry["key"],
                             "generation": str(entry["generation"]),
                             "reason": (entry.get("reason") or "")[:500]})
            mlflow.log_metrics(_metrics(entry))

    def finish(self, results: dict[str, Any], out_dir: Any) -> None:
        if self.parent is None:
            return
        mlflow = self.mlflow
        for prefix in ("best", "baseline"):
            if results.get(prefix):
                mlflow.log_metrics({f"{prefix}.{k}": v for k, v in _metrics(results[prefix]).items()})
        for k, v in ((results.get("best") or {}).get("ratios_to_baseline") or {}).items():
            if v is not None:
                mlflow.log_metric(f"best.ratio.{k}", v)
        mlflow.log_metrics({"trials": results["trials"], "failed": results["failed"]})
        out = Path(out_dir)
        if (out / "best").is_dir():
            mlflow.log_artifacts(str(out / "best"), artifact_path="best")
        mlflow.log_artifact(str(out / "results.json"))
        mlflow.end_run()
        self.parent = None

    def close(self) -> None:
        if self.parent is not None:  # the study did not finish: keep what was logged, mark it
            self.mlflow.end_run(status="KILLED")
            self.parent = None


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    metric = entry.get("metric") or {}
    for k in ("val", "test"):
        if metric.get(k) is not None:
            out[f"{metric.get('name', 'metric')}.{k}"] = float(metric[k])
    for k, v in (entry.get("latency_ms") or {}).items():
        out[f"latency_ms.{k}"] = float(v)
    for k in ("throughput_sps", "size_bytes", "elapsed_s"):
        if entry.get(k) is not None:
            out[k] = float(entry[k])
    return out
