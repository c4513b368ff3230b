"""Structured channel pruning with torch-pruning: channels are removed for real.

``torch.nn.utils.prune`` only masks weights and buys no speed; torch-pruning builds the
dependency graph, so residual adds, BatchNorms and the following layers are cut consistently.
The classifier's output layer is never pruned (its width is the number of classes).
"""

from __future__ import annotations

from enum import Enum

import torch
import torch_pruning as tp
from torch import nn

from petra.errors import PruneError


class Importance(str, Enum):
    L1 = "l1"
    L2 = "l2"
    BN_SCALE = "bn_scale"
    TAYLOR = "taylor"


def _importance(kind: Importance):
    if kind is Importance.L1:
        return tp.importance.MagnitudeImportance(p=1)
    if kind is Importance.L2:
        return tp.importance.MagnitudeImportance(p=2)
    if kind is Importance.BN_SCALE:
        return tp.importance.BNScaleImportance()
    return tp.importance.TaylorImportance()


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Layers whose outputs are the model's outputs: their widths are fixed by the task."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
    return linears[-1:]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune(
    model: nn.Module,
    example: torch.Tensor,
    *,
    ratio: float,
    importance: Importance,
    round_to: int,
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> nn.Module:
    """Remove ``ratio`` of the prunable channels globally, in place; returns the model.

    Taylor importance needs gradients: ``calibration`` (inputs, targets) provides one batch
    whose cross-entropy gradient scores the channels.
    """
    if not 0.0 <= ratio < 1.0:
        raise PruneError(f"pruning ratio must be in [0, 1), got {ratio}")
    if ratio == 0.0:
        return model
    model.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=_importance(importance),
            global_pruning=True,
            pruning_ratio=ratio,
            max_pruning_ratio=0.95,
            ignored_layers=output_layers(model, example),
            round_to=round_to if round_to > 1 else None,
        )
        if importance is Importance.TAYLOR:
            if calibration is None:
                raise PruneError("Taylor importance needs a calibration batch")
            model.zero_grad()
            x, y = calibration
            nn.functional.cross_entropy(model(x), y).backward()
        pruner.step()
        model.zero_grad(set_to_none=True)
    except PruneError:
        raise
    except Exception as exc:  # torch-pruning raises plain errors on graphs it cannot trace
        raise PruneError(f"torch-pruning failed: {type(exc).__name__}: {exc}") from exc
    return model
