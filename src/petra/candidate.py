"""The candidate config and the search space, both derived from the genes the passes and
backends declare: nothing here names a gene.

A config is a frozen, hashable record with one value per gene. ``canonical()`` resets every
gene that cannot matter (by its declared condition) to its default and applies the declared
clamps, so that configs that would build the same artifact share one ``key`` and are never
evaluated twice. A space is the choices of every gene, in genome order; a genome is a tuple of
indices into them, so categorical genes stay categorical under crossover and mutation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from petra.compression.depth import BlockRemoval
from petra.compression.kernels import KernelCrop
from petra.compression.lowrank import LowRank
from petra.compression.pruning import StructuredPruning
from petra.compression.qat import QuantAwareTraining
from petra.compression.recurrent import RecurrentUnroll
from petra.compression.regularizers import Regularization
from petra.compression.training import FineTune
from petra.errors import ConfigError
from petra.exporters.fusion import TransformerFusion
from petra.exporters.openvino_quant import NncfQuantization
from petra.exporters.quantize import OrtQuantization, Quantization
from petra.genes import Gene, Pass, Stage
from petra.runtimes import RUNTIME, RUNTIME_GENES, RUNTIMES, backend

#: every technique, in the order of their genes in a genome (new passes go at the end)
PASSES: tuple[Pass, ...] = (StructuredPruning(), FineTune(), Regularization(), LowRank(),
                            QuantAwareTraining(), RecurrentUnroll(), Quantization(), OrtQuantization(),
                            NncfQuantization(), TransformerFusion(), BlockRemoval(), KernelCrop())
GENES: tuple[Gene, ...] = tuple(g for p in PASSES for g in p.genes) + RUNTIME_GENES
BY_NAME: dict[str, Gene] = {g.name: g for g in GENES}
assert len(BY_NAME) == len(GENES), "a gene is declared twice"
#: quantizer passes by name: a backend names the one that builds its artifacts
QUANTIZERS: dict[str, Pass] = {p.name: p for p in PASSES if hasattr(p, "build")}
#: passes that rewrite the exported FP32 file before it is quantized, in this order
REWRITES: tuple[Pass, ...] = tuple(p for p in PASSES if hasattr(p, "rewrite"))
#: the genes the torch stage reads: candidates that share them never retrain
TORCH_GENES = tuple(g.name for g in GENES if g.stage is Stage.TORCH)
#: how an artifact is run (threads, graph level, hint, streams, precision), not what it is: with
#: screening on, each artifact is timed at the settings that can matter instead of the search
#: spending a trial per setting (``runtime`` itself picks the artifact's builder, so it stays)
SETTING_GENES = tuple(g.name for g in RUNTIME_GENES if g is not RUNTIME)
#: which pass declares each gene (for reports: why a gene left the search)
OWNER: dict[str, str] = ({g.name: "runtimes" for g in RUNTIME_GENES}
                         | {g.name: cls.name for cls in RUNTIMES.values() for g in cls.genes}
                         | {g.name: p.name for p in PASSES for g in p.genes})


class _View:
    """Attribute access to gene values while a config is being canonicalised, plus the backend
    class of its runtime gene, which the declared conditions read (``c.backend.quantizer``)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    @property
    def backend(self):
        return backend(self.runtime)


class CandidateConfig:
    """One value per gene; immutable. ``CandidateConfig(prune_ratio=0.5, epochs=4)`` leaves
    every other gene at its declared default. Values are read as their gene's type, so
    ``importance="l2"`` is ``Importance.L2``. Why: a plain string was kept as given and matched
    no enum member downstream; pruning then took another branch and failed inside torch-pruning."""

    __slots__ = ("_values",)

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - BY_NAME.keys())
        if unknown:
            raise ConfigError(f"unknown gene {unknown[0]!r}; genes are {', '.join(BY_NAME)}")
        try:
            parsed = {g.name: g.parse(values[g.name]) if g.name in values else g.default for g in GENES}
        except ValueError as exc:
            raise ConfigError(f"invalid config value: {exc}") from None
        object.__setattr__(self, "_values", parsed)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a CandidateConfig is immutable; use .replace(...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CandidateConfig) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.values()))

    def __repr__(self) -> str:
        changed = ", ".join(f"{k}={v!r}" for k, v in self._values.items() if v != BY_NAME[k].default)
        return f"CandidateConfig({changed})"

    def __reduce__(self):  # training processes and Ray workers receive configs pickled
        return (_config_of, (self.to_json(),))

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._values.items())

    def replace(self, **values: Any) -> CandidateConfig:
        return CandidateConfig(**(self._values | values))

    @property
    def backend(self):
        return backend(self.runtime)

    def canonical(self) -> CandidateConfig:
        """Clamp, then reset what cannot matter, until nothing changes (a reset can make another
        gene irrelevant: FP32 makes ``qat`` irrelevant, which makes ``calibration`` matter)."""
        values = dict(self._values)
        for _ in range(len(GENES)):
            before = dict(values)
            for g in GENES:
                view = _View(values)
                if g.clamp is not None:
                    values[g.name] = g.clamp(values[g.name], view)
                if not g.matters(_View(values)):
                    values[g.name] = g.default
            if values == before:
                break
        return CandidateConfig(**values)

    def runtime_settings(self) -> dict:
        """The keyword settings of the backend's ``compile`` for this config."""
        return self.backend.settings(self)

    def with_settings(self, settings: Mapping[str, Any]) -> CandidateConfig:
        """This config run at ``settings`` (a backend's ``compile`` keywords, e.g. the fastest of
        a screened measurement), so that its record, hand-off and key say how it was measured."""
        names = self.backend.setting_genes
        return self.replace(**{names[k]: Gene.dump(v) for k, v in settings.items() if k in names}).canonical()

    def without_settings(self) -> CandidateConfig:
        """The config with every setting gene at its default: what a screened search asks for."""
        return self.replace(**{n: BY_NAME[n].default for n in SETTING_GENES}).canonical()

    @property
    def as_given(self) -> bool:
        """Whether the config builds the model as given (the FP32 baseline): nothing but its
        runtime and settings differ from the defaults."""
        return self.without_settings() == CandidateConfig(runtime=self.runtime).canonical()

    def to_json(self) -> dict:
        return {k: Gene.dump(v) for k, v in self._values.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CandidateConfig:
        unknown = sorted(set(data) - BY_NAME.keys())
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}")
        return cls(**data)  # each value is read as its gene's type there

    def _digest(self, payload: dict) -> str:
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        """Stable hash of the canonical config: equal keys build equal artifacts. A gene sitting at
        its default is hashed only where its declaration says so, so that configs from before a
        gene existed keep their keys (and their cached trials)."""
        c = self.canonical()
        view = _View(c._values)
        return self._digest({k: Gene.dump(v) for k, v in c.items() if BY_NAME[k].keyed(view, v)})

    @property
    def torch_key(self) -> str:
        """Hash of the torch stage alone: candidates sharing it never retrain."""
        c = self.canonical()
        return self._digest({k: Gene.dump(v) for k, v in c.items() if k in TORCH_GENES})


