"""The search space of a run and the configs that seed its first population."""

from __future__ import annotations

from dataclasses import replace

from petra.compression.pruning import Importance
from petra.exporters import Calibration, Precision
from petra.optimizer.genome import OPENVINO, ORT, CandidateConfig, Regularizer, SearchSpace
from petra.runtimes import InferencePrecision, OpenVinoRuntime


def seed_configs(threads: int, runtime: str = ORT) -> list[CandidateConfig]:
    """The FP32 baseline, INT8 post-training quantization alone, and prune-50% + KD + INT8, the
    last also on one thread when the baseline took more: a compressed model does a fraction of
    the baseline's work, and the thread count that suited the baseline is then often too many
    (OpenVINO, digits, Xeon with AMX: 0.070 ms on 1 thread against 0.116 ms on 2). It costs one
    measurement: the torch stage is shared."""
    handmade = CandidateConfig(prune_ratio=0.5, importance=Importance.L2, round_to=8, epochs=4, lr=1e-3,
                               regularizer=Regularizer.KD, reg_weight=0.75,
                               precision=Precision.INT8_STATIC, threads=threads, runtime=runtime)
    return [
        CandidateConfig(threads=threads, runtime=runtime),
        CandidateConfig(precision=Precision.INT8_STATIC, calibration=Calibration.MINMAX, threads=threads,
                        runtime=runtime),
        handmade,
        *([replace(handmade, threads=1)] if threads > 1 else []),
    ]


def default_space(runtimes: tuple[str, ...], n_threads: int) -> SearchSpace:
    """Threads up to the cores; runtime a gene of its own; only precisions this CPU runs natively."""
    kwargs: dict = {"threads": tuple(range(1, n_threads + 1)), "runtime": runtimes}
    if OPENVINO in runtimes:
        native = OpenVinoRuntime.supported_precisions()
        kwargs["ov_precision"] = tuple(p for p in SearchSpace().ov_precision if p in native) or (
            InferencePrecision.F32,)
    return SearchSpace(**kwargs)
