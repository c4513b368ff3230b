"""Genes, the search space, and the frozen candidate config a genome decodes into.

A genome is a tuple of integer indices, one per gene, into the choices of the ``SearchSpace``:
categorical genes stay categorical under PyGAD's crossover and mutation. Decoding
*canonicalises* the config — genes that cannot matter (calibration of an FP32 model, pruning
importance at ratio 0, ...) are reset to a fixed value — so that configs that would build the
same artifact share one hash and are never evaluated twice. The runtime is a gene too: genes
that only the other runtime reads are reset, and an ONNX Runtime config hashes exactly as it
did before OpenVINO genes existed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum

from petra.compression.pruning import Importance
from petra.errors import ConfigError
from petra.exporters.openvino_quant import NncfPreset
from petra.exporters.quantize import Calibration, Precision, QuantExclude
from petra.runtimes.onnxruntime import GraphOpt, OnnxRuntime
from petra.runtimes.openvino import Hint, InferencePrecision, OpenVinoRuntime

ORT, OPENVINO = OnnxRuntime.name, OpenVinoRuntime.name


class Regularizer(str, Enum):
    NONE = "none"
    L1 = "l1"  # L1 sparsity on BatchNorm scales before pruning
    KD = "kd"  # knowledge distillation from the FP32 teacher


@dataclass(frozen=True)
class CandidateConfig:
    prune_ratio: float = 0.0
    importance: Importance = Importance.L2
    round_to: int = 8
    epochs: int = 0
    lr: float = 1e-3
    regularizer: Regularizer = Regularizer.NONE
    reg_weight: float = 0.5
    precision: Precision = Precision.FP32
    calibration: Calibration = Calibration.MINMAX
    per_channel: bool = True
    graph_opt: GraphOpt = GraphOpt.ALL
    threads: int = 1
    runtime: str = ORT
    ov_hint: Hint = Hint.LATENCY
    ov_streams: int = 1
    ov_precision: InferencePrecision = InferencePrecision.F32
    nncf_preset: NncfPreset = NncfPreset.PERFORMANCE
    nncf_subset: int = 256
    nncf_fast_bias: bool = True
    nncf_accuracy_control: bool = False
    lowrank_ratio: float = 0.0  # SVD rank kept per factorized layer; 0 = off
    qat: bool = False  # quantization-aware fine-tune exported as QDQ (needs int8_static, epochs > 0)
    quant_exclude: QuantExclude = QuantExclude.NONE  # layers kept in float (mixed precision)
    #: export recurrent layers as unrolled MatMuls (INT8 reaches them; the ONNX GRU op stays float)
    unroll_recurrent: bool = False

    #: genes that only the torch stage (prune + fine-tune) reads
    TORCH_GENES = ("prune_ratio", "importance", "round_to", "epochs", "lr", "regularizer", "reg_weight",
                   "lowrank_ratio", "qat", "unroll_recurrent")
    #: genes that only one runtime reads (ORT's quantizer and session; OpenVINO's compile; NNCF).
    #: QAT exports ORT's QDQ format itself, so it is an ORT gene too.
    ORT_GENES = ("graph_opt", "calibration", "per_channel", "qat", "quant_exclude")
    OV_GENES = ("ov_hint", "ov_streams", "ov_precision")
    NNCF_GENES = ("nncf_preset", "nncf_subset", "nncf_fast_bias", "nncf_accuracy_control")

    def canonical(self) -> CandidateConfig:
        d = CandidateConfig()
        c = self
        if c.prune_ratio == 0.0:
            c = replace(c, importance=d.importance, round_to=d.round_to)
        if c.epochs == 0:
            c = replace(c, lr=d.lr, regularizer=Regularizer.NONE)
        if c.regularizer is Regularizer.NONE:
            c = replace(c, reg_weight=d.reg_weight)
        if c.precision is Precision.FP32:
            c = replace(c, calibration=d.calibration, per_channel=d.per_channel)
        elif c.precision is Precision.INT8_DYNAMIC:
            c = replace(c, calibration=d.calibration)
        # QAT fake-quantizes during a fine-tune and exports static QDQ itself: without epochs it
        # is plain PTQ, and it sets its own scales and quantizes every layer
        if c.precision is not Precision.INT8_STATIC or c.epochs == 0:
            c = replace(c, qat=False)
        if c.precision is Precision.FP32 or c.qat:
            c = replace(c, quant_exclude=QuantExclude.NONE)
        if c.qat:
            c = replace(c, calibration=d.calibration, per_channel=d.per_channel)
        return c._canonical_runtime()

    def _canonical_runtime(self) -> CandidateConfig:
        d, c = CandidateConfig(), self

        def reset(cfg: CandidateConfig, genes: tuple[str, ...]) -> CandidateConfig:
            return replace(cfg, **{g: getattr(d, g) for g in genes})

        if c.runtime != OPENVINO:
            return reset(c, self.OV_GENES + self.NNCF_GENES)
        c = reset(c, self.ORT_GENES)
        if c.ov_streams > c.threads:  # OpenVINO clamps streams to threads (read back: 2 -> 1)
            c = replace(c, ov_streams=c.threads)
        if c.precision is Precision.INT8_DYNAMIC:  # weight-only INT8 has no OpenVINO conv kernel
            c = replace(c, precision=Precision.FP32)
        if c.precision is Precision.FP32:
            c = reset(c, self.NNCF_GENES)
        return c

    def runtime_settings(self) -> dict:
        """The keyword settings of ``Runtime.compile`` for this config's runtime."""
        if self.runtime == OPENVINO:
            return {"hint": self.ov_hint, "streams": self.ov_streams, "threads": self.threads,
                    "precision": self.ov_precision}
        return {"graph_opt": self.graph_opt, "threads": self.threads}

    def to_json(self) -> dict:
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> CandidateConfig:
        types = {f.name: f.type for f in fields(cls)}
        kwargs = {}
        for k, v in data.items():
            if k not in types:
                raise ConfigError(f"unknown config key {k!r}")
            enum = {"importance": Importance, "regularizer": Regularizer, "precision": Precision,
                    "calibration": Calibration, "graph_opt": GraphOpt, "ov_hint": Hint,
                    "ov_precision": InferencePrecision, "nncf_preset": NncfPreset,
                    "quant_exclude": QuantExclude}.get(k)
            kwargs[k] = enum(v) if enum else v
        return cls(**kwargs)

    def _digest(self, keys) -> str:
        payload = {k: v for k, v in self.canonical().to_json().items() if k in keys}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        """Stable hash of the canonical config: equal keys build equal artifacts."""
        names = {f.name for f in fields(self)}
        if self.runtime == ORT:  # hash as before the runtime gene existed: old keys stay valid
            names -= {"runtime", *self.OV_GENES, *self.NNCF_GENES}
        c, d = self.canonical(), CandidateConfig()
        # genes added later hash only when switched on, for the same reason
        later = ("lowrank_ratio", "qat", "quant_exclude", "unroll_recurrent")
        names -= {g for g in later if getattr(c, g) == getattr(d, g)}
        return self._digest(names)

    @property
    def torch_key(self) -> str:
        """Hash of the torch stage alone: candidates sharing it never retrain."""
        return self._digest(set(self.TORCH_GENES))


