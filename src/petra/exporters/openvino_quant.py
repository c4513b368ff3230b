"""ONNX -> OpenVINO IR, FP32 or INT8 through NNCF post-training quantization.

Both write an IR (``model.xml`` + ``model.bin``): the artifact the OpenVINO runtime compiles
and the one a user deploys. Weights stay FP32 unless quantized — ``ov.save_model`` would halve
them to FP16 by default, which changes size and numerics behind the genome's back.

NNCF's quantizer is calibrated on the task's own training inputs, one sample per item, so that
``subset_size`` counts samples. Its accuracy-control mode (``AccuracyControl``) keeps layers
in float until the validation metric drop is within the task's ``max_drop``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from petra.errors import ExportError, QuantizeError
from petra.exporters.artifact import Artifact
from petra.exporters.quantize import Precision, QuantData
from petra.genes import Gene, Pass, Stage


class NncfPreset(str, Enum):
    PERFORMANCE = "performance"  # symmetric weights and activations
    MIXED = "mixed"  # symmetric weights, asymmetric activations: better for ReLU-free inputs


@dataclass(frozen=True)
class AccuracyControl:
    """Data and rule for NNCF's accuracy-aware quantization (drop in the metric's points)."""

    x: np.ndarray
    y: np.ndarray
    metric: Callable[[np.ndarray, np.ndarray], float]
    max_drop: float
    batch: int = 256
    max_iterations: int = 16  # layers reverted to float at most, so one candidate stays bounded


def _save_ir(model, dst: Path) -> Artifact:
    """Write both files under temporary names, then move them: never a half-written IR."""
    import openvino as ov

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + ".tmp.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), dst.with_suffix(".bin"))
    os.replace(tmp, dst)
    return Artifact.of(dst)


def _read(src: Artifact):
    from petra.runtimes.openvino import core

    return core().read_model(str(src.path))


def to_ir(src: Artifact, dst: Path) -> Artifact:
    """ONNX (or IR) -> IR with FP32 weights."""
    try:
        return _save_ir(_read(src), dst)
    except Exception as exc:
        raise ExportError(f"conversion to OpenVINO IR failed: {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _quiet():
    """NNCF draws progress bars and logs INFO lines; keep the CLI's output to petra's own."""
    import nncf

    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        nncf.set_log_level(level)


def quantize_nncf(
    src: Artifact,
    dst: Path,
    *,
    calibration_data: np.ndarray,
    preset: NncfPreset | str = NncfPreset.PERFORMANCE,
    subset_size: int = 300,
    fast_bias_correction: bool = True,
    accuracy_control: AccuracyControl | None = None,
) -> Artifact:
    """INT8 IR of ``src`` calibrated on ``calibration_data`` (inputs, batch first)."""
    import nncf

    preset = NncfPreset(preset)
    if calibration_data is None or len(calibration_data) == 0:
        raise QuantizeError("NNCF INT8 needs calibration data from the task")
    if subset_size < 1:
        raise QuantizeError(f"NNCF subset_size must be >= 1, got {subset_size}")
    items = [np.ascontiguousarray(calibration_data[i : i + 1], dtype=np.float32)
             for i in range(len(calibration_data))]
    options = dict(
        preset={NncfPreset.PERFORMANCE: nncf.QuantizationPreset.PERFORMANCE,
                NncfPreset.MIXED: nncf.QuantizationPreset.MIXED}[preset],
        subset_size=min(subset_size, len(items)), fast_bias_correction=fast_bias_correction,
        target_device=nncf.TargetDevice.CPU,
    )
    try:
        model = _read(src)
        with _quiet():
            if accuracy_control is None:
                q = nncf.quantize(model, nncf.Dataset(items), **options)
            else:
                q = _quantize_with_accuracy_control(model, nncf.Dataset(items), accuracy_control, options)
        return _save_ir(q, dst)
    except Exception as exc:
        raise QuantizeError(f"NNCF INT8 quantization failed: {type(exc).__name__}: {exc}") from exc


def _quantize_with_accuracy_control(model, calibration, ac: AccuracyControl, options: dict):
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    batches = [(ac.x[i : i + ac.batch], ac.y[i : i + ac.batch]) for i in range(0, len(ac.x), ac.batch)]
    validation = nncf.Dataset(batches, lambda item: np.ascontiguousarray(item[0], dtype=np.float32))

    def validate(compiled, data) -> float:
        data = list(data)
        out = [compiled(np.ascontiguousarray(x, dtype=np.float32))[compiled.output(0)] for x, _ in data]
        return float(ac.metric(np.concatenate(out), np.concatenate([y for _, y in data])))

    # one ranking worker: NNCF's default pool compiled in parallel and took minutes on 2 busy cores
    restorer = AdvancedAccuracyRestorerParameters(max_num_iterations=ac.max_iterations, num_ranking_workers=1)
    return nncf.quantize_with_accuracy_control(
        model, calibration, validation, validate, max_drop=ac.max_drop,
        drop_type=nncf.DropType.ABSOLUTE, advanced_accuracy_restorer_parameters=restorer, **options,
    )


def _nncf(c) -> bool:
    return c.backend.quantizer == NncfQuantization.name


class NncfQuantization(Pass):
    """OpenVINO IR, FP32 or NNCF INT8, calibrated on the same samples as ORT's quantizer."""

    name = "nncf"
    per_backend = True
    genes = tuple(
        Gene(name, choices, default, Stage.ARTIFACT, keyed_at_default=_nncf, help=text,
             when=lambda c: _nncf(c) and c.precision is Precision.INT8_STATIC)
        for name, choices, default, text in (
            ("nncf_preset", tuple(NncfPreset), NncfPreset.PERFORMANCE, "NNCF quantization preset"),
            ("nncf_subset", (64, 128, 256), 256, "NNCF calibration samples"),
            ("nncf_fast_bias", (True, False), True, "NNCF fast bias correction"),
            ("nncf_accuracy_control", (False,), False, "NNCF accuracy control (keeps layers in float)"),
        )
    )
    suffix = ".xml"

    def applies(self, model, example, backend) -> str | None:
        return None if backend.quantizer == self.name else f"{backend.name} does not use NNCF"

    def build(self, fp32: Artifact, folder: Path, c, data: QuantData) -> Artifact:
        dst = folder / "model.xml"
        if c.precision is not Precision.INT8_STATIC:
            return to_ir(fp32, dst)
        control = None
        if c.nncf_accuracy_control:
            control = AccuracyControl(data.val_x, data.val_y, data.metric, data.max_drop)
        return quantize_nncf(fp32, dst, calibration_data=data.calibration, preset=c.nncf_preset,
                             subset_size=c.nncf_subset, fast_bias_correction=c.nncf_fast_bias,
                             accuracy_control=control)
