"""Executors: where candidates are trained and measured (this process, local training
processes, or a Ray cluster whose labelled nodes are the target hardware)."""

from __future__ import annotations

from petra.executors.base import Executor, Job, Outcome, failure_reason
from petra.executors.local import ParallelExecutor, SequentialExecutor

__all__ = ["Executor", "Job", "Outcome", "ParallelExecutor", "SequentialExecutor", "failure_reason",
           "make_executor"]


def make_executor(cfg) -> Executor:
    """The executor a ``RunConfig`` asks for (``executor``, ``workers``, ``ray_*``)."""
    if cfg.executor == "ray":
        from petra.executors.ray_cluster import RayExecutor

        return RayExecutor(address=cfg.ray_address, target=cfg.ray_target,
                           train_device=cfg.train_device)
    if cfg.workers > 1 or cfg.trial_timeout is not None or cfg.trial_memory_mb is not None:
        return ParallelExecutor(cfg.workers, timeout_s=cfg.trial_timeout, memory_mb=cfg.trial_memory_mb)
    return SequentialExecutor()