@dataclass(frozen=True)
class SearchSpace:
    """The choices of every gene; the order of fields is the order of genes in a genome."""

    prune_ratio: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    importance: tuple[Importance, ...] = tuple(Importance)
    round_to: tuple[int, ...] = (1, 4, 8, 16)
    epochs: tuple[int, ...] = (0, 1, 2, 4, 6)
    lr: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    regularizer: tuple[Regularizer, ...] = tuple(Regularizer)
    reg_weight: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    precision: tuple[Precision, ...] = tuple(Precision)
    calibration: tuple[Calibration, ...] = tuple(Calibration)
    per_channel: tuple[bool, ...] = (False, True)
    graph_opt: tuple[GraphOpt, ...] = (GraphOpt.BASIC, GraphOpt.EXTENDED, GraphOpt.ALL)
    threads: tuple[int, ...] = (1,)
    runtime: tuple[str, ...] = (ORT,)
    ov_hint: tuple[Hint, ...] = tuple(Hint)
    ov_streams: tuple[int, ...] = (1, 2)
    ov_precision: tuple[InferencePrecision, ...] = (InferencePrecision.F32, InferencePrecision.BF16)
    nncf_preset: tuple[NncfPreset, ...] = tuple(NncfPreset)
    nncf_subset: tuple[int, ...] = (64, 128, 256)
    nncf_fast_bias: tuple[bool, ...] = (True, False)
    nncf_accuracy_control: tuple[bool, ...] = (False,)
    lowrank_ratio: tuple[float, ...] = (0.0, 0.25, 0.5)
    qat: tuple[bool, ...] = (False, True)
    quant_exclude: tuple[QuantExclude, ...] = tuple(QuantExclude)
    #: one choice unless a task with recurrent layers opens it (``Task.gene_choices``)
    unroll_recurrent: tuple[bool, ...] = (False,)

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name):
                raise ConfigError(f"search space gene {f.name!r} needs at least one choice")
        bad = [r for r in self.prune_ratio if not 0.0 <= r <= 0.8]
        if bad:
            raise ConfigError(f"pruning ratios must be in [0, 0.8], got {bad}")
        bad = [r for r in self.lowrank_ratio if not 0.0 <= r < 1.0]
        if bad:
            raise ConfigError(f"low-rank ratios must be in [0, 1) (0 = off), got {bad}")

    @property
    def gene_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(getattr(self, n)) for n in self.gene_names)

    def decode(self, genome) -> CandidateConfig:
        if len(genome) != len(self.gene_names):
            raise ValueError(f"genome has {len(genome)} genes, the space has {len(self.gene_names)}")
        values = {}
        for name, size, g in zip(self.gene_names, self.sizes, genome):
            idx = int(g)
            if not 0 <= idx < size:
                raise ValueError(f"gene {name!r} index {idx} outside [0, {size})")
            values[name] = getattr(self, name)[idx]
        return CandidateConfig(**values).canonical()

    def encode(self, config: CandidateConfig) -> tuple[int, ...]:
        """Nearest genome for a config (used to seed the first population)."""
        out = []
        for name in self.gene_names:
            choices, value = getattr(self, name), getattr(config, name)
            if value in choices:
                out.append(choices.index(value))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out.append(min(range(len(choices)), key=lambda i: abs(choices[i] - value)))
            else:
                out.append(0)
        return tuple(out)
