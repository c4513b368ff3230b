"""petra: hardware-in-the-loop compression search for PyTorch models.

Evolves pruning / fine-tuning / quantization / runtime configurations with NSGA-II and scores
every candidate by what it measures on the target runtime.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "optimize"]


def optimize(*args, **kwargs):
    """See ``petra.api.optimize``: a trained model and its data in, the results dict out."""
    from petra.api import optimize as run

    return run(*args, **kwargs)
