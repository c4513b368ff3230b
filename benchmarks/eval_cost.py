"""What the metric's inference costs a search trial: on one core, and on every core of the worker.

A search trial scores its artifact by running the task's validation and test inputs through the
runtime, in the measurement worker. Until 2026-12-03 that ran in the first timed session, at its
thread count (one thread for most INT8 artifacts); now it runs in a session of its own on every
core the worker may use (``petra.profilers.isolated``). This script builds the task's model as
FP32 and as per-tensor static INT8 ONNX (untrained weights: the cost does not depend on them)
and takes each artifact's ``eval_s`` from petra's own measurement at ``threads=1``, with the
process confined to one core (what the old path gave such an artifact) and on every core, in
interleaved rounds. Prints and saves the medians and their ratio.

    PYTHONPATH=src python benchmarks/eval_cost.py [--task fashion-mnist] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from petra.exporters import Calibration, Precision
from petra.exporters.onnx_export import export_onnx
from petra.exporters.quantize import quantize
from petra.models.base import get_task
from petra.profilers import MeasureRequest, TimingPolicy, fingerprint
from petra.profilers.isolated import measure_artifact

QUICK = TimingPolicy(rel_ci=0.05, min_runs=20, max_time_s=0.2, warmup_max_s=0.05)


def artifacts(task, folder: Path) -> dict:
    torch.manual_seed(0)
    example = torch.from_numpy(np.ascontiguousarray(task.val.x[:1]))
    fp32 = export_onnx(task.build_model().eval(), example, folder / "fp32.onnx")
    int8 = quantize(fp32, folder / "int8.onnx", precision=Precision.INT8_STATIC,
                    calibration=Calibration.MINMAX, per_channel=False, calibration_data=task.train.x[:256])
    return {"fp32": fp32, "int8_static per-tensor": int8}


def eval_seconds(art, inputs: tuple[Path, ...], sample: np.ndarray, cores: set[int]) -> float:
    """``eval_s`` of one measurement at threads=1 with this process confined to ``cores``."""
    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        req = MeasureRequest(art.path, "onnxruntime", {"threads": 1}, sample=sample, batches=(1,),
                             policy=QUICK, size_bytes=art.size_bytes, eval_inputs=inputs)
        return measure_artifact(req).extra["eval_s"]
    finally:
        os.sched_setaffinity(0, everything)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="fashion-mnist")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    task = get_task(args.task)
    every = os.sched_getaffinity(0)
    placements = {"one core (the old path)": {min(every)}, f"{len(every)} cores (now)": every}
    rows = []
    with tempfile.TemporaryDirectory(prefix="petra-evalcost-") as tmp:
        inputs = (Path(tmp) / "val.npy", Path(tmp) / "test.npy")
        for path, split in zip(inputs, (task.val, task.test)):
            np.save(path, np.ascontiguousarray(split.x))
        for name, art in artifacts(task, Path(tmp)).items():
            times: dict[str, list[float]] = {p: [] for p in placements}
            for _ in range(args.rounds):
                for place, cores in placements.items():
                    times[place].append(eval_seconds(art, inputs, task.val.x[:16], cores))
            medians = {p: statistics.median(v) for p, v in times.items()}
            one, now = medians.values()
            rows.append({"artifact": name, "images": len(task.val) + len(task.test), "eval_s": times,
                         "median_s": medians, "speedup": one / now})
            shown = ", ".join(f"{p} {s:.2f} s" for p, s in medians.items())
            print(f"{name}: {shown}; {one / now:.2f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    saved = {"task": args.task, "rounds": args.rounds, "rows": rows, "machine": fingerprint()}
    (args.out / f"eval_cost-{args.task}.json").write_text(json.dumps(saved, indent=2, default=str))


if __name__ == "__main__":
    main()
