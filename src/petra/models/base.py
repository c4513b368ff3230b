"""The ``Task``: what a user brings to petra.

A task is a model factory (the trained FP32 baseline), real train / validation / test data and
a metric with its direction. Selection only ever looks at the validation split; the test split
is reported, never optimised against.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from petra.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """One split of real data: inputs ``x`` (float32, batch first) and targets ``y``."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ConfigError(
                f"a split needs as many inputs as targets, got {len(self.x)} and {len(self.y)}"
            )
        if len(self.x) == 0:
            raise ConfigError("a split must not be empty: give at least one example")

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Metric:
    """A metric on model outputs; ``higher_is_better`` fixes the sign of a "drop"."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True

    def __call__(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        return float(self.fn(outputs, targets))

    def drop(self, baseline: float, candidate: float) -> float:
        """Points lost against the baseline (positive = worse), whatever the direction."""
        return baseline - candidate if self.higher_is_better else candidate - baseline


def accuracy_percent(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy in percent, so that "1 point" of drop means one percentage point."""
    return float((outputs.argmax(axis=1) == targets).mean() * 100.0)


ACCURACY = Metric("accuracy", accuracy_percent, higher_is_better=True)


@dataclass(frozen=True)
class TrainSettings:
    """How the FP32 baseline is trained: to convergence, early-stopped on validation."""

    max_epochs: int = 60
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 5e-4
    patience: int = 8
    seed: int = 0


@dataclass
class Task:
    """A model architecture plus real data and a metric.

    ``build_model`` returns an *untrained* instance of the architecture; ``baseline()`` trains
    it once (early stopping on validation) and caches the weights on disk, keyed by a content
    hash of the data, the architecture and the training settings, so that every later run of
    the same task starts from the same converged baseline.
    """

    name: str
    build_model: Callable[[], nn.Module]
    train: Split
    val: Split
    test: Split
    metric: Metric = ACCURACY
    train_settings: TrainSettings = field(default_factory=TrainSettings)
    description: str = ""

    @property
    def example_input(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.val.x[:1]))

    def content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(self.name.encode())
        for split in (self.train, self.val, self.test):
            h.update(np.ascontiguousarray(split.x).tobytes())
            h.update(np.ascontiguousarray(split.y).tobytes())
        h.update(repr(self.build_model()).encode())
        h.update(repr(self.train_settings).encode())
        h.update(torch.__version__.encode())
        return h.hexdigest()[:16]

    def baseline(self, cache_dir: Path | None = None, log: Callable[[str], None] = print) -> nn.Module:
        """The trained FP32 model, from the cache when it exists."""
        from petra.compression.training import train_baseline

        cache_dir = Path(cache_dir or default_cache_dir()) / "baselines"
        path = cache_dir / f"{self.name}-{self.content_hash()}.pt"
        model = self.build_model()
        if path.exists():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            log(f"baseline: loaded cached weights {path}")
            return model.eval()
        log(f"baseline: training {self.name} to convergence (cached at {path})")
        train_baseline(model, self)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
        return model.eval()


def default_cache_dir() -> Path:
    return Path(os.environ.get("PETRA_CACHE_DIR", Path.home() / ".cache" / "petra"))


def _builtin_tasks() -> dict[str, Callable[[], Task]]:
    from petra.models import digits

    return {"digits": digits.digits_task}


def task_names() -> list[str]:
    return sorted(_builtin_tasks())


def get_task(name: str) -> Task:
    """A built-in task by name, or a user's task from ``"package.module:function"``."""
    builtin = _builtin_tasks()
    if name in builtin:
        return builtin[name]()
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"cannot load task {name!r} ({exc}); give 'module:function' importable from here"
            ) from None
        task = factory()
        if not isinstance(task, Task):
            raise ConfigError(f"{name!r} returned {type(task).__name__}, expected a petra Task")
        return task
    raise ConfigError(
        f"unknown task {name!r}; choose one of {', '.join(task_names())} or give 'module:function'"
    )
