"""One candidate, built for real: prune -> fine-tune -> export -> quantize -> compile -> measure.

The torch stage (prune + regularized fine-tune + FP32 export) is the expensive part; its output
is cached by ``CandidateConfig.torch_key`` so that candidates differing only in quantization or
runtime genes reuse it and never retrain. After it, the candidate's ``runtime`` gene picks the
back half: ORT's quantizer and an ONNX file, or NNCF and an OpenVINO IR.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from petra.candidate import QUANTIZERS, REWRITES, CandidateConfig
from petra.compression.depth import DEPTH_GENES, drop_blocks, ranking_inputs
from petra.compression.kernels import crop_kernels
from petra.compression.lowrank import LowRankRegularizer, factorize, truncate
from petra.compression.pruning import StructuredPruning, is_pruned, recalibrate_bn, stage_ratios
from petra.compression.qat import calibrate, export_qat, prepare_qat
from petra.compression.recurrent import unroll_gru
from petra.compression.regularizers import BNSparsity, Distillation, Regularizer, TaskLoss, TeacherOutputs
from petra.compression.training import FINE_TUNE_BATCH, fine_tune_steps, fit, resolve_train_precision
from petra.errors import CandidateError, CompileError, TrainError
from petra.exporters import Artifact, export_onnx
from petra.exporters.quantize import QuantData
from petra.fidelity import Fidelity
from petra.models.base import Task, default_cache_dir
from petra.profilers import IsolatedMeasurer, Measurement, MeasureRequest, TimingPolicy, versions
from petra.profilers.isolated import runtime_ref
from petra.runtimes import RUNTIMES
from petra.runtimes.base import Runtime

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
    #: the compiled session's validation outputs: paired-bootstrap bounds of the drop need them
    val_outputs: np.ndarray | None = None


@lru_cache(maxsize=1)
def stage_code_hash() -> str:
    """Hash of the code that makes a torch stage (``petra.compression``, ``petra.exporters``).

    petra's version string does not change with every edit of a pruning or training routine,
    and a cache hit on weights that the old code made would silently mix two algorithms in one
    front; the source itself does change.
    """
    import petra.compression
    import petra.exporters

    h = hashlib.sha256()
    for pkg in (petra.compression, petra.exporters):
        for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


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
        on_stage: Callable[[str], None] = lambda s: None,
        stage_cache: bool = True,
        measurer: IsolatedMeasurer | None = None,
        runtimes: dict[str, Runtime] | None = None,
        max_drop: float = 1.0,
        train_device: str = "cpu",
        train_precision: str = "auto",
    ) -> None:
        # an ONNX-only task has no torch teacher (None): its file is the FP32 stage
        self.task, self.runtime = task, runtime
        self.teacher = teacher.eval() if teacher is not None else None
        #: every runtime a candidate may name in its ``runtime`` gene (``--runtime auto``)
        self.runtimes = {runtime.name: runtime} | dict(runtimes or {})
        self.max_drop, self.train_device = max_drop, train_device
        #: the choice travels in the recipe and is resolved where the fine-tune runs (a Ray node
        #: may lack the bf16 units this one has)
        self.train_precision = train_precision
        self.train_bf16 = resolve_train_precision(train_precision, train_device) == "bf16"
        self.workdir = Path(workdir)
        self.throughput_batch, self.policy, self.seed = throughput_batch, policy, seed
        self.on_stage = on_stage
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(task.train))[: min(calibration_size, len(task.train))]
        self.calibration = np.ascontiguousarray(task.train.x[idx])
        self.quant_data = QuantData(self.calibration, task.val.x, task.val.y, task.metric, max_drop)
        # shared across runs when on; a run-private folder that is never read back when off
        self.stage_cache = stage_cache
        self.stage_dir = default_cache_dir() / "stages" if stage_cache else self.workdir / "stages"
        self._inputs_hash = _inputs_hash(task, self.teacher, seed) if self.teacher is not None else ""
        self._built_here: set[str] = set()
        self._teacher_outputs: TeacherOutputs | None = None
        #: every timing runs in this worker process, one at a time (see profilers.isolated)
        self.measurer = measurer or IsolatedMeasurer()
        # the worker finds a runtime by registry name, or by import path if it is not registered
        self._runtime_refs = {
            name: name if RUNTIMES.get(name) is type(rt) else runtime_ref(rt)
            for name, rt in self.runtimes.items()
        }

    def recipe(self) -> dict:
        """What another process needs to build candidates exactly as this builder does (the
        measurement side stays here: a worker only trains, exports and quantizes)."""
        return {"task": self.task, "teacher": self.teacher, "runtimes": self._runtime_refs,
                "workdir": self.workdir, "throughput_batch": self.throughput_batch,
                "policy": self.policy, "seed": self.seed, "stage_cache": self.stage_cache,
                "max_drop": self.max_drop, "train_device": self.train_device,
                "train_precision": self.train_precision}

    @classmethod
    def from_recipe(cls, recipe: dict, **overrides) -> CandidateBuilder:
        from petra.profilers.isolated import load_runtime

        r = dict(recipe) | overrides
        runtimes = {name: load_runtime(ref) for name, ref in r.pop("runtimes").items()}
        task, teacher, workdir = r.pop("task"), r.pop("teacher"), r.pop("workdir")
        return cls(task, teacher, next(iter(runtimes.values())), workdir, runtimes=runtimes, **r)

    # -- stages ---------------------------------------------------------------------------
    def stage_key(self, cfg: CandidateConfig, fidelity: Fidelity | None = None) -> str:
        """hash(stage, its config, its input's hash, library versions): content-addressed, so
        the cache is shared by every run of the same task and teacher on this machine."""
        payload = {"stage": "torch", "genes": cfg.torch_key, "inputs": self._inputs_hash,
                   "fidelity": repr(fidelity) if fidelity else None,
                   "versions": {k: v for k, v in versions().items() if k != "petra"},
                   "code": stage_code_hash()}
        if self.train_device != "cpu":  # GPU kernels give other weights than the CPU's
            payload["device"] = self.train_device
        if self.train_bf16:  # and so does a bf16 fine-tune
            payload["train_precision"] = "bf16"
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    @contextlib.contextmanager
    def _step(self, name: str, timings: dict[str, float]):
        """The one stopwatch of the build: tells the progress sink, records ``<name>_s``."""
        self.on_stage(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            timings[f"{name}_s"] = timings.get(f"{name}_s", 0.0) + time.perf_counter() - t0

    def _fit(self, model: nn.Module, fidelity: Fidelity | None, what: str, **kwargs) -> None:
        """The one training-error wrapper: a diverging fine-tune is this candidate's failure."""
        train = self.task.train
        steps = fine_tune_steps(len(train), FINE_TUNE_BATCH)
        steps = fidelity.steps(steps) if fidelity else steps
        try:
            fit(model, train, seed=self.seed, device=self.train_device, batch_size=FINE_TUNE_BATCH,
                steps_per_epoch=steps, **{"bf16": self.train_bf16} | kwargs)
        except (FloatingPointError, RuntimeError) as exc:
            raise TrainError(f"{what} failed: {exc}") from exc
        model.cpu()  # pruning traces and export run on the CPU

    def torch_stage(self, cfg: CandidateConfig, timings: dict[str, float],
                    fidelity: Fidelity | None = None) -> Artifact:
        """sparsity -> prune -> (low rank) -> (QAT) fine-tune -> (unroll) -> export, cached."""
        onnx_model = getattr(self.task, "onnx_model", None)
        if onnx_model is not None:  # ONNX-only task: every torch gene left the search
            return Artifact.of(onnx_model)
        key = self.stage_key(cfg, fidelity)
        path = self.stage_dir / "torch" / key / "model.onnx"
        if path.is_file() and (self.stage_cache or key in self._built_here):
            timings["torch_cached"] = 1.0
            return Artifact.of(path)
        model = copy.deepcopy(self.teacher)
        epochs = cfg.epochs
        if cfg.regularizer is Regularizer.L1 and epochs > 0:
            with self._step("sparsity", timings):
                sparse = max(1, epochs // 2)
                epochs -= sparse
                self._fit(model, fidelity, "sparse training", epochs=sparse, lr=cfg.lr,
                          loss=BNSparsity(cfg.reg_weight * L1_SCALE,
                                         TaskLoss(getattr(self.task, "loss", None))))
        with self._step("prune", timings):
            self._shorten(model, cfg)
            self._prune(model, cfg)
        loss = self._loss(cfg)
        if cfg.lowrank_ratio > 0:
            with self._step("lowrank", timings):
                epochs = self._low_rank(model, cfg, loss, epochs, fidelity)
        if cfg.qat:  # the fine-tune is the QAT run: fake-quant from its first step
            model = prepare_qat(model)
            calibrate(model, self.calibration)
            epochs = max(1, epochs)
        with self._step("finetune", timings):
            if epochs > 0:
                self._fit(model, fidelity, "fine-tuning", epochs=epochs, loss=loss,
                          lr=cfg.lr * (QAT_LR_SCALE if cfg.qat else 1.0),
                          **({"bf16": False} if cfg.qat else {}))  # fake-quant observers in FP32
                if fidelity is not None and not cfg.qat:
                    # a cheap fine-tune takes few steps (digits: 16 an epoch), too few for the
                    # BatchNorms' running averages to forget the statistics from before it: at 4
                    # steps, 70% pruning scored 72.14 cheap, 73.82 recalibrated; 50% 87.47, 98.05
                    recalibrate_bn(model, self.task.train.x)
        if cfg.unroll_recurrent:
            unroll_gru(model)
        with self._step("export", timings):  # written atomically: a crash leaves no half entry
            art = export_qat(model, self.task.example_input, path) if cfg.qat else export_onnx(
                model, self.task.example_input, path)
        self._built_here.add(key)
        return art

    def _calibration(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(128, len(self.task.train))
        return torch.from_numpy(self.task.train.x[:n]), torch.from_numpy(self.task.train.y[:n])

    def _shorten(self, model: nn.Module, cfg: CandidateConfig) -> None:
        """The architecture genes (blocks removed, kernels cut), before pruning ranks channels."""
        per_stage = tuple(getattr(cfg, g) for g in DEPTH_GENES)
        if any(per_stage):
            drop_blocks(model, self.task.example_input, per_stage, inputs=ranking_inputs(self.task.train.x))
        cut = crop_kernels(model, cfg.kernel_keep)  # none at keep 1
        if any(per_stage) or cut:
            recalibrate_bn(model, self.task.train.x)  # what reaches the later layers changed

    def _prune(self, model: nn.Module, cfg: CandidateConfig) -> None:
        if not is_pruned(cfg):
            return
        StructuredPruning.prune(model, self.task.example_input, ratio=cfg.prune_ratio,
                                importance=cfg.importance, round_to=cfg.round_to,
                                calibration=self._calibration(),
                                stage_ratios=stage_ratios(cfg))
        recalibrate_bn(model, self.task.train.x)  # the BatchNorms' statistics are the unpruned model's

    def _loss(self, cfg: CandidateConfig):
        task_loss = TaskLoss(getattr(self.task, "loss", None))
        if cfg.regularizer is not Regularizer.KD:
            return task_loss
        if self._teacher_outputs is None:  # one per builder: every fine-tune reuses its rows
            teacher = self.teacher if self.train_device == "cpu" else copy.deepcopy(self.teacher).to(
                self.train_device)
            self._teacher_outputs = TeacherOutputs(teacher)
        return Distillation(self._teacher_outputs, cfg.reg_weight, task_loss=task_loss)

    def _low_rank(self, model: nn.Module, cfg: CandidateConfig, loss, epochs: int,
                  fidelity: Fidelity | None) -> int:
        """SVD-factorize, train half the epochs with the low-rank penalties, cut to rank;
        returns the epochs left for the plain fine-tune that recovers from the cut."""
        factorize(model, cfg.lowrank_ratio)
        svd_epochs = max(1, epochs // 2) if epochs > 0 else 0
        if svd_epochs:
            self._fit(model, fidelity, "low-rank training", epochs=svd_epochs, lr=cfg.lr,
                      loss=LowRankRegularizer(loss))
        truncate(model, cfg.lowrank_ratio)
        return epochs - svd_epochs

    def trial_dir(self, cfg: CandidateConfig, fidelity: Fidelity | None = None) -> Path:
        """Where a candidate's artifact lives in the run folder (wherever it was built)."""
        return self.workdir / "trials" / (cfg.key + ("-low" if fidelity else ""))

    def build(self, cfg: CandidateConfig, timings: dict[str, float] | None = None,
              fidelity: Fidelity | None = None) -> Artifact:
        """The torch stage, then the backend's quantizer pass (ORT QDQ, NNCF IR, ...)."""
        timings = {} if timings is None else timings
        fp32 = self.torch_stage(cfg, timings, fidelity)
        folder = self.trial_dir(cfg, fidelity)
        with self._step("quantize", timings):
            for rewrite in REWRITES:
                fp32 = rewrite.rewrite(fp32, folder, cfg)
            quantizer = QUANTIZERS[self.runtime_for(cfg).quantizer]
            return quantizer.build(fp32, folder, cfg, self.quant_data)

    def runtime_for(self, cfg: CandidateConfig) -> Runtime:
        rt = self.runtimes.get(cfg.runtime)
        if rt is None:
            raise CompileError(f"runtime {cfg.runtime!r} is not part of this search")
        return rt


    #: with a number, a search's measurement first screens its artifact at the runtime settings
    #: that can matter on up to this many threads (``Runtime.screen``); None: the config's own
    screen_threads: int | None = None
    #: fresh sessions behind a search-time figure (its fastest is the figure; see
    #: ``petra.optimizer.estimators``); a re-measurement takes one per round
    search_sessions: int = 1

    def request(
        self, cfg: CandidateConfig, artifact: Artifact, policy: TimingPolicy | None = None,
        eval_inputs: tuple[Path, ...] = (), screen: bool = False,
    ) -> MeasureRequest:
        """What the measurement worker needs, as plain data: latency at batch 1 and throughput
        on real validation inputs (an executor may move it to another machine). ``screen``: the
        search's first measurement of an artifact (a re-measurement keeps the recorded settings);
        the model as given (the FP32 baseline) is screened only at settings that keep its
        precision, so that it stays an honest FP32 figure."""
        rt = self.runtime_for(cfg)  # a runtime outside this search is this candidate's error
        options = type(rt).screen(cfg, artifact.path, self.screen_threads, exact=cfg.as_given) if (
            screen and self.screen_threads) else []
        return MeasureRequest(artifact.path, self._runtime_refs[cfg.runtime], cfg.runtime_settings(),
                              sample=self.task.val.x[:64], batches=(1, self.throughput_batch),
                              policy=policy or self.policy, size_bytes=artifact.size_bytes,
                              eval_inputs=eval_inputs, screen=tuple(options),
                              sessions=self.search_sessions if screen else 1)

    def measure(
        self, cfg: CandidateConfig, artifact: Artifact, policy: TimingPolicy | None = None,
        eval_inputs: tuple[Path, ...] = (), screen: bool = False,
    ) -> Measurement:
        return self.measurer.measure(self.request(cfg, artifact, policy, eval_inputs, screen))

    def eval_files(self) -> tuple[Path, Path]:
        """Validation and test inputs as .npy files the worker reads (written once)."""
        folder = self.workdir / "data"
        paths = (folder / "val_x.npy", folder / "test_x.npy")
        if not all(p.is_file() for p in paths):
            folder.mkdir(parents=True, exist_ok=True)
            for p, split in zip(paths, (self.task.val, self.task.test)):
                np.save(p, np.ascontiguousarray(split.x))
        return paths

    def close(self) -> None:
        self.measurer.close()

    def evaluate(self, cfg: CandidateConfig, fidelity: Fidelity | None = None) -> Built:
        """Build and measure; raises ``CandidateError`` with the failing stage's reason."""
        timings: dict[str, float] = {}
        art = self.build(cfg, timings, fidelity)
        return self.finish(cfg, art, timings, fidelity)

    def finish(self, cfg: CandidateConfig, art: Artifact, timings: dict[str, float],
               fidelity: Fidelity | None = None, quiet=contextlib.nullcontext) -> Built:
        """Measure a built artifact and score it; ``quiet()`` wraps the measurement (the
        parallel executor pauses its training processes there)."""
        t0 = time.perf_counter()
        self.on_stage("measure")
        # compile, metric outputs and timing all happen in the isolated worker: a runtime that
        # crashes on this artifact takes the worker down, never the search
        with quiet():
            m = self.measure(cfg, art, fidelity.timing if fidelity else None, self.eval_files(), screen=True)
        timings["measure_s"] = time.perf_counter() - t0
        return self.scored(cfg, art, m, timings)

    def scored(self, cfg: CandidateConfig, art: Artifact, m: Measurement,
               timings: dict[str, float]) -> Built:
        """The task metric from the outputs the measurement brought back from the runtime; a
        screened measurement's config becomes the one it was measured at (its key, report and
        hand-off name that setting), and its screen's and the metric inference's times are kept
        apart from ``measure_s`` (the final re-measurement, which repeats neither, is budgeted
        by it)."""
        val_out, test_out = m.extra.pop("outputs")
        val = self.task.metric(val_out, self.task.val.y)
        test = self.task.metric(test_out, self.task.test.y)
        if not (math.isfinite(val) and math.isfinite(test)):
            raise CandidateError(f"metric is not finite (val={val}, test={test})")
        if m.screened:
            cfg = cfg.with_settings(m.chosen_settings)
            timings["screen_s"] = m.screen_s
            timings["measure_s"] = max(0.0, timings.get("measure_s", 0.0) - m.screen_s)
        if "eval_s" in m.extra:  # inference on the metric's inputs, which no re-measurement repeats
            timings["eval_s"] = m.extra.pop("eval_s")
            timings["measure_s"] = max(0.0, timings.get("measure_s", 0.0) - timings["eval_s"])
        return Built(cfg, art, val, test, m, timings, val_out)
