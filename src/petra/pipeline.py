"""One candidate, built for real: prune -> fine-tune -> export -> quantize -> compile -> measure.

The torch stage (prune + regularized fine-tune + FP32 export) is the expensive part; its output
is cached by ``CandidateConfig.torch_key`` so that candidates differing only in quantization or
runtime genes reuse it and never retrain.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from petra.compression.lowrank import LowRankRegularizer, factorize, truncate
from petra.compression.pruning import prune
from petra.compression.qat import calibrate, export_qat, prepare_qat
from petra.compression.regularizers import BNSparsity, CrossEntropy, Distillation
from petra.compression.training import fit
from petra.errors import CandidateError, TrainError
from petra.exporters import Artifact, Precision, export_onnx, quantize
from petra.models.base import Task, default_cache_dir
from petra.optimizer.genome import CandidateConfig, Regularizer
from petra.profilers import Measurement, TimingPolicy, evaluate_metric, measure, versions
from petra.runtimes.base import Runtime, Session

#: L1 weight per unit of the reg_weight gene: sum|gamma| over ~1k channels is O(1e3)
L1_SCALE = 1e-3
#: QAT fine-tunes BN-folded weights (no BatchNorm left to absorb large steps): the lr gene's
#: value (1e-3) cost 2 points on digits (96.9% after 2 epochs) where a tenth kept 99.4%
QAT_LR_SCALE = 0.1


def _inputs_hash(task: Task, teacher: nn.Module, seed: int) -> str:
    """What the torch stage reads besides its genes: the data, the teacher's weights, the seed."""
    h = hashlib.sha256(task.content_hash().encode())
    for name, tensor in teacher.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(str(seed).encode())
    return h.hexdigest()


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
        on_stage: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.task, self.teacher, self.runtime = task, teacher.eval(), runtime
        self.workdir = Path(workdir)
        self.throughput_batch, self.policy, self.seed, self.log = throughput_batch, policy, seed, log
        self.on_stage = on_stage
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(task.train))[: min(calibration_size, len(task.train))]
        self.calibration = np.ascontiguousarray(task.train.x[idx])
        self.stage_dir = default_cache_dir() / "stages"
        self._inputs_hash = _inputs_hash(task, self.teacher, seed)

    # -- stages ---------------------------------------------------------------------------
    def stage_key(self, cfg: CandidateConfig) -> str:
        """hash(stage, its config, its input's hash, library versions): content-addressed, so
        the cache is shared by every run of the same task and teacher on this machine."""
        payload = {"stage": "torch", "genes": cfg.torch_key, "inputs": self._inputs_hash,
                   "versions": {k: v for k, v in versions().items() if k != "petra"}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    def torch_stage(self, cfg: CandidateConfig, timings: dict[str, float]) -> Artifact:
        key = self.stage_key(cfg)
        path = self.stage_dir / "torch" / key / "model.onnx"
        if path.is_file():
            timings["torch_cached"] = 1.0
            return Artifact.of(path)
        t0 = time.perf_counter()
        model = copy.deepcopy(self.teacher)
        example = self.task.example_input
        post_epochs = cfg.epochs
        try:
            if cfg.regularizer is Regularizer.L1 and cfg.epochs > 0:
                self.on_stage("sparsity")
                sparse_epochs = max(1, cfg.epochs // 2)
                post_epochs = cfg.epochs - sparse_epochs
                fit(model, self.task.train, epochs=sparse_epochs, lr=cfg.lr,
                    loss=BNSparsity(cfg.reg_weight * L1_SCALE), seed=self.seed)
        except (FloatingPointError, RuntimeError) as exc:
            raise TrainError(f"sparse training failed: {exc}") from exc
        timings["sparsity_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.on_stage("prune")
        n = min(128, len(self.task.train))
        calib = (torch.from_numpy(self.task.train.x[:n]), torch.from_numpy(self.task.train.y[:n]))
        prune(model, example, ratio=cfg.prune_ratio, importance=cfg.importance,
              round_to=cfg.round_to, calibration=calib)
        timings["prune_s"] = time.perf_counter() - t0
        loss = (Distillation(self.teacher, cfg.reg_weight) if cfg.regularizer is Regularizer.KD
                else CrossEntropy())
        if cfg.lowrank_ratio > 0:
            t0 = time.perf_counter()
            post_epochs = self._low_rank(model, cfg, loss, post_epochs)
            timings["lowrank_s"] = time.perf_counter() - t0
        if cfg.qat:  # the fine-tune is the QAT run: fake-quant from its first step
            model = prepare_qat(model)
            calibrate(model, self.calibration)
            post_epochs = max(1, post_epochs)
        t0 = time.perf_counter()
        if post_epochs > 0:
            self.on_stage("finetune")
            lr = cfg.lr * (QAT_LR_SCALE if cfg.qat else 1.0)
            try:
                fit(model, self.task.train, epochs=post_epochs, lr=lr, loss=loss, seed=self.seed)
            except (FloatingPointError, RuntimeError) as exc:
                raise TrainError(f"fine-tuning failed: {exc}") from exc
        timings["finetune_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.on_stage("export")
        # written atomically: a crash leaves no half entry
        art = export_qat(model, example, path) if cfg.qat else export_onnx(model, example, path)
        timings["export_s"] = time.perf_counter() - t0
        return art

    def _low_rank(self, model: nn.Module, cfg: CandidateConfig, loss, epochs: int) -> int:
        """SVD-factorize, train half the epochs with the low-rank penalties, cut to rank;
        returns the epochs left for the plain fine-tune that recovers from the cut."""
        self.on_stage("lowrank")
        factorize(model, cfg.lowrank_ratio)
        svd_epochs = max(1, epochs // 2) if epochs > 0 else 0
        if svd_epochs:
            try:
                fit(model, self.task.train, epochs=svd_epochs, lr=cfg.lr, loss=LowRankRegularizer(loss),
                    seed=self.seed)
            except (FloatingPointError, RuntimeError) as exc:
                raise TrainError(f"low-rank training failed: {exc}") from exc
        truncate(model, cfg.lowrank_ratio)
        return epochs - svd_epochs

    def build(self, cfg: CandidateConfig, timings: dict[str, float] | None = None) -> Artifact:
        timings = {} if timings is None else timings
        fp32 = self.torch_stage(cfg, timings)
        t0 = time.perf_counter()
        self.on_stage("quantize")
        art = quantize(
            fp32, self.workdir / "trials" / cfg.key / "model.onnx",
            precision=Precision.FP32 if cfg.qat else cfg.precision,  # QAT's artifact is QDQ already
            calibration=cfg.calibration, per_channel=cfg.per_channel,
            calibration_data=self.calibration if cfg.precision is Precision.INT8_STATIC else None,
            exclude=cfg.quant_exclude,
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
        self.on_stage("compile")
        session = self.compile(cfg, art)
        timings["compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.on_stage("metric")
        val = evaluate_metric(session, self.task.val, self.task.metric)
        test = evaluate_metric(session, self.task.test, self.task.metric)
        if not (math.isfinite(val) and math.isfinite(test)):
            raise CandidateError(f"metric is not finite (val={val}, test={test})")
        timings["metric_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.on_stage("measure")
        m = self.measure(session, art)
        timings["measure_s"] = time.perf_counter() - t0
        return Built(cfg, art, val, test, m, timings)
