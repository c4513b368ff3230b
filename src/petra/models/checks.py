"""What the FP32 baseline must satisfy before a search starts.

Every candidate is scored against the baseline's validation outputs with the task's metric, so
a model that cannot run on the validation inputs, outputs NaN or Inf there, or a metric that
raises on those outputs would fail every trial late and all alike. ``check_baseline`` finds it
once, before the search, and says what to fix (the user's model or the user's metric).
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from petra.errors import ConfigError


def _shape(a) -> str:
    return "x".join(str(d) for d in np.shape(a)) or "scalar"


def check_baseline(task, model: nn.Module) -> float:
    """The baseline's validation metric; ``ConfigError`` (chained to the user's exception, so the
    CLI can log its traceback) when the model or the metric cannot serve as the reference."""
    from petra.compression.training import predict

    x, y = task.val.x, task.val.y
    try:
        outputs = predict(model, x)
    except Exception as exc:
        raise ConfigError(
            f"the model of task {task.name!r} raised {type(exc).__name__} on its validation inputs "
            f"({_shape(x)}): {exc}; fix the model's forward or the data") from exc
    bad = int(np.size(outputs) - np.isfinite(outputs).sum())
    if bad:
        raise ConfigError(
            f"the model of task {task.name!r} outputs NaN or Inf on its validation inputs ({bad} of "
            f"{np.size(outputs)} values); fix the model or its weights before a search")
    try:
        value = task.metric(outputs, y)
    except Exception as exc:
        raise ConfigError(
            f"the metric {task.metric.name!r} of task {task.name!r} raised {type(exc).__name__}: "
            f"{exc} (on the baseline's validation outputs {_shape(outputs)} and targets "
            f"{_shape(y)}); fix the metric function") from exc
    if not math.isfinite(value):
        raise ConfigError(
            f"the metric {task.metric.name!r} of task {task.name!r} is {value} on the baseline's "
            "validation outputs; it must return a finite number")
    return value


def chance_level(task) -> float | None:
    """The metric of always predicting the most frequent validation class, for a classifier
    (integer targets); None where there is no such thing (regression)."""
    y = np.asarray(task.val.y)
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) == 0:
        return None
    classes = int(y.max()) + 1
    outputs = np.zeros((len(y), classes), dtype=np.float32)
    outputs[:, np.bincount(y).argmax()] = 1.0
    try:
        return float(task.metric(outputs, y))
    except Exception:  # a metric that wants other outputs (scores of one class, say)
        return None


def warn_if_chance(task, model: nn.Module, log) -> None:
    """A baseline no better than predicting the majority class makes every "drop" meaningless:
    say so before the search spends its budget."""
    from petra.compression.training import predict

    chance = chance_level(task)
    if chance is None:
        return
    value = task.metric(predict(model, task.val.x), task.val.y)
    if abs(value - chance) <= 1.0:
        log(f"WARNING: the baseline's validation {task.metric.name} ({value:.2f}) is within 1 point of "
            f"chance level ({chance:.2f}, always predicting the majority class); train it further or "
            "check its data before trusting any compression figure")
