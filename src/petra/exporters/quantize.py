"""ONNX -> quantized ONNX with ONNX Runtime's quantizer, calibrated on the task's own data.

Static INT8 is QDQ with u8 activations and s8 weights: the format ORT's CPU kernels fuse into
integer convolutions. (QOperator with s8 activations measured 4.4x slower here, and the
"Distribution" calibrator is for float8, so neither is offered.) Dynamic INT8 quantizes
weights only; it pays on MatMul-heavy models and is slower on convolutions, which is exactly
what the search should find out by measuring. It also reaches the ONNX ``LSTM`` op, which ORT
turns into ``DynamicQuantizeLSTM`` only when W and R are 3-D initializers: the TorchScript export
writes them so, and ``quant_pre_process``'s constant folding makes them so after a dynamo export
(which computes them with Slice/Concat); tests/compression/test_recurrent.py checks both.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from petra.errors import QuantizeError
from petra.exporters.artifact import Artifact
from petra.genes import Gene, Pass, Stage


class Precision(str, Enum):
    FP32 = "fp32"
    INT8_STATIC = "int8_static"
    INT8_DYNAMIC = "int8_dynamic"


class Calibration(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class QuantExclude(str, Enum):
    """Weighted layers (Conv/Gemm/MatMul) kept in float: mixed precision by exclusion.

    The first and last layers are the classic ones to keep (few MACs, most accuracy loss);
    ``SENSITIVE`` keeps the one layer whose quantization alone moves the outputs most.
    """

    NONE = "none"
    FIRST = "first"
    LAST = "last"
    FIRST_LAST = "first_last"
    SENSITIVE = "sensitive"


#: the ONNX LSTM counts: dynamic INT8 turns it into DynamicQuantizeLSTM, and in a recurrent model
#: it holds most of the weights (without it, first/last/first_last all named the head)
#: ORT's shape inference gives no type to the outputs of its own fused contrib ops
#: (SkipLayerNormalization after transformer fusion): "Unable to find data type for
#: weight_name=..." unless the quantizer is told that untyped tensors are float
FLOAT_DEFAULT = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM")
#: samples used to rank layer sensitivity: enough to order layers, cheap to run N times
SENSITIVITY_SAMPLES = 64
#: sensitivity analysis quantizes the model once per weight, and each quantization walks the
#: whole graph: one per *layer* of an unrolled 39-step GRU held one cdnow candidate for over 8
#: minutes, so beyond this many weights the choice is not offered (and fails fast if asked for)
MAX_SENSITIVITY_LAYERS = 64


def weighted_nodes(model_path: Path) -> list[str]:
    """Names of the layers that carry weights, in graph (topological) order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in WEIGHTED_OPS]


