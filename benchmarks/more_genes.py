"""Low rank, QAT and quantization exclusions on the digits task, measured by petra's own loop.

Each configuration is built for real by ``CandidateBuilder.evaluate`` (prune/low-rank/QAT
fine-tune -> ONNX -> quantize -> ORT, 1 thread) and timed by ``petra.profilers.time_calls``;
figures are printed as ratios to the FP32 baseline measured in the same run, and saved as JSON.

    PYTHONPATH=src python benchmarks/more_genes.py [--width 64] [--epochs 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from petra.exporters import Precision, QuantExclude
from petra.models.digits import digits_task
from petra.optimizer.genome import CandidateConfig
from petra.pipeline import CandidateBuilder
from petra.profilers import TimingPolicy, versions
from petra.profilers.fingerprint import load_average
from petra.runtimes import get_runtime


def configs(epochs: int) -> dict[str, CandidateConfig]:
    s8 = Precision.INT8_STATIC
    return {
        "fp32": CandidateConfig(),
        "ptq": CandidateConfig(precision=s8),
        f"ptq+ft{epochs}": CandidateConfig(precision=s8, epochs=epochs),
        f"qat{epochs}": CandidateConfig(precision=s8, epochs=epochs, qat=True),
        "svd0.5 (no training)": CandidateConfig(lowrank_ratio=0.5),
        f"svd0.5+ft{epochs}": CandidateConfig(lowrank_ratio=0.5, epochs=epochs),
        f"svd0.25+ft{epochs}": CandidateConfig(lowrank_ratio=0.25, epochs=epochs),
        f"svd0.5+ft{epochs}+ptq": CandidateConfig(lowrank_ratio=0.5, epochs=epochs, precision=s8),
        **{f"ptq excl {e.value}": CandidateConfig(precision=s8, quant_exclude=e)
           for e in QuantExclude if e is not QuantExclude.NONE},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--only", default="", help="run the configurations whose name contains this")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/more_genes.json"))
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "petra-genes")
    args = ap.parse_args()
    task = digits_task(width=args.width)
    teacher = task.baseline()
    builder = CandidateBuilder(task, teacher, get_runtime("onnxruntime"), args.workdir,
                               policy=TimingPolicy(max_time_s=4.0))
    rows, base = {}, None
    print(f"load average before: {load_average()}")
    for name, cfg in configs(args.epochs).items():
        if args.only not in name and name != "fp32":
            continue
        t0 = time.perf_counter()
        b = builder.evaluate(cfg.canonical())
        row = {"test_acc": b.test, "size_bytes": b.artifact.size_bytes, "p50_ms": b.measurement.p50_ms,
               "p50_rel_ci": b.measurement.latency.rel_ci, "build_s": time.perf_counter() - t0,
               "config": cfg.canonical().to_json()}
        base = base or row
        rows[name] = row
        print(f"{name:24s} acc {row['test_acc']:.2f}  size {row['size_bytes'] / base['size_bytes']:.3f}x  "
              f"p50 {row['p50_ms']:.3f} ms = {row['p50_ms'] / base['p50_ms']:.3f}x "
              f"(ci {row['p50_rel_ci']:.1%})  built in {row['build_s']:.0f}s", flush=True)
    print(f"load average after: {load_average()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"task": task.name, "epochs": args.epochs, "versions": versions(),
                                    "load_average": load_average(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
