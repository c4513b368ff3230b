"""The search's view of candidates: the config and space derived from the passes' genes.

Kept as the optimizer's import point; the declarations live with their passes and backends
(see ``petra.candidate``).
"""

from petra.candidate import GENES, TORCH_GENES, CandidateConfig, SearchSpace
from petra.compression.regularizers import Regularizer
from petra.runtimes import OnnxRuntime, OpenVinoRuntime

ORT, OPENVINO = OnnxRuntime.name, OpenVinoRuntime.name

__all__ = ["GENES", "OPENVINO", "ORT", "TORCH_GENES", "CandidateConfig", "Regularizer", "SearchSpace"]
