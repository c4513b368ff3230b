"""The ``Task``: what a user brings to petra.

A task is a model factory (the trained FP32 baseline), real train / validation / test data and
a metric with its direction. Selection only ever looks at the validation split; the test split
is reported, never optimised against.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
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

    @classmethod
    def of(cls, data, name: str = "split") -> Split:
        """A ``Split``, an ``(inputs, targets)`` pair of arrays or tensors, or a DataLoader of
        ``(inputs, targets)`` batches: what ``petra.optimize`` accepts for each split."""
        if isinstance(data, Split):
            return data
        if isinstance(data, tuple | list) and len(data) == 2:
            x, y = (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in data)
            return cls(np.ascontiguousarray(x, dtype=np.float32), y)
        if hasattr(data, "__iter__"):
            return cls.from_loader(data)
        raise ConfigError(f"the {name} split must be (inputs, targets) arrays or a DataLoader of "
                          f"(inputs, targets) batches, got {type(data).__name__}")

    @classmethod
    def from_loader(cls, loader) -> Split:
        """Materialise a ``torch.utils.data.DataLoader`` of ``(inputs, targets)`` batches once:
        every candidate is scored on exactly the same examples, in the same order."""
        xs, ys = [], []
        for batch in loader:
            if not isinstance(batch, list | tuple) or len(batch) != 2:
                raise ConfigError("a data loader for petra must yield (inputs, targets) pairs")
            xs.append(np.asarray(batch[0], dtype=np.float32))
            ys.append(np.asarray(batch[1]))
        if not xs:
            raise ConfigError("the data loader yielded no batches; give it at least one example")
        return cls(np.concatenate(xs), np.concatenate(ys))


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
#: names the early-stopping rule in the baseline cache key: a changed rule retrains, never reuses
BASELINE_RECIPE = "checkpoint by metric then validation loss; patience on both"


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
    """A model plus real data and a metric.

    Either ``model``, a trained ``nn.Module`` that *is* the FP32 baseline (measured as given,
    never retrained), or ``build_model``, which returns an instance of the architecture: with
    ``weights`` (a state_dict checkpoint, loaded with ``weights_only=True``) it is the trained
    baseline; without, ``baseline()`` trains it once (early stopping on validation) and caches
    the weights on disk, keyed by a content hash of the data, the architecture and the training
    settings, so that every later run of the same task starts from the same converged baseline.
    """

    name: str
    build_model: Callable[[], nn.Module] | None = None
    train: Split | None = None
    val: Split | None = None
    test: Split | None = None
    metric: Metric = ACCURACY
    train_settings: TrainSettings = field(default_factory=TrainSettings)
    description: str = ""
    #: gene name -> the only choices this task allows: a user override. What cannot apply to the
    #: model is found by probing it (each pass's ``applies``), so this is rarely needed
    gene_choices: dict[str, tuple] = field(default_factory=dict)
    #: when set (e.g. 0.9), feasibility is decided on this one-sided upper confidence bound of
    #: the validation drop (paired bootstrap), not on the point estimate: small test sets
    drop_confidence: float | None = None
    #: the published figure the FP32 baseline is compared with, for ``petra models`` / reports
    reference: str = ""
    #: a trained model: the FP32 baseline as given
    model: nn.Module | None = None
    #: a checkpoint (state_dict) of ``build_model()``'s architecture: the baseline as given
    weights: str | Path | None = None
    #: the training loss on (outputs, targets), e.g. ``torch.nn.functional.mse_loss`` for a
    #: regression; None: cross-entropy on class scores. Fine-tunes and distillation use it too
    loss: Callable | None = None

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            if getattr(self, part) is None:
                raise ConfigError(f"task {self.name!r} needs train, val and test data; {part} is missing")
            setattr(self, part, Split.of(getattr(self, part), part))
        if (self.model is None) == (self.build_model is None):
            raise ConfigError(f"task {self.name!r}: give either model= (a trained nn.Module) or "
                              "build_model= (a function returning the architecture), not both or neither")
        if self.model is not None and not isinstance(self.model, nn.Module):
            raise ConfigError(f"task {self.name!r}: model= must be a torch.nn.Module, got "
                              f"{type(self.model).__name__}")
        if self.weights is not None and self.build_model is None:
            raise ConfigError(f"task {self.name!r}: weights= loads into build_model()'s architecture; "
                              "with model= the module's own weights are used")
        if self.weights is not None and not Path(self.weights).is_file():
            raise ConfigError(f"task {self.name!r}: no such checkpoint {str(self.weights)!r}; "
                              "save one with torch.save(model.state_dict(), path)")

    @property
    def trained(self) -> bool:
        """The baseline is given (a model or a checkpoint): nothing retrains it."""
        return self.model is not None or self.weights is not None

    def architecture(self) -> nn.Module:
        """A fresh instance of the model's architecture (untrained unless ``model`` was given),
        for the probes that run before the baseline exists."""
        if self.model is not None:
            return copy.deepcopy(self.model).eval()
        return self.build_model()

    def given_baseline(self) -> nn.Module:
        """The trained model as the user handed it in."""
        if self.model is not None:
            return copy.deepcopy(self.model).cpu().eval()
        model = self.build_model()
        try:
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as exc:
            why = " ".join(str(exc).split())[:200]
            raise ConfigError(f"cannot load the checkpoint {str(self.weights)!r} into "
                              f"{type(model).__name__} ({type(exc).__name__}: {why}); "
                              "save it with torch.save(model.state_dict(), path)") from exc
        return model.eval()

    def drop_interval(self, base_outputs: np.ndarray, outputs: np.ndarray) -> tuple[float, float]:
        """One-sided ``drop_confidence`` bounds (lower, upper) of the validation drop, by
        paired bootstrap; ``upper`` is what feasibility is decided on.

        Pairing (same resampled examples for both models) is what makes it tight: two models
        that agree on every example have a zero-width interval however small the split is.
        """
        level = self.drop_confidence or 0.9
        rng = np.random.default_rng(0)
        y, n = self.val.y, len(self.val)
        drops = []
        for _ in range(400):
            idx = rng.integers(0, n, n)
            try:
                drops.append(self.metric.drop(self.metric(base_outputs[idx], y[idx]),
                                              self.metric(outputs[idx], y[idx])))
            except ValueError:  # a resample with one class only (AUC undefined): skip it
                continue
        if not drops:
            d = self.metric.drop(self.metric(base_outputs, y), self.metric(outputs, y))
            return d, d
        lo, hi = np.quantile(drops, [1 - level, level])
        return float(lo), float(hi)

    @property
    def example_input(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.val.x[:1]))

    def content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(self.name.encode())
        for split in (self.train, self.val, self.test):
            h.update(np.ascontiguousarray(split.x).tobytes())
            h.update(np.ascontiguousarray(split.y).tobytes())
        model = self.architecture() if not self.trained else self.given_baseline()
        h.update(repr(model).encode())
        if self.trained:  # the given weights are the baseline: hash them, not a training recipe
            for name, tensor in model.state_dict().items():
                h.update(name.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(self.train_settings).encode())
        h.update(torch.__version__.encode())
        h.update(BASELINE_RECIPE.encode())
        return h.hexdigest()[:16]

    def baseline(self, cache_dir: Path | None = None, log: Callable[[str], None] = print) -> nn.Module:
        """The trained FP32 model, from the cache when it exists."""
        from petra.compression.training import predict, train_baseline
        from petra.models.checks import check_baseline, warn_if_chance

        if self.trained:
            model = self.given_baseline()
            val = check_baseline(self, model)
            log(f"baseline: the given trained model, not retrained ({self.metric.name} val {val:.2f})")
            warn_if_chance(self, model, log)
            return model
        cache_dir = Path(cache_dir or default_cache_dir()) / "baselines"
        path = cache_dir / f"{self.name}-{self.content_hash()}.pt"
        # the initial weights come from the global generator: seeded, a baseline does not depend
        # on what ran before it in the process (a width-4 CNN once trained to chance that way)
        torch.manual_seed(self.train_settings.seed)
        model = self.build_model()
        if path.exists():
            try:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as exc:  # a truncated or foreign file: train again, overwrite it
                log(f"baseline: cached weights {path} unreadable ({type(exc).__name__}); retraining")
                model = self.build_model()
            else:
                log(f"baseline: loaded cached weights {path}")
                check_baseline(self, model)
                return model.eval()
        log(f"baseline: training {self.name} to convergence (cached at {path})")
        t0 = time.monotonic()
        try:
            report = train_baseline(model, self)
        except Exception as exc:
            check_baseline(self, model)  # names the user's model or metric when it is the cause
            if isinstance(exc, FloatingPointError):
                raise ConfigError(
                    f"training the FP32 baseline of {self.name!r} diverged ({exc}); lower its "
                    "train_settings lr or check the model's loss") from exc
            raise
        val = check_baseline(self, model)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two processes may train the same baseline
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
        summary = {"task": self.name, "metric": self.metric.name, "epochs_run": report.epochs_run,
                   "best_epoch": report.best_epoch, "train_s": time.monotonic() - t0,
                   "val": val,
                   "test": self.metric(predict(model, self.test.x), self.test.y),
                   "reference": self.reference}
        path.with_suffix(".json").write_text(json.dumps(summary, indent=2))
        log(f"baseline: {self.metric.name} val {summary['val']:.2f} test {summary['test']:.2f} "
            f"after {report.epochs_run} epochs ({summary['train_s']:.0f}s)")
        warn_if_chance(self, model, log)
        return model.eval()

    def baseline_summary(self, cache_dir: Path | None = None) -> dict | None:
        """The cached baseline's metric and training record, or None before it is trained."""
        cache_dir = Path(cache_dir or default_cache_dir()) / "baselines"
        path = cache_dir / f"{self.name}-{self.content_hash()}.json"
        return json.loads(path.read_text()) if path.is_file() else None


