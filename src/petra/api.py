"""``petra.optimize``: the Python entry, in the convention of the field (``nncf.quantize(model,
dataset)``): a trained model and its data in, the study's results out.

The model is the FP32 baseline as given: it is never retrained, and every ratio and drop is
against it, measured on the target runtime in the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from petra.errors import ConfigError


def as_metric(metric: Any, higher_is_better: bool = True):
    """A ``Metric``, a callable ``(outputs, targets) -> float``, or None (top-1 accuracy, %)."""
    from petra.models.base import ACCURACY, Metric

    if metric is None:
        return ACCURACY
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return Metric(getattr(metric, "__name__", "metric"), metric, higher_is_better)
    raise ConfigError(f"metric must be a petra Metric or a function (outputs, targets) -> float, "
                      f"got {type(metric).__name__}")


def optimize(model=None, *, train=None, val=None, test=None, metric=None, higher_is_better: bool = True,
             loss=None, name: str = "my-model", task=None, log: Callable[[str], None] = print,
             **options) -> dict:
    """Compress ``model`` (a trained ``nn.Module``) for the runtime in ``options`` and return
    the results dict (the Pareto front, the best artifact, every trial).

    ``train``/``val``/``test`` are DataLoaders of ``(inputs, targets)`` batches or
    ``(inputs, targets)`` arrays: train feeds calibration and fine-tuning, validation decides
    feasibility and selection, test is reported only. ``loss(outputs, targets)`` is what
    fine-tuning minimises (cross-entropy when None; ``torch.nn.functional.mse_loss`` for a
    regression). ``options`` are the CLI's flags
    (``runtime="openvino"``, ``time_budget=600``, ``max_drop=0.5``, ``output="runs/x"``, ...).
    Without ``model``, ``task`` names a built-in task or ``"file.py:make_task"``, or is a Task.
    """
    from petra.config import load_config
    from petra.models.base import Task
    from petra.optimizer.study import run_study

    task_object = options.pop("task_object", None)
    if model is not None:
        task_object = Task(name=name, model=model, train=train, val=val, test=test,
                           metric=as_metric(metric, higher_is_better), loss=loss)
    elif isinstance(task, Task):
        task_object = task
    elif task is not None:
        options["task"] = task
    if task_object is not None:
        options["task"] = task_object.name
    from petra.optimizer.events import LogEvents
    from petra.tracking import with_mlflow

    cfg = load_config(**options)
    return run_study(cfg, task=task_object, progress=with_mlflow(LogEvents(log), cfg.mlflow_uri))
