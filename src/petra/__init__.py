"""petra: hardware-in-the-loop compression search for PyTorch models.

Evolves pruning / fine-tuning / quantization / runtime configurations with NSGA-II and scores
every candidate by what it measures on the target runtime.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "optimize"]


def optimize(**kwargs):
    """Run a study from keyword arguments (the CLI's flags); returns the results dict."""
    from petra.config import load_config
    from petra.optimizer.study import run_study

    task = kwargs.pop("task_object", None)
    log = kwargs.pop("log", print)
    return run_study(load_config(**kwargs), task=task, log=log)
