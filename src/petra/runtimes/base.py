"""The runtime contract: every backend supplies ``available()`` and ``compile()``.

The algorithm (search, measurement) is written once against ``Runtime`` and ``Session``; a new
backend is one small class, never an if/elif chain copied into every caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


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

    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """(usable, reason when not): says precisely what is missing."""

    @abstractmethod
    def compile(self, model_path: Path, **settings: Any) -> Session:
        """Load and compile; raises ``CompileError`` on a model the runtime rejects."""

    @abstractmethod
    def versions(self) -> dict[str, str]: ...
