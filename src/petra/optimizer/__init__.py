"""Search: genes and space, NSGA-II (the one pygad module), trials, Pareto front, the study."""

from petra.optimizer.genome import CandidateConfig, Regularizer, SearchSpace
from petra.optimizer.records import Prefer, Trial, TrialState, pareto_front, pick_best

__all__ = ["CandidateConfig", "Prefer", "Regularizer", "SearchSpace", "Trial", "TrialState",
           "pareto_front", "pick_best"]
