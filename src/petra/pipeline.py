"""One candidate, built for real: prune -> fine-tune -> export -> quantize -> compile -> measure.

The torch stage (prune + regularized fine-tune + FP32 export) is the expensive part; its output
is cached by ``CandidateConfig.torch_key`` so that candidates differing only in quantization or
runtime genes reuse it and never retrain.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from petra.compression.pruning import prune
from petra.compression.regularizers import BNSparsity, CrossEntropy, Distillation
from petra.compression.training import fit
from petra.errors import CandidateError, TrainError
from petra.exporters import Artifact, Precision, export_onnx, quantize
from petra.models.base import Task
from petra.optimizer.genome import CandidateConfig, Regularizer
from petra.profilers import IsolatedMeasurer, Measurement, MeasureRequest, TimingPolicy, evaluate_metric
from petra.profilers.isolated import runtime_ref
from petra.runtimes import RUNTIMES
from petra.runtimes.base import Runtime, Session

#: L1 weight per unit of the reg_weight gene: sum|gamma| over ~1k channels is O(1e3)
L1_SCALE = 1e-3


@dataclass
class Built:
    config: CandidateConfig
    artifact: Artifact
    val: float
    test: float
    measurement: Measurement
    stage_s: dict[str, float] = field(default_factory=dict)


class CandidateBuilder:
    def __init__(
        self,
        task: Task,
        teacher: nn.Module,
        runtime: Runtime,
        workdir: Path,
        *,
        throughput_batch: int = 32,
        policy: TimingPolicy = TimingPolicy(),
        calibration_size: int = 256,
        seed: int = 0,
        log: Callable[[str], None] = lambda s: None,
        measurer: IsolatedMeasurer | None = None,
    ) -> None:
        self.task, self.teacher, self.runtime = task, teacher.eval(), runtime
        self.workdir = Path(workdir)
        self.throughput_batch, self.policy, self.seed, self.log = throughput_batch, policy, seed, log
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(task.train))[: min(calibration_size, len(task.train))]
        self.calibration = np.ascontiguousarray(task.train.x[idx])
        self._torch_cache: dict[str, Artifact] = {}
        #: every timing runs in this worker process, one at a time (see profilers.isolated)
        self.measurer = measurer or IsolatedMeasurer()
        # the worker finds the runtime by registry name, or by import path if it is not registered
        name = runtime.name
        self._runtime_ref = name if RUNTIMES.get(name) is type(runtime) else runtime_ref(runtime)

    # -- stages ---------------------------------------------------------------------------
    def torch_stage(self, cfg: CandidateConfig, timings: dict[str, float]) -> Artifact:
        key = cfg.torch_key
        cached = self._torch_cache.get(key)
        if cached is not None and cached.path.exists():
            timings["torch_cached"] = 1.0
            return cached
        t0 = time.perf_counter()
        model = copy.deepcopy(self.teacher)
        example = self.task.example_input
        post_epochs = cfg.epochs
        try:
            if cfg.regularizer is Regularizer.L1 and cfg.epochs > 0:
                sparse_epochs = max(1, cfg.epochs // 2)
                post_epochs = cfg.epochs - sparse_epochs
                fit(model, self.task.train, epochs=sparse_epochs, lr=cfg.lr,
                    loss=BNSparsity(cfg.reg_weight * L1_SCALE), seed=self.seed)
        except (FloatingPointError, RuntimeError) as exc:
            raise TrainError(f"sparse training failed: {exc}") from exc
        timings["sparsity_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = min(128, len(self.task.train))
        calib = (torch.from_numpy(self.task.train.x[:n]), torch.from_numpy(self.task.train.y[:n]))
        prune(model, example, ratio=cfg.prune_ratio, importance=cfg.importance,
              round_to=cfg.round_to, calibration=calib)
        timings["prune_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if post_epochs > 0:
            loss = (Distillation(self.teacher, cfg.reg_weight) if cfg.regularizer is Regularizer.KD
                    else CrossEntropy())
            try:
                fit(model, self.task.train, epochs=post_epochs, lr=cfg.lr, loss=loss, seed=self.seed)
            except (FloatingPointError, RuntimeError) as exc:
                raise TrainError(f"fine-tuning failed: {exc}") from exc
        timings["finetune_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        art = export_onnx(model, example, self.workdir / "cache" / "torch" / key / "model.onnx")
        timings["export_s"] = time.perf_counter() - t0
        self._torch_cache[key] = art
        return art

    def build(self, cfg: CandidateConfig, timings: dict[str, float] | None = None) -> Artifact:
        timings = {} if timings is None else timings
        fp32 = self.torch_stage(cfg, timings)
        t0 = time.perf_counter()
        art = quantize(
            fp32, self.workdir / "trials" / cfg.key / "model.onnx", precision=cfg.precision,
            calibration=cfg.calibration, per_channel=cfg.per_channel,
            calibration_data=self.calibration if cfg.precision is Precision.INT8_STATIC else None,
        )
        timings["quantize_s"] = time.perf_counter() - t0
        return art

    @staticmethod
    def runtime_settings(cfg: CandidateConfig) -> dict:
        return {"graph_opt": cfg.graph_opt, "threads": cfg.threads}

    def compile(self, cfg: CandidateConfig, artifact: Artifact) -> Session:
        """An in-process session, for the metric only: timing never uses it."""
        return self.runtime.compile(artifact.path, **self.runtime_settings(cfg))

    def measure(
        self, cfg: CandidateConfig, artifact: Artifact, policy: TimingPolicy | None = None
    ) -> Measurement:
        """Latency (batch 1) and throughput on real validation inputs, in the isolated worker."""
        req = MeasureRequest(artifact.path, self._runtime_ref, self.runtime_settings(cfg),
                             sample=self.task.val.x[:64], batches=(1, self.throughput_batch),
                             policy=policy or self.policy, size_bytes=artifact.size_bytes)
        return self.measurer.measure(req)

    def close(self) -> None:
        self.measurer.close()

    def evaluate(self, cfg: CandidateConfig) -> Built:
        """Build and measure; raises ``CandidateError`` with the failing stage's reason."""
        timings: dict[str, float] = {}
        art = self.build(cfg, timings)
        t0 = time.perf_counter()
        session = self.compile(cfg, art)
        timings["compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        val = evaluate_metric(session, self.task.val, self.task.metric)
        test = evaluate_metric(session, self.task.test, self.task.metric)
        if not (math.isfinite(val) and math.isfinite(test)):
            raise CandidateError(f"metric is not finite (val={val}, test={test})")
        timings["metric_s"] = time.perf_counter() - t0
        del session  # nothing of this process's runtime state stays alive beside the measurement
        t0 = time.perf_counter()
        m = self.measure(cfg, art)
        timings["measure_s"] = time.perf_counter() - t0
        return Built(cfg, art, val, test, m, timings)
