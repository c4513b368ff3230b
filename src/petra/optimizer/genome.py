"""The search's view of candidates: the config and space derived from the passes' genes.

Kept as the optimizer's import point; the declarations live with their passes and backends
(see ``petra.candidate``).
"""

from petra.candidate import GENES, TORCH_GENES, CandidateConfig, SearchSpace
from petra.compression.regularizers import Regularizer
from petra.runtimes import OnnxRuntime, OpenVinoRuntime

ORT, OPENVINO = OnnxRuntime.name, OpenVinoRuntime.name


def graft(space: SearchSpace, genome: tuple[int, ...], config: CandidateConfig,
          genes: tuple[str, ...]) -> tuple[int, ...]:
    """``genome`` with the indices of ``genes`` taken from ``config``'s encoding, the others
    untouched: decoding canonicalises, so re-encoding a whole config would also reset the genes
    the genome does not express, which its children may."""
    encoded = space.encode(config)
    return tuple(encoded[i] if n in genes else g
                 for i, (n, g) in enumerate(zip(space.gene_names, genome)))


__all__ = ["GENES", "OPENVINO", "ORT", "TORCH_GENES", "CandidateConfig", "Regularizer", "SearchSpace",
           "graft"]