def weight_groups(model_path: Path) -> dict[str, list[str]]:
    """The weighted layers grouped by the initializer they read, in graph order; a layer whose
    weight is computed (no initializer among its inputs) is a group of its own.

    Why: an unrolled GRU reads one recurrent weight from one MatMul per time step (cdnow's:
    82 weighted nodes, 6 weights). Quantizing one step's copy alone neither is a choice a
    deployment would make nor scales; the weight is the unit that is kept in float or not.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    groups: dict[str, list[str]] = {}
    for n in graph.node:
        if n.op_type in WEIGHTED_OPS:
            weight = next((x for x in n.input if x in inits), n.name)
            groups.setdefault(weight, []).append(n.name)
    return groups


def calibration_batches(n: int, batch: int) -> list[slice]:
    """At most ``batch`` samples per batch, every batch the same size.

    Why equal: ORT's histogram calibrators (entropy, percentile) stack each tensor's batches with
    ``np.asarray``, which fails on a short last batch ("setting an array element with a
    sequence"; 36 UCR training series in batches of 32). The fewest batches of at most ``batch``
    are made equal by dropping fewer samples than there are batches (36 -> 2 x 18, 37 -> 2 x 18).
    """
    k = -(-n // batch) if n else 0
    size = n // k if k else 0
    return [slice(i * size, (i + 1) * size) for i in range(k)]


@contextlib.contextmanager
def _quiet():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _reader(input_name: str, data: np.ndarray, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration_batches(len(data), batch))

        def get_next(self):
            sl = next(self._it, None)
            return None if sl is None else {input_name: np.ascontiguousarray(data[sl])}

    return Reader()


def quantize(
    src: Artifact,
    dst: Path,
    *,
    precision: Precision,
    calibration: Calibration = Calibration.MINMAX,
    per_channel: bool = True,
    calibration_data: np.ndarray | None = None,
    calibration_batch: int = 32,
    exclude: QuantExclude | Sequence[str] = QuantExclude.NONE,
) -> Artifact:
    """Write the quantized model to ``dst``; FP32 is a plain copy so every path is uniform.

    ``exclude`` keeps layers in float: a ``QuantExclude`` rule or explicit ONNX node names.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = dst.with_name(dst.name + ".tmp")
    # the entropy/percentile calibrators print progress to stdout, and the quantizer warns on
    # the root logger for every tensor it cannot type: keep the CLI's output clean
    quiet = _quiet()
    try:
        if precision is Precision.FP32:
            tmp_out.write_bytes(Path(src.path).read_bytes())
        else:
            with tempfile.TemporaryDirectory(prefix="petra-q-") as tmpdir, quiet:
                # shape inference + graph cleanup first, as ORT's quantizer expects
                pre = Path(tmpdir) / "pre.onnx"
                quant_pre_process(str(src.path), str(pre), skip_symbolic_shape=True)
                if precision is Precision.INT8_STATIC and (calibration_data is None
                                                           or len(calibration_data) == 0):
                    raise QuantizeError("static INT8 needs calibration data from the task")
                run = _Quantizer(precision, calibration, per_channel, calibration_data,
                                 calibration_batch)
                run(pre, tmp_out, nodes_to_exclude=_resolve_exclude(exclude, pre, run, calibration_data))
    except QuantizeError:
        raise
    except Exception as exc:
        raise QuantizeError(f"{precision.value} quantization failed: {type(exc).__name__}: {exc}") from exc
    os.replace(tmp_out, dst)
    return Artifact.of(dst)


class _Quantizer:
    """One ORT quantization call with fixed settings, restricted to or excluding some nodes."""

    def __init__(self, precision: Precision, calibration: Calibration, per_channel: bool,
                 data: np.ndarray | None, batch: int) -> None:
        self.precision, self.calibration, self.per_channel = precision, calibration, per_channel
        self.data, self.batch = data, batch

    def __call__(self, src: Path, dst: Path, *, nodes_to_quantize: list[str] | None = None,
                 nodes_to_exclude: list[str] | None = None, data: np.ndarray | None = None) -> None:
        import onnx
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        if self.precision is Precision.INT8_DYNAMIC:
            quantize_dynamic(str(src), str(dst), per_channel=self.per_channel,
                             weight_type=QuantType.QInt8, nodes_to_quantize=nodes_to_quantize,
                             nodes_to_exclude=nodes_to_exclude, extra_options=FLOAT_DEFAULT)
            return
        data = self.data if data is None else data
        graph = onnx.load(str(src), load_external_data=False).graph
        method = {
            Calibration.MINMAX: CalibrationMethod.MinMax,
            Calibration.ENTROPY: CalibrationMethod.Entropy,
            Calibration.PERCENTILE: CalibrationMethod.Percentile,
        }[self.calibration]

        def run(options: dict) -> None:
            quantize_static(
                str(src), str(dst), _reader(graph.input[0].name, data, self.batch),
                quant_format=QuantFormat.QDQ, per_channel=self.per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=method, nodes_to_quantize=nodes_to_quantize,
                nodes_to_exclude=nodes_to_exclude, extra_options=options,
            )

        try:
            run(FLOAT_DEFAULT)
        except ValueError as exc:
            # an activation whose calibrated range is zero (a pooled output that a heavily pruned,
            # not yet fine-tuned encoder leaves constant) has no scale to derive the int32 bias
            # scale from: ORT refuses the whole model; keep such biases in float instead
            if "Unable to get valid quantization scale" not in str(exc):
                raise
            run(FLOAT_DEFAULT | {"QuantizeBias": False})


def _resolve_exclude(exclude: QuantExclude | Sequence[str], model: Path, run: _Quantizer,
                     data: np.ndarray | None) -> list[str]:
    if not isinstance(exclude, QuantExclude):
        return list(exclude)
    layers = weighted_nodes(model)
    if exclude is QuantExclude.NONE or not layers:
        return []
    if exclude is QuantExclude.FIRST:
        return layers[:1]
    if exclude is QuantExclude.LAST:
        return layers[-1:]
    if exclude is QuantExclude.FIRST_LAST:
        return sorted({layers[0], layers[-1]}, key=layers.index)
    if data is None or len(data) == 0:
        raise QuantizeError("sensitivity-based exclusion needs calibration data from the task")
    groups = weight_groups(model)
    if (why := sensitivity_over_limit(len(groups))) is not None:
        raise QuantizeError(f"{why}; use quant_exclude first, last or first_last")
    scores = layer_sensitivity(model, run, data[:SENSITIVITY_SAMPLES], groups)
    return groups[max(scores, key=scores.__getitem__)]


def sensitivity_over_limit(n_weights: int) -> str | None:
    """Why the sensitivity ranking is refused for a graph of ``n_weights`` (None: it is not);
    one wording for the quantizer's error and the search space's narrowing."""
    if n_weights <= MAX_SENSITIVITY_LAYERS:
        return None
    return (f"sensitivity-based exclusion quantizes each weight once, and the graph has {n_weights} "
            f"(limit {MAX_SENSITIVITY_LAYERS})")


def layer_sensitivity(model: Path, run: _Quantizer, data: np.ndarray,
                      groups: dict[str, list[str]] | None = None) -> dict[str, float]:
    """Relative output error when each weight alone is quantized (every layer that reads it),
    on ``data``, by weight (see ``weight_groups``).

    One cheap quantization per weight on a small sample; it ranks weights, it does not predict
    the accuracy of the whole quantized model.
    """
    import onnxruntime as ort

    def outputs(path: Path) -> np.ndarray:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(data)})[0]

    ref = outputs(model)
    scale = float(np.mean(ref**2)) or 1.0
    scores = {}
    for i, (weight, nodes) in enumerate((groups or weight_groups(model)).items()):
        one = Path(model).with_name(f"sensitivity-{i}.onnx")
        run(model, one, nodes_to_quantize=nodes, data=data)
        scores[weight] = float(np.mean((outputs(one) - ref) ** 2)) / scale
        one.unlink()
    return scores


