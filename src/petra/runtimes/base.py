"""The backend contract: one class per runtime.

A backend owns everything that depends on which runtime runs the model: its settings genes,
which quantizer pass builds its INT8 artifacts, compile, and the hand-off snippet that loads an
artifact exactly as it was measured. The algorithm (search, measurement) is written once
against ``Runtime`` and ``Session``; nothing outside ``runtimes/`` asks which runtime it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from petra.genes import Gene, Stage
from petra.runtimes.inputs import InputSpec

#: which backend runs a candidate; its choices are the runtimes of the run (``--runtime auto``)
RUNTIME = Gene("runtime", ("onnxruntime",), "onnxruntime", Stage.RUNTIME, keyed_at_default=False,
               help="the runtime that compiles and runs the artifact")
#: intra-op threads, common to every CPU backend; its choices go up to the cores of the machine
THREADS = Gene("threads", (1,), 1, Stage.RUNTIME, help="intra-op threads")


def thread_ladder(cores: int) -> tuple[int, ...]:
    """Thread counts worth screening: 1, powers of two below ``cores``, and ``cores``. Every count
    up to 4 cores; beyond, the gaps cost a few percent at most while a screen of every count
    would cost a tenth of a second per count per artifact."""
    out, t = {1, max(1, cores)}, 2
    while t < cores:
        out.add(t)
        t *= 2
    return tuple(sorted(out))


class Session(ABC):
    """A compiled model ready to run on numpy inputs."""

    #: what the session was compiled with, as reported in manifests
    settings: dict[str, Any]
    #: seconds spent compiling / loading
    compile_s: float

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray: ...

    def call(self, x: np.ndarray) -> Callable[[], object]:
        """One inference on ``x`` as a zero-argument call, for the timing loop.

        Runtimes override this with the cheapest call their Python API offers (input bound once,
        outputs left in buffers the runtime reuses), which is what a latency-minded deployment
        writes and what the runtimes' own benchmark tools time; ``run`` pays for allocating and
        copying outputs, which is several percent of a 0.1 ms model.
        """
        return lambda: self.run(x)

    def run_batched(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([self.run(np.ascontiguousarray(x[i : i + batch]))
                               for i in range(0, len(x), batch)])


class Runtime(ABC):
    name: str
    #: the settings genes only this backend reads (``threads`` and ``runtime`` are common)
    genes: tuple[Gene, ...] = ()
    #: the name of the quantization pass that builds this backend's INT8 artifacts
    quantizer: str = ""
    #: precisions (``Precision`` values) this backend's quantizer builds; others fall back to fp32
    precisions: tuple[str, ...] = ("fp32",)
    #: keyword of ``compile`` -> the gene that holds it: ``settings`` reads a config through it and
    #: a screened measurement's fastest setting goes back into the config through it
    setting_genes: dict[str, str] = {"threads": "threads"}

    @classmethod
    def settings(cls, config: Any) -> dict[str, Any]:
        """The keyword settings of ``compile`` for a candidate config."""
        return {kw: getattr(config, gene) for kw, gene in cls.setting_genes.items()}

    @classmethod
    def screen(cls, config: Any, artifact_path: Path, cores: int, *, exact: bool = False) -> list[dict]:
        """The settings worth timing ``artifact_path`` at on this machine before it is measured
        at the fastest: each a ``settings`` dict, ``config``'s own values for what is not varied.

        Why per artifact and not per trial: a setting changes how an artifact runs, not what it
        is, so a search that spent a whole build on each setting (ORT BASIC vs ALL on the same
        INT8 file: 4-7x apart) wasted most of its trials. Backends add their own settings and
        leave out those that cannot win on this artifact; ``exact`` keeps only settings that
        compute in the precision the file declares (the FP32 baseline's honest figure).
        """
        return [cls.settings(config) | {"threads": t} for t in thread_ladder(cores)]

    @classmethod
    def machine_choices(cls) -> dict[str, tuple]:
        """Choices of this backend's genes that this machine can run (native precisions)."""
        return {}

    @classmethod
    @abstractmethod
    def usage(cls, model_file: str, settings: dict[str, Any], spec: InputSpec) -> str:
        """A Markdown snippet that loads ``model_file`` with ``settings`` and runs it once."""

    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """(usable, reason when not): says precisely what is missing."""

    @abstractmethod
    def compile(self, model_path: Path, **settings: Any) -> Session:
        """Load and compile; raises ``CompileError`` on a model the runtime rejects."""

    @abstractmethod
    def versions(self) -> dict[str, str]: ...
