"""The one probe every pass's ``applies`` runs: change a copy of the model, run it, export it.

Why a real probe and not a type check: whether torch-pruning can shrink a model, whether QAT
can trace it, whether the exporter takes the result, is decided by the library on the model in
hand (torch-pruning's LSTM pruner asserts on two layers; it silently changes nothing on a GRU).
A probe at a representative setting finds that out in seconds, before any training.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from petra.exporters.onnx_export import export_onnx


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:200]}"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def try_on_copy(model: nn.Module, example: torch.Tensor, change: Callable[[nn.Module], nn.Module | None],
                *, what: str, export: Callable | None = None, must_shrink: bool = False) -> str | None:
    """None when ``change`` works on a copy of ``model`` (forward gives the same output shape and
    the result exports), else one line saying what failed."""
    original = copy.deepcopy(model).eval()
    with torch.no_grad():
        expected = original(example)
    try:
        changed = change(original) or original
        changed.eval()
        with torch.no_grad():
            out = changed(example)
    except Exception as exc:
        return f"{what} failed on this model ({one_line(exc)})"
    if getattr(out, "shape", None) != getattr(expected, "shape", None):
        return f"{what} changed the output shape ({tuple(expected.shape)} -> {tuple(out.shape)})"
    if must_shrink and count_params(changed) >= count_params(model):
        return f"{what} removed no parameter from this model (no layer it can shrink)"
    with tempfile.TemporaryDirectory(prefix="petra-probe-") as tmp:
        try:
            (export or export_onnx)(changed, example, Path(tmp) / "probe.onnx")
        except Exception as exc:
            return f"the model after {what} does not export ({one_line(exc)})"
    return None
