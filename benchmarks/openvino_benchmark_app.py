"""petra's p50 beside OpenVINO's own ``benchmark_app`` on the same IR and the same settings.

If petra's timing loop (Python call, shared-memory input tensor, output copy) added much to
what OpenVINO itself measures, every ratio petra reports on OpenVINO would be blurred by it.
This script builds the default task's FP32 IR and NNCF INT8 IR (or takes ``--model``), then
times each in interleaved rounds (petra, benchmark_app, petra, ...) so that machine drift hits
both alike, and prints petra's p50 / benchmark_app's median per IR.

    PYTHONPATH=src python benchmarks/openvino_benchmark_app.py [--model M.xml] [--threads 1]

Results go to ``benchmarks/results/openvino_benchmark_app.json`` with the load average.

What the two figures are: petra's p50 is the wall time of ``Session.call`` in Python (the
request's own ``infer()`` on an input bound once, as in every petra measurement), through the
one timing loop. benchmark_app's median is
OpenVINO's own per-request counter (``InferRequest.latency``), which starts and stops inside
the C++ call: a fixed few microseconds of Python call overhead separate them, which weighs on
a 0.1 ms model and vanishes on a 1 ms one. benchmark_app's UI refuses -nstreams/-nthreads
beside -hint, so the exact same properties go in through ``-load_config``. It prints two
decimals, in us when its mean latency is under 1 ms and in ms otherwise (a load spike can
cost the figure its resolution: ``benchmark_app_unit`` records which).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from petra.profilers import TimingPolicy, machine, time_calls
from petra.profilers.fingerprint import load_average
from petra.runtimes import OpenVinoRuntime

MEDIAN = re.compile(r"Median:\s+([0-9.]+)\s*(ms|us)")


def benchmark_app(model: Path, shape: list[int], args, seconds: float, workdir: Path) -> tuple[float, str]:
    """benchmark_app's median latency (ms) and its printed unit; sync API, petra's properties."""
    config = workdir / "ov_config.json"
    props = {"PERFORMANCE_HINT": args.hint.upper(), "INFERENCE_NUM_THREADS": str(args.threads),
             "INFERENCE_PRECISION_HINT": args.precision}
    if args.streams > 0:
        props["NUM_STREAMS"] = str(args.streams)
    config.write_text(json.dumps({"CPU": props}))
    exe = Path(sys.executable).with_name("benchmark_app")
    dims = ",".join(str(d) for d in shape)
    cmd = [str(exe), "-m", str(model), "-d", "CPU", "-api", "sync", "-load_config", str(config),
           "-data_shape", f"[{dims}]", "-t", str(int(seconds))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = MEDIAN.search(proc.stdout)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"benchmark_app failed or printed no median:\n{(proc.stdout + proc.stderr)[-2000:]}")
    value, unit = float(found.group(1)), found.group(2)
    return (value / 1e3 if unit == "us" else value), unit


def petra_p50(model: Path, sample: np.ndarray, args, seconds: float) -> tuple[float, dict]:
    session = OpenVinoRuntime().compile(model, hint=args.hint, streams=args.streams,
                                        threads=args.threads, precision=args.precision)
    # as long as benchmark_app runs (an unreachable interval target): same duration, same warmth
    policy = TimingPolicy(rel_ci=1e-6, min_runs=200, max_time_s=seconds)
    return time_calls(session.call(sample), policy).p50, session.settings


def default_irs(workdir: Path) -> tuple[dict[str, Path], np.ndarray]:
    """FP32 and NNCF INT8 IRs of the default task's trained baseline."""
    from petra.exporters import export_onnx, quantize_nncf, to_ir
    from petra.models import get_task

    task = get_task("digits")
    onnx = export_onnx(task.baseline(log=lambda s: None), task.example_input, workdir / "model.onnx")
    irs = {"digits-fp32": to_ir(onnx, workdir / "fp32" / "model.xml").path,
           "digits-int8-nncf": quantize_nncf(onnx, workdir / "int8" / "model.xml",
                                             calibration_data=task.train.x[:256]).path}
    return irs, task.val.x[:1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="an IR .xml (default: the digits task's FP32 and INT8 IRs)")
    p.add_argument("--hint", default="latency")
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="f32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/openvino_benchmark_app.json"))
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="petra-ovb-") as tmp:
        if args.model:
            from petra.runtimes.inputs import model_input

            irs = {args.model.stem: args.model}
            shape = [d or 1 for d in model_input(args.model).shape]
            sample = np.random.default_rng(0).random(shape, dtype=np.float32)
        else:
            irs, sample = default_irs(Path(tmp))
        shape = list(sample.shape)
        rows, load_before = [], load_average()
        for name, model in irs.items():
            ours, theirs, units, settings = [], [], [], {}
            for _ in range(args.rounds):
                p50, settings = petra_p50(model, sample, args, args.seconds)
                ours.append(p50)
                median, unit = benchmark_app(model, shape, args, args.seconds, Path(tmp))
                theirs.append(median)
                units.append(unit)
            row = {"model": name, "petra_p50_ms": statistics.median(ours),
                   "benchmark_app_median_ms": statistics.median(theirs),
                   "petra_rounds_ms": ours, "benchmark_app_rounds_ms": theirs,
                   "benchmark_app_unit": units, "settings": settings}
            row["ratio_petra_to_benchmark_app"] = row["petra_p50_ms"] / row["benchmark_app_median_ms"]
            rows.append(row)
            print(f"{name:<20} petra p50 {row['petra_p50_ms']:.4f} ms   benchmark_app median "
                  f"{row['benchmark_app_median_ms']:.4f} ms   ratio {row['ratio_petra_to_benchmark_app']:.3f}"
                  f"   (rounds: petra {[round(v, 4) for v in ours]}, "
                  f"benchmark_app {[round(v, 4) for v in theirs]})")
    settings = vars(args) | {"model": str(args.model) if args.model else None, "out": str(args.out)}
    result = {"settings": settings,
              "machine": machine(), "load_avg_before": load_before, "load_avg_after": load_average(),
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"load average {load_before} -> {load_average()}; saved {args.out}")


if __name__ == "__main__":
    main()