def _config_of(data: dict) -> CandidateConfig:
    return CandidateConfig.from_json(data)


class SearchSpace:
    """The choices of every gene, in genome order; ``SearchSpace()`` holds the declared ones."""

    __slots__ = ("_choices",)

    def __init__(self, **choices: tuple) -> None:
        unknown = sorted(set(choices) - BY_NAME.keys())
        if unknown:
            raise ConfigError(f"unknown gene {unknown[0]!r}; genes are {', '.join(BY_NAME)}")
        merged = {g.name: tuple(choices.get(g.name, g.choices)) for g in GENES}
        for g in GENES:
            if not merged[g.name]:
                raise ConfigError(f"search space gene {g.name!r} needs at least one choice")
            bad = g.bad_choices(merged[g.name])
            if bad:
                raise ConfigError(f"gene {g.name!r}: every choice {g.rule}, got {bad}")
        object.__setattr__(self, "_choices", merged)

    def __getattr__(self, name: str) -> tuple:
        try:
            return object.__getattribute__(self, "_choices")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a SearchSpace is immutable; use .replace(...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self._choices == other._choices

    def __repr__(self) -> str:
        return f"SearchSpace({self.open_genes})"

    def __reduce__(self):
        return (SearchSpace._of, (dict(self._choices),))

    @classmethod
    def _of(cls, choices: dict[str, tuple]) -> SearchSpace:
        return cls(**{k: v for k, v in choices.items() if k in BY_NAME})

    def replace(self, **choices: tuple) -> SearchSpace:
        return SearchSpace(**(self._choices | choices))

    def without_settings(self) -> SearchSpace:
        """Every setting gene at its default alone: a screened search never spends a trial on
        one (the configs it decodes are ``CandidateConfig.without_settings``)."""
        return self.replace(**{n: (BY_NAME[n].default,) for n in SETTING_GENES})

    @property
    def gene_names(self) -> tuple[str, ...]:
        return tuple(self._choices)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self._choices.values())

    @property
    def open_genes(self) -> tuple[str, ...]:
        """The genes the search actually varies (more than one choice)."""
        return tuple(n for n, c in self._choices.items() if len(c) > 1)

    def choices_json(self) -> dict[str, list[str]]:
        return {n: [str(Gene.dump(v)) for v in c] for n, c in self._choices.items()}

    def decode(self, genome) -> CandidateConfig:
        if len(genome) != len(self._choices):
            raise ValueError(f"genome has {len(genome)} genes, the space has {len(self._choices)}")
        values = {}
        for (name, choices), g in zip(self._choices.items(), genome):
            idx = int(g)
            if not 0 <= idx < len(choices):
                raise ValueError(f"gene {name!r} index {idx} outside [0, {len(choices)})")
            values[name] = choices[idx]
        return CandidateConfig(**values).canonical()

    def encode(self, config: CandidateConfig) -> tuple[int, ...]:
        """Nearest genome for a config (used to seed the first population)."""
        out = []
        for name, choices in self._choices.items():
            value = getattr(config, name)
            if value in choices:
                out.append(choices.index(value))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out.append(min(range(len(choices)), key=lambda i: abs(choices[i] - value)))
            else:
                out.append(0)
        return tuple(out)


def describe(config: CandidateConfig | Mapping[str, Any]) -> str:
    """The one config summary (CLI tables, progress lines, report): every gene that differs
    from its default, then where it runs; a gene added later needs no new formatting."""
    if not isinstance(config, CandidateConfig):
        config = CandidateConfig.from_json({k: v for k, v in config.items() if k in BY_NAME})
    c = config.canonical()
    shown = [f"{k}={_fmt(v)}" for k, v in c.items()
             if v != BY_NAME[k].default and BY_NAME[k].stage is not Stage.RUNTIME]
    where = [f"{k}={_fmt(v)}" for k, v in c.items()
             if BY_NAME[k].stage is Stage.RUNTIME and k not in ("runtime", "threads")
             and v != BY_NAME[k].default]
    return " ".join(shown or ["fp32"]) + f" | {c.runtime} {c.threads}t" + "".join(f" {w}" for w in where)


def _fmt(value: Any) -> str:
    value = Gene.dump(value)
    return f"{value:g}" if isinstance(value, float) else str(value)
