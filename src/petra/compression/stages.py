"""A model's prunable structure cut into depth stages, each with a pruning ratio of its own.

Why: one global ratio says nothing a person would not try first. Searches that beat uniform
pruning give each depth its own ratio, measured on the hardware (AMC, NetAdapt): early layers
run on large feature maps and cost the most time per channel, late layers hold most of the
weights, and their sensitivities differ. Up to ``MAX_STAGES`` contiguous stages keep the genome
small enough for a few generations to explore.

The units a stage groups depend on the structure: torch-pruning's coupled channel groups (a
residual stream is one group) for convolutional and MLP models, encoder blocks for attention
models, recurrent layers for GRU/LSTM models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from petra.compression import attention, recurrent

MAX_STAGES = 4
#: a stage's ratio gene: ``None`` inherits the global ``prune_ratio``
STAGE_CHOICES: tuple = (None, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def chunks(items: Sequence, k: int = MAX_STAGES) -> list[list]:
    """``items`` in order, cut into ``min(k, len(items))`` contiguous runs of near-equal length."""
    n = min(k, len(items))
    if n == 0:
        return []
    bounds = [round(i * len(items) / n) for i in range(n + 1)]
    return [list(items[bounds[i]:bounds[i + 1]]) for i in range(n)]


def channel_groups(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module]
                   ) -> list[tuple[nn.Module, ...]]:
    """Every coupled channel group torch-pruning would prune, as the layers whose *outputs* it
    cuts, ordered by the group's first layer: a residual stream starts at the stem, however
    late the layer torch-pruning roots it at (so each group lands in the stage of its depth,
    and torch-pruning finds whichever member it roots the group at in the stage's scope)."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    order = {m: i for i, m in enumerate(model.modules())}
    kinds = (nn.Conv1d, nn.Conv2d, nn.Linear)
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=list(kinds)):
        members = {dep.target.module for dep, _ in group
                   if isinstance(dep.target.module, kinds) and "out_channels" in dep.handler.__name__}
        members = tuple(sorted((m for m in members if m in order and m not in ignored),
                               key=order.__getitem__))
        if members:
            groups.append(members)
    return sorted(groups, key=lambda g: order[g[0]])


def units(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module]) -> list:
    """What one stage groups, in depth order: encoder blocks, recurrent layers or channel groups."""
    if attention.has_attention(model):
        return attention.attention_blocks(model)
    if recurrent.has_recurrent(model):
        return recurrent.recurrent_layers(model)
    return channel_groups(model, example, ignored)


def stage_count(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module]) -> int:
    return len(chunks(units(model, example, ignored)))


def effective(global_ratio: float, stage_ratios: Sequence[float | None]) -> tuple[float, ...]:
    """Each stage's ratio: its own where set, else the global one."""
    return tuple(global_ratio if r is None else r for r in stage_ratios)


def per_unit(ratios: Sequence[float], n_units: int) -> list[float]:
    """One ratio per unit (block, layer or group) from one per stage, over the same chunks."""
    out: list[float] = []
    for ratio, chunk in zip(ratios, chunks(range(n_units))):
        out += [ratio] * len(chunk)
    return out
