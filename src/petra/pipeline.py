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

from petra.compression.pruning import Importance, prune
from petra.compression.recurrent import has_recurrent, prune_gru_units, unroll_gru
from petra.compression.regularizers import BNSparsity, CrossEntropy, Distillation
from petra.compression.training import fit
from petra.errors import CandidateError, ExportError, TrainError
from petra.exporters import Artifact, Precision, export_onnx, quantize
from petra.models.base import Task
from petra.optimizer.genome import CandidateConfig, Regularizer
from petra.profilers import Measurement, TimingPolicy, evaluate_metric, measure
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
    #: the compiled session's validation outputs: paired-bootstrap bounds of the drop need them
    val_outputs: np.ndarray | None = None


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
    ) -> None:
        # an ONNX-only task has no torch teacher (None): its file is the FP32 stage
        self.task, self.runtime = task, runtime
        self.teacher = teacher.eval() if teacher is not None else None
        self.workdir = Path(workdir)
        self.throughput_batch, self.policy, self.seed, self.log = throughput_batch, policy, seed, log
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(task.train))[: min(calibration_size, len(task.train))]
        self.calibration = np.ascontiguousarray(task.train.x[idx])
        self._torch_cache: dict[str, Artifact] = {}

    # -- stages ---------------------------------------------------------------------------
    def torch_stage(self, cfg: CandidateConfig, timings: dict[str, float]) -> Artifact:
        onnx_model = getattr(self.task, "onnx_model", None)
        if onnx_model is not None:  # ONNX-only task: every torch gene is pinned off
            return Artifact.of(onnx_model)
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
        if has_recurrent(model):  # torch-pruning leaves nn.GRU untouched: prune hidden units
            prune_gru_units(model, ratio=cfg.prune_ratio, round_to=cfg.round_to,
                            p=1 if cfg.importance is Importance.L1 else 2)
        else:
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
        if cfg.unroll_recurrent:
            if not has_recurrent(model):
                raise ExportError("unroll_recurrent is set but the model has no nn.GRU")
            unroll_gru(model)
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

    def compile(self, cfg: CandidateConfig, artifact: Artifact) -> Session:
        return self.runtime.compile(artifact.path, graph_opt=cfg.graph_opt, threads=cfg.threads)

    def measure(
        self, session: Session, artifact: Artifact, policy: TimingPolicy | None = None
    ) -> Measurement:
        return measure(session, self.task.val.x[:64], size_bytes=artifact.size_bytes,
                       throughput_batch=self.throughput_batch, policy=policy or self.policy)

    def evaluate(self, cfg: CandidateConfig) -> Built:
        """Build and measure; raises ``CandidateError`` with the failing stage's reason."""
        timings: dict[str, float] = {}
        art = self.build(cfg, timings)
        t0 = time.perf_counter()
        session = self.compile(cfg, art)
        timings["compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        val_outputs = session.run_batched(self.task.val.x)
        val = self.task.metric(val_outputs, self.task.val.y)
        test = evaluate_metric(session, self.task.test, self.task.metric)
        if not (math.isfinite(val) and math.isfinite(test)):
            raise CandidateError(f"metric is not finite (val={val}, test={test})")
        timings["metric_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = self.measure(session, art)
        timings["measure_s"] = time.perf_counter() - t0
        return Built(cfg, art, val, test, m, timings, val_outputs)
