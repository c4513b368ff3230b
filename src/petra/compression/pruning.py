"""Structured channel pruning with torch-pruning: channels are removed for real.

``torch.nn.utils.prune`` only masks weights and buys no speed; torch-pruning builds the
dependency graph, so residual adds, BatchNorms and the following layers are cut consistently.
The classifier's output layer is never pruned (its width is the number of classes).
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from petra.compression.attention import has_attention, prune_attention
from petra.compression.probe import count_params, try_on_copy
from petra.compression.recurrent import has_recurrent, prune_recurrent_units
from petra.errors import PruneError
from petra.genes import Gene, Pass, Stage

__all__ = ["Importance", "StructuredPruning", "count_params", "prune", "recalibrate_bn"]


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


def recalibrate_bn(model: nn.Module, x: np.ndarray, *, samples: int = 512, batch_size: int = 64) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``x`` (no gradient step), in place.

    Why: removing channels changes what reaches each following layer, so the running means and
    variances the BatchNorms kept from the unpruned model no longer match, and a pruned model
    scores at chance however good its remaining weights are. Measured on digits (ResNet, L2):
    30% pruning went from 13.65% to 98.33% validation accuracy with this alone, 50% from 9.75%
    to 93.59% (EagleEye's adaptive BatchNorm, ECCV 2020). It is what makes a short fine-tune,
    and the cheap pass of successive halving, a fair estimate of a pruned candidate.
    Only the BatchNorms run in training mode: dropout and the rest stay as in inference.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(x) == 0:
        return model
    model.eval()
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over all batches, not the last few
        bn.train()
    try:
        with torch.no_grad():
            for i in range(0, min(len(x), samples), batch_size):
                model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])))
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.eval()
    return model


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _pruned(ratio) -> bool:
    return ratio > 0


class StructuredPruning(Pass):
    """Channels (and recurrent hidden units) removed for real, with consistent dependents."""

    name = "structured_pruning"
    genes = (
        Gene("prune_ratio", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), 0.0, Stage.TORCH,
             valid=lambda r: 0.0 <= r <= 0.8, rule="must be in [0, 0.8]",
             help="share of prunable channels / hidden units removed"),
        Gene("importance", tuple(Importance), Importance.L2, Stage.TORCH,
             when=lambda c: _pruned(c.prune_ratio), help="how channels are ranked"),
        Gene("round_to", (1, 4, 8, 16), 8, Stage.TORCH, when=lambda c: _pruned(c.prune_ratio),
             help="kept widths are multiples of this (SIMD-friendly)"),
    )

    def applies(self, model, example, backend) -> str | None:
        return try_on_copy(model, example, lambda m: self.prune(m, example, ratio=0.5, round_to=1),
                           what="pruning 50% of the channels", must_shrink=True)

    def narrow(self, model) -> dict[str, tuple[tuple, str]]:
        if has_attention(model):
            return {"importance": ((Importance.L1, Importance.L2),
                                   "head and FFN pruning ranks heads and neurons by L1/L2 magnitude")}
        if has_recurrent(model):
            return {"importance": ((Importance.L1, Importance.L2),
                                   "hidden-unit pruning of recurrent layers ranks units by L1/L2 magnitude")}
        if not _has_batchnorm(model):
            return {"importance": (tuple(i for i in Importance if i is not Importance.BN_SCALE),
                                   "bn_scale importance needs BatchNorm layers; the model has none")}
        return {}

    @staticmethod
    def prune(model: nn.Module, example: torch.Tensor, *, ratio: float,
              importance: Importance = Importance.L2, round_to: int = 8,
              calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Module:
        """torch-pruning leaves nn.GRU untouched, asserts on an LSTM of more than one layer and
        cannot change an attention layer's head count: recurrent models get hidden-unit pruning,
        transformer encoders head and FFN-neuron pruning."""
        if has_attention(model):
            return prune_attention(model, ratio=ratio, round_to=round_to,
                                   p=1 if importance is Importance.L1 else 2)
        if has_recurrent(model):
            return prune_recurrent_units(model, ratio=ratio, round_to=round_to,
                                         p=1 if importance is Importance.L1 else 2)
        return prune(model, example, ratio=ratio, importance=importance, round_to=round_to,
                     calibration=calibration)
