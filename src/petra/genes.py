"""Genes and the two shapes that declare them: a *pass* (one technique) and, in ``runtimes/``,
a *backend* (one runtime).

A gene is declared once, beside the code that reads it: its name, its choices, its default and
the condition under which it matters. Everything else is derived from those declarations: the
frozen candidate config, its canonical form (a gene that cannot matter is reset to its default,
so two configs that build the same artifact share one hash), the JSON round trip and the search
space of a run. Adding a technique is one class with its genes; nothing else lists them.

This module imports nothing from petra's rooms, so every room may declare genes with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Stage(str, Enum):
    """Which build step reads a gene: candidates that share every TORCH gene never retrain."""

    TORCH = "torch"  # prune, fine-tune, factorize, QAT: the expensive step, cached by its genes
    ARTIFACT = "artifact"  # quantize / convert the exported FP32 file
    RUNTIME = "runtime"  # how the artifact is compiled and run


@dataclass(frozen=True)
class Gene:
    name: str
    choices: tuple
    default: Any
    stage: Stage
    #: the gene matters only when this holds for the (already canonical) config; else it is reset
    when: Callable[[Any], bool] | None = None
    #: maps a value to the one that is actually built (OpenVINO clamps streams to threads)
    clamp: Callable[[Any, Any], Any] | None = None
    #: whether the config's hash includes the gene while it sits at its default. Genes that were
    #: added after the first release say False (or a condition), so older configs keep their keys
    keyed_at_default: bool | Callable[[Any], bool] = True
    help: str = ""
    #: a rule every choice must satisfy, and how to state it ("must be in [0, 0.8]")
    valid: Callable[[Any], bool] | None = None
    rule: str = ""

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"gene {self.name!r} needs at least one choice")

    def bad_choices(self, choices: tuple) -> list:
        return [] if self.valid is None else [c for c in choices if not self.valid(c)]

    def matters(self, config: Any) -> bool:
        return self.when is None or bool(self.when(config))

    def keyed(self, config: Any, value: Any) -> bool:
        if value != self.default:
            return True
        k = self.keyed_at_default
        return k(config) if callable(k) else k

    def parse(self, raw: Any) -> Any:
        """A value from JSON (an enum's ``.value``) back to the declared type."""
        kind = type(self.default)
        if isinstance(self.default, Enum):
            return kind(raw)
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        return raw

    @staticmethod
    def dump(value: Any) -> Any:
        return value.value if isinstance(value, Enum) else value


class Pass:
    """One technique: its genes, whether it can work on a given model, and (in the subclass)
    the verb that does the work.

    ``applies`` is a real probe on a copy of the model (apply at a representative setting, run
    forward, export), so that a gene that cannot work on the model is removed from the run's
    search space with a reason, instead of being discovered one FAILed trial at a time.
    ``narrow`` removes single choices that cannot work (BN-scale importance without BatchNorm);
    ``narrow_graph`` does it from the exported ONNX file, for what only the graph shows.
    """

    name: str = ""
    genes: tuple[Gene, ...] = ()
    #: whether ``applies`` depends on the backend (a quantizer pass); torch passes probe once
    per_backend: bool = False

    def applies(self, model, example, backend) -> str | None:
        return None

    def narrow(self, model, example) -> dict[str, tuple[tuple, str]]:
        """gene -> (the choices that can work, why the others cannot)."""
        return {}

    def narrow_graph(self, onnx_path) -> dict[str, tuple[tuple, str]]:
        """The same, read off the model's ONNX file (as exported, or as given)."""
        return {}