def default_cache_dir() -> Path:
    return Path(os.environ.get("PETRA_CACHE_DIR", Path.home() / ".cache" / "petra"))


UCR_SETS = ("ArrowHead", "OSULeaf", "ACSF1", "BasicMotions", "GunPoint", "ItalyPowerDemand")


def _builtin_tasks() -> dict[str, Callable[[], Task]]:
    """Name -> factory. Factories load their data only when called (``petra models`` lists
    names without touching a dataset that is not installed)."""
    from functools import partial

    from petra.models import cdnow, digits, fashion_mnist, mobilenet, ucr

    tasks: dict[str, Callable[[], Task]] = {
        "digits": digits.digits_task,
        "fashion-mnist": fashion_mnist.fashion_mnist_task,
        "mobilenetv2-fashion": mobilenet.mobilenet_fashion_task,
        "cdnow": cdnow.cdnow_task,
    }
    for name in UCR_SETS:
        tasks[f"ucr-{name}"] = partial(ucr.ucr_task, name)
    return tasks


def task_names() -> list[str]:
    return sorted(_builtin_tasks())


def _load_factory(spec: str) -> Callable[[], object]:
    """``package.module:function`` or ``path/to/file.py:function``."""
    import importlib.util

    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ConfigError(f"no such task file {target!r}; give 'path/to/file.py:make_task'")
            mod_name = f"petra_user_task_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        return getattr(module, attr)
    except ConfigError:
        raise
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"cannot load task {spec!r} ({exc}); give 'module:function' or 'file.py:function'"
        ) from None
    except Exception as exc:  # the user's module raised while importing
        raise ConfigError(
            f"importing {target!r} raised {type(exc).__name__}: {exc}; fix that module"
        ) from None


def get_task(name: str) -> Task:
    """A built-in task by name, or a user's task from ``"module:function"`` / ``"file.py:function"``."""
    builtin = _builtin_tasks()
    if name in builtin:
        return builtin[name]()
    if ":" in name:
        factory = _load_factory(name)
        try:
            task = factory()
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{name!r} raised {type(exc).__name__}: {exc}; fix the task factory") from None
        if not isinstance(task, Task):
            raise ConfigError(f"{name!r} returned {type(task).__name__}, expected a petra Task "
                              "(return petra.models.Task(...))")
        return task
    raise ConfigError(
        f"unknown task {name!r}; choose one of {', '.join(task_names())} or give 'module:function'"
    )
