"""Low-rank (SVD) factorization of Linear and Conv2d layers, trained so that low rank pays.

A weight ``W`` (out x in*k*k) is rewritten as ``U diag(s) V^T``. During the fine-tune each layer
keeps its full-rank factors (``SVDLayer``) and the loss adds the two penalties of SVD training
(Yang et al., CVPR-W 2020, used by the PETRA paper's code): a Hoyer sparsity penalty
``||s||_1 / ||s||_2`` that concentrates the energy in few singular values, and an orthogonality
penalty ``||U^T U - I||_F^2 + ||V^T V - I||_F^2`` that keeps ``s`` meaningful as singular
values. Only then is each layer cut to its top-``r`` singular values, so the cut drops little
energy. The result is two thinner plain layers — Linear(in, r) -> Linear(r, out), or a kxk conv
to ``r`` channels then a 1x1 conv — so the model exports to ONNX like any other.

A layer is factorized only where ``r * (in*k*k + out)`` is clearly below ``in*k*k * out``:
parameters and MACs per output pixel shrink by the same ratio, and a factorization that saves
nothing only adds a layer (and latency) to the graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from petra.compression.probe import try_on_copy
from petra.compression.regularizers import Loss
from petra.genes import Gene, Pass, Stage

#: factorize only where the two thin layers cost at most this fraction of the original
MAX_COST_RATIO = 0.8


class SVDLayer(nn.Module):
    """Full-rank ``U diag(s) V^T`` form of a Linear or (groups=1) Conv2d, trained in place of it."""

    def __init__(self, layer: nn.Linear | nn.Conv2d) -> None:
        super().__init__()
        self.conv = isinstance(layer, nn.Conv2d)
        w = layer.weight.detach()
        self.shape = tuple(w.shape)
        u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
        self.u = nn.Parameter(u.contiguous())
        self.s = nn.Parameter(s.contiguous())
        self.v = nn.Parameter(vh.T.contiguous())
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        if self.conv:
            self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation

    def weight(self) -> torch.Tensor:
        return ((self.u * self.s) @ self.v.T).reshape(self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:
            return F.conv2d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)
        return F.linear(x, self.weight(), self.bias)

    def hoyer(self) -> torch.Tensor:
        return self.s.abs().sum() / self.s.norm().clamp_min(1e-12)

    def orthogonality(self) -> torch.Tensor:
        r = self.s.numel()
        eye = torch.eye(r, dtype=self.u.dtype, device=self.u.device)
        return ((self.u.T @ self.u - eye).pow(2).sum() + (self.v.T @ self.v - eye).pow(2).sum()) / r**2

    def truncated(self, rank: int) -> nn.Sequential:
        """Two plain layers keeping the ``rank`` largest singular values (s folded into U)."""
        keep = self.s.detach().abs().argsort(descending=True)[:rank]
        first_w = self.v.detach()[:, keep].T  # (rank, in*k*k)
        second_w = (self.u.detach()[:, keep] * self.s.detach()[keep])  # (out, rank)
        out = self.shape[0]
        has_bias = self.bias is not None
        if self.conv:
            cin, kh, kw = self.shape[1:]
            first = nn.Conv2d(cin, rank, (kh, kw), self.stride, self.padding, self.dilation, bias=False)
            second = nn.Conv2d(rank, out, 1, bias=has_bias)
            first.weight.data.copy_(first_w.reshape(rank, cin, kh, kw))
            second.weight.data.copy_(second_w.reshape(out, rank, 1, 1))
        else:
            first = nn.Linear(self.shape[1], rank, bias=False)
            second = nn.Linear(rank, out, bias=has_bias)
            first.weight.data.copy_(first_w)
            second.weight.data.copy_(second_w)
        if has_bias:
            second.bias.data.copy_(self.bias.detach())
        return nn.Sequential(first, second)


def rank_for(shape: tuple[int, ...], ratio: float) -> int | None:
    """The kept rank for a weight of ``shape``, or None where factorizing would not pay."""
    out, fan_in = shape[0], math.prod(shape[1:])
    full = min(out, fan_in)
    rank = max(1, math.ceil(ratio * full))
    if rank * (fan_in + out) > MAX_COST_RATIO * fan_in * out:
        return None
    return rank


def _eligible(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def factorize(model: nn.Module, ratio: float) -> list[str]:
    """Swap every layer where rank ``ratio`` pays for its ``SVDLayer``, in place; returns names.

    The swap is exact (full rank), so accuracy is unchanged until ``truncate``.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"rank ratio must be in (0, 1), got {ratio}")
    names = [n for n, m in model.named_modules()
             if n and _eligible(m) and rank_for(tuple(m.weight.shape), ratio) is not None]
    for n in names:
        _replace(model, n, SVDLayer(model.get_submodule(n)))
    return names


def truncate(model: nn.Module, ratio: float) -> nn.Module:
    """Cut every ``SVDLayer`` to rank ``ratio`` as two plain layers, in place; returns the model."""
    for n, m in list(model.named_modules()):
        if isinstance(m, SVDLayer):
            rank = rank_for(m.shape, ratio)
            if rank is not None:
                _replace(model, n, m.truncated(rank))
    return model


def low_rank(model: nn.Module, ratio: float) -> nn.Module:
    """Plain truncated SVD, no training: ``factorize`` then ``truncate``."""
    factorize(model, ratio)
    return truncate(model, ratio)


def svd_layers(model: nn.Module) -> list[SVDLayer]:
    return [m for m in model.modules() if isinstance(m, SVDLayer)]


class LowRankRegularizer:
    """base loss + hoyer * mean Hoyer(s) + ortho * mean orthogonality(U, V) over SVD layers.

    Means, not sums, so the weights mean the same on a 3-layer and a 50-layer model.
    """

    def __init__(self, base: Loss, hoyer: float = 1.0, ortho: float = 1.0) -> None:
        if hoyer < 0 or ortho < 0:
            raise ValueError(f"regularizer weights must be >= 0, got hoyer={hoyer}, ortho={ortho}")
        self.base, self.hoyer, self.ortho = base, hoyer, ortho

    def penalties(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        layers = svd_layers(model)
        if not layers:
            zero = torch.zeros(())
            return zero, zero
        return (torch.stack([m.hoyer() for m in layers]).mean(),
                torch.stack([m.orthogonality() for m in layers]).mean())

    def __call__(self, model, x, y, logits):
        h, o = self.penalties(model)
        return self.base(model, x, y, logits) + self.hoyer * h + self.ortho * o


class LowRank(Pass):
    """SVD factorization of Linear/Conv2d layers, trained with the low-rank penalties."""

    name = "low_rank"
    genes = (
        Gene("lowrank_ratio", (0.0, 0.25, 0.5), 0.0, Stage.TORCH, keyed_at_default=False,
             valid=lambda r: 0.0 <= r < 1.0, rule="must be in [0, 1) (0 = off)",
             help="SVD rank kept per factorized layer (0 = off)"),
    )

    def applies(self, model, example, backend) -> str | None:
        if not any(_eligible(m) and rank_for(tuple(m.weight.shape), 0.5) is not None
                   for m in model.modules()):
            return "no Linear/Conv2d layer where a rank-50% factorization saves parameters"
        return try_on_copy(model, example, lambda m: low_rank(m, 0.5), what="low-rank factorization")