@dataclass(frozen=True)
class QuantData:
    """What a quantizer pass may read of the task: calibration inputs, and for accuracy-aware
    quantization the validation split, its metric and the allowed drop."""

    calibration: np.ndarray
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    metric: Callable | None = None
    max_drop: float = 1.0


PRECISION = Gene("precision", tuple(Precision), Precision.FP32, Stage.ARTIFACT,
                 # a precision the backend's quantizer cannot build is the FP32 artifact
                 clamp=lambda v, c: v if v.value in c.backend.precisions else Precision.FP32,
                 help="fp32, static INT8 (calibrated) or dynamic INT8 (weights only)")


class Quantization(Pass):
    """The precision of the artifact; each backend's quantizer pass builds it."""

    name = "quantization"
    genes = (PRECISION,)


def _ort_int8(c, *, static_only: bool = False) -> bool:
    if c.backend.quantizer != OrtQuantization.name or c.qat:
        return False
    return c.precision is Precision.INT8_STATIC if static_only else c.precision is not Precision.FP32


class OrtQuantization(Pass):
    """ONNX Runtime's quantizer: QDQ static INT8 or dynamic INT8 of an ONNX file."""

    name = "ort"
    per_backend = True
    genes = (
        Gene("calibration", tuple(Calibration), Calibration.MINMAX, Stage.ARTIFACT,
             when=lambda c: _ort_int8(c, static_only=True), help="static INT8 calibration method"),
        Gene("per_channel", (False, True), True, Stage.ARTIFACT, when=_ort_int8,
             help="per-channel weight scales"),
        Gene("quant_exclude", tuple(QuantExclude), QuantExclude.NONE, Stage.ARTIFACT, when=_ort_int8,
             keyed_at_default=False, help="layers kept in float (mixed precision)"),
    )
    suffix = ".onnx"

    def applies(self, model, example, backend) -> str | None:
        return None if backend.quantizer == self.name else f"{backend.name} does not use ORT's quantizer"

    def narrow_graph(self, onnx_path) -> dict[str, tuple[tuple, str]]:
        """Why: past ``MAX_SENSITIVITY_LAYERS`` the sensitive exclusion fails fast, but only after
        its candidate's torch stage is built; counted once on the exported model, the choice is
        not offered. (Pruning keeps the count; an unrolled GRU adds layers, not weights.)"""
        why = sensitivity_over_limit(len(weight_groups(onnx_path)))
        if why is None:
            return {}
        return {"quant_exclude": (tuple(e for e in QuantExclude if e is not QuantExclude.SENSITIVE), why)}

    def build(self, fp32: Artifact, folder: Path, c, data: QuantData) -> Artifact:
        needs_data = c.precision is Precision.INT8_STATIC or c.quant_exclude is QuantExclude.SENSITIVE
        return quantize(fp32, folder / "model.onnx",
                        precision=Precision.FP32 if c.qat else c.precision,  # QAT's file is QDQ already
                        calibration=c.calibration, per_channel=c.per_channel,
                        calibration_data=data.calibration if needs_data else None,
                        exclude=c.quant_exclude)
