"""Models the zoo does not contain, through ``petra optimize``, beside the single techniques.

    PYTHONPATH=src:. python benchmarks/user_models.py [--budget 180] [--families lstm,transformer]
                                                      [--scale user|test]

Four families written the way users write them (tests/user_models.py), on real offline data: a
depthwise-separable inverted-residual CNN (digits), a 2-layer LSTM (ItalyPowerDemand series), a
TransformerEncoder (CDNOW purchase-event sequences; ItalyPowerDemand at ``--scale test``), and
a trained checkpoint handed in as a module. ``--scale user`` (the default) gives them the widths
of a small production model (LSTM 128 units, transformer d_model 64 / FFN 256, CNN 32 channels),
so that inference is compute, not call overhead; ``--scale test`` runs the unit tests' tiny
sizes. Each baseline is trained to convergence first (early stopping), outside petra's budget.
For each family:

- petra's best feasible point (validation drop <= --max-drop), ratios to its FP32 baseline;
- ORT static INT8, ORT dynamic INT8 and NNCF INT8 on OpenVINO alone, each built from the same
  baseline and timed in one study against that runtime's own FP32 baseline;
- for the transformer, fused against unfused at FP32 and at dynamic INT8.

Every ratio comes from one run; results and the machine's fingerprint go to
benchmarks/results/user_models.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests import user_models  # noqa: E402

from petra.candidate import CandidateConfig, describe  # noqa: E402
from petra.config import load_config  # noqa: E402
from petra.exporters import Precision  # noqa: E402
from petra.models.base import TrainSettings  # noqa: E402
from petra.optimizer.study import Study  # noqa: E402
from petra.profilers.fingerprint import fingerprint  # noqa: E402

CONVERGE = TrainSettings(max_epochs=40, lr=3e-3, batch_size=64, patience=6)
SINGLES = {
    "ort_static_int8": dict(precision=Precision.INT8_STATIC, runtime="onnxruntime"),
    "ort_dynamic_int8": dict(precision=Precision.INT8_DYNAMIC, runtime="onnxruntime"),
    "nncf_int8": dict(precision=Precision.INT8_STATIC, runtime="openvino"),
}


def families(scale: str = "user") -> dict:
    from petra.models.base import Task
    from petra.models.cdnow import AUC, load_splits

    def depthwise():
        task = replace(user_models.depthwise_task(), train_settings=CONVERGE)
        if scale == "user":
            task = replace(task, name="user-depthwise-c32", build_model=lambda: user_models.DepthwiseCNN(32))
        return task

    def lstm():
        task = replace(user_models.lstm_task(), train_settings=CONVERGE)
        if scale == "user":
            task = replace(task, name="user-lstm-h128",
                           build_model=lambda: user_models.LSTMClassifier(1, 128))
        return task

    def transformer():
        if scale != "user":
            return replace(user_models.transformer_task(), train_settings=CONVERGE)
        train, val, test = load_splits("value-tier")
        classes = int(train.y.max()) + 1
        return Task(name="user-transformer-events-d64", train=train, val=val, test=test, metric=AUC,
                    build_model=lambda: user_models.TransformerClassifier(
                        3, d_model=64, classes=classes, ff=256, layers=2, events_first=True),
                    train_settings=replace(CONVERGE, batch_size=256))

    def trained_checkpoint():
        task = replace(depthwise(), name=depthwise().name.replace("depthwise", "checkpoint"))
        model = task.baseline(log=lambda s: None)  # "the user's" training, then handed in as a module
        return replace(task, build_model=None, model=model)

    return {"depthwise": depthwise, "lstm": lstm, "transformer": transformer,
            "checkpoint": trained_checkpoint}


def _ratio(t, base) -> dict | None:
    if t is None or t.measurement is None or base.measurement is None:
        return None
    return {"p50": t.measurement.p50_ms / base.measurement.p50_ms,
            "size": t.measurement.size_bytes / base.measurement.size_bytes,
            "throughput": t.measurement.throughput_sps / base.measurement.throughput_sps,
            "drop_val": base.val - t.val, "drop_test": base.test - t.test,
            "state": t.state.value, "config": describe(t.config)}


def petra_run(task, work: Path, budget: float, max_drop: float) -> dict:
    # no stage cache: a user's first run has none, and an earlier run here must not make it cheap
    cfg = load_config(task=task.name, time_budget=budget, output=work / "petra", progress="quiet",
                      max_drop=max_drop, stage_cache=False)
    study = Study(cfg, task=task, log=lambda s: None)
    results = study.run()
    best = next((t for t in study.trials if t.number == results["best"]["trial"]), study.baseline)
    return {"best": _ratio(best, study.baseline), "trials": results["trials"], "failed": results["failed"],
            "removed_genes": results["removed_genes"], "wall_s": results["elapsed_s"],
            "baseline_p50_ms": study.baseline.measurement.p50_ms, "baseline_val": study.baseline.val}


def singles_run(task, work: Path, max_drop: float, fused: bool) -> dict:
    cfg = load_config(task=task.name, runtime="auto", time_budget=1e9, output=work / "singles",
                      progress="quiet", max_drop=max_drop, max_threads=1)
    study = Study(cfg, task=task, log=lambda s: None)
    study.prepare()
    try:
        study.measure_baseline()
        out = {}
        for key, genes in SINGLES.items():
            base = study.baselines[genes["runtime"]]
            out[key] = _ratio(study.run_trial(CandidateConfig(threads=1, **genes), 0), base)
        if fused:
            base = study.baselines["onnxruntime"]
            for precision in (Precision.FP32, Precision.INT8_DYNAMIC):
                for on in (False, True):
                    trial = study.run_trial(CandidateConfig(threads=1, precision=precision,
                                                            transformer_fusion=on), 0)
                    out[f"{precision.value}_fused_{on}"] = _ratio(trial, base)
        return out
    finally:
        study.builder.close()


def markdown(report: dict) -> str:
    lines = [f"# User models through petra ({report['date']}, fingerprint {report['fingerprint']['id']})", "",
             f"Budget {report['budget_s']:.0f} s per family, max drop {report['max_drop']} points; ratios to "
             "the FP32 baseline on the same runtime, one run each.", "",
             "| family | petra best p50 / size | config | ORT static | ORT dynamic | NNCF | failed |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["families"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | | | | |")
            continue
        b, s = r["petra"]["best"], r["singles"]

        def cell(x):
            return "-" if not x else f"{x['p50']:.3f}x ({x['state'].lower()}, drop {x['drop_val']:.2f})"

        lines.append(f"| {name} | {b['p50']:.3f}x / {b['size']:.3f}x | {b['config'].replace('|', 'on')} | "
                     f"{cell(s.get('ort_static_int8'))} | {cell(s.get('ort_dynamic_int8'))} | "
                     f"{cell(s.get('nncf_int8'))} | {r['petra']['failed']} of {r['petra']['trials']} |")
    fusion = report["families"].get("transformer", {}).get("singles", {})
    if "fp32_fused_True" in fusion:
        lines += ["", "Transformer fusion (p50 ratio to FP32 unfused): " + ", ".join(
            f"{k} {v['p50']:.3f}x" for k, v in fusion.items() if "fused" in k and v)]
    return "\n".join(lines) + "\n"


def _earlier(args) -> dict:
    """The families of an earlier report from this machine at the same budget and scale: a run of
    some families updates their rows and keeps the others (each row carries its own date)."""
    path = args.out.with_suffix(".json")
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = (old.get("fingerprint", {}).get("id") == fingerprint()["id"]
            and old.get("budget_s") == args.budget and old.get("scale") == args.scale)
    if not same:
        return {}
    return {k: v | {"date": v.get("date", old.get("date"))} for k, v in old.get("families", {}).items()}


def _workdir(keep: Path | None, name: str):
    if keep is None:
        return tempfile.TemporaryDirectory(prefix=f"petra-user-{name}-")
    (keep / name).mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(str(keep / name))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, default=180.0)
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--families", default="depthwise,lstm,transformer,checkpoint")
    p.add_argument("--scale", choices=("user", "test"), default="user")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "user_models")
    p.add_argument("--keep", type=Path, help="keep each family's run folders under this directory")
    args = p.parse_args()
    report = {"date": time.strftime("%Y-%m-%d"), "budget_s": args.budget, "max_drop": args.max_drop,
              "scale": args.scale, "fingerprint": fingerprint(), "families": _earlier(args)}
    builders = families(args.scale)
    for name in args.families.split(","):
        t0 = time.monotonic()
        with _workdir(args.keep, name) as tmp:
            try:
                task = builders[name]()
                task.baseline(log=lambda s: None)  # converged, outside the budget
                report["families"][name] = {
                    "petra": petra_run(task, Path(tmp), args.budget, args.max_drop),
                    "singles": singles_run(task, Path(tmp), args.max_drop, fused=name == "transformer"),
                }
            except Exception as exc:  # one family failing must not lose the others
                report["families"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        report["families"][name] |= {"wall_s": time.monotonic() - t0, "date": report["date"]}
        print(name, json.dumps(report["families"][name], default=str)[:600], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
        args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
