"""petra's p50 beside OpenVINO's own ``benchmark_app`` on the same IR and the same settings.

If petra's timing loop (Python call, shared-memory input tensor, output copy) added much to
what OpenVINO itself measures, every ratio petra reports on OpenVINO would be blurred by it.
This script builds the default task's FP32 IR and NNCF INT8 IR (or takes ``--model``), then
times each in interleaved rounds (petra, benchmark_app, petra, ...) so that machine drift hits
both alike, and prints petra's p50 / benchmark_app's median per IR.

    PYTHONPATH=src python benchmarks/openvino_benchmark_app.py [--model M.xml] [--threads 1]

Results go to ``benchmarks/results/openvino_benchmark_app.json`` with the load average.
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

MEDIAN = re.compile(r"Median:\s+([0-9.]+)\s*ms")


def benchmark_app(model: Path, shape: list[int], args, seconds: float) -> float:
    """benchmark_app's median latency (ms), sync API, same hint / streams / threads / precision."""
    exe = Path(sys.executable).with_name("benchmark_app")
    dims = ",".join(str(d) for d in shape)
    cmd = [str(exe), "-m", str(model), "-d", "CPU", "-api", "sync", "-hint", args.hint,
           "-nstreams", str(args.streams), "-nthreads", str(args.threads),
           "-infer_precision", args.precision, "-data_shape", f"[{dims}]", "-t", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = MEDIAN.search(out)
    if not found:
        raise SystemExit(f"no median in benchmark_app output:\n{out[-2000:]}")
    return float(found.group(1))


def petra_p50(model: Path, sample: np.ndarray, args, seconds: float) -> tuple[float, dict]:
    session = OpenVinoRuntime().compile(model, hint=args.hint, streams=args.streams,
                                        threads=args.threads, precision=args.precision)
    policy = TimingPolicy(rel_ci=0.005, min_runs=200, max_time_s=seconds)
    return time_calls(lambda: session.run(sample), policy).p50, session.settings


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
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/openvino_benchmark_app.json"))
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="petra-ovb-") as tmp:
        if args.model:
            from petra.runtimes.openvino import input_shape

            irs = {args.model.stem: args.model}
            shape = [d or 1 for d in input_shape(args.model)]
            sample = np.random.default_rng(0).random(shape, dtype=np.float32)
        else:
            irs, sample = default_irs(Path(tmp))
        shape = list(sample.shape)
        rows, load_before = [], load_average()
        for name, model in irs.items():
            ours, theirs, settings = [], [], {}
            for _ in range(args.rounds):
                p50, settings = petra_p50(model, sample, args, args.seconds)
                ours.append(p50)
                theirs.append(benchmark_app(model, shape, args, args.seconds))
            row = {"model": name, "petra_p50_ms": statistics.median(ours),
                   "benchmark_app_median_ms": statistics.median(theirs),
                   "petra_rounds_ms": ours, "benchmark_app_rounds_ms": theirs, "settings": settings}
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
