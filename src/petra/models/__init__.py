"""The task zoo: model factory + real data + metric, one file a domain."""

from petra.models.base import ACCURACY, Metric, Split, Task, TrainSettings, get_task, task_names

__all__ = ["ACCURACY", "Metric", "Split", "Task", "TrainSettings", "get_task", "task_names"]
