"""Search: genes and space, NSGA-II (the one pygad module), trials, Pareto front, the study.

The names below load on first use (PEP 562): importing ``petra.optimizer.prefer`` for the CLI
must not import torch through the genome."""

from importlib import import_module

_WHERE = {
    "CandidateConfig": "genome", "Regularizer": "genome", "SearchSpace": "genome",
    "Prefer": "prefer", "Trial": "records", "TrialState": "records", "pareto_front": "records",
    "pick_best": "records",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'petra.optimizer' has no attribute {name!r}")
    return getattr(import_module(f"petra.optimizer.{_WHERE[name]}"), name)
