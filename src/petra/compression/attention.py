"""Structured pruning of transformer encoder layers: attention heads and FFN neurons.

Why not torch-pruning: it prunes ``nn.MultiheadAttention``'s embed_dim as one coupled channel
and never changes ``num_heads`` (its ``check()`` asserts divisibility: on petra's probe a
2-layer encoder failed with "`embed_dim` must divide evenly by `num_heads`"). Heads are the
unit that matters: each one owns ``head_dim`` rows of the q, k and v projections and
``head_dim`` columns of the output projection, and removing it leaves the layer's width (the
residual stream) intact, so nothing outside the layer changes.

``nn.MultiheadAttention`` cannot hold fewer heads than its width allows (its q projection is
square), so a pruned layer gets ``HeadPrunedAttention``: separate q/k/v ``nn.Linear`` layers
(E -> H'.d) and an output ``nn.Linear`` (H'.d -> E), numerically the original for the kept
heads. It sets the attributes ``nn.TransformerEncoderLayer``'s fast-path checks read so that
the layer takes its plain path, which both exporters handle. FFN neurons (``linear1`` rows,
``linear2`` columns) are pruned in place. Heads and neurons are ranked by the L2 (or L1) norm
of all the weights they own.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from petra.errors import PruneError


def encoder_layers(model: nn.Module) -> list[nn.TransformerEncoderLayer]:
    return [m for m in model.modules() if isinstance(m, nn.TransformerEncoderLayer)]


def has_attention(model: nn.Module) -> bool:
    return bool(encoder_layers(model))


def _keep(n: int, ratio: float, round_to: int = 1) -> int:
    step = max(1, round_to)
    keep = math.ceil(n * (1.0 - ratio) / step) * step
    return max(1, min(n, keep))


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, k).indices).values


class HeadPrunedAttention(nn.Module):
    """Self-attention with ``len(heads)`` of an ``nn.MultiheadAttention``'s heads."""

    def __init__(self, mha: nn.MultiheadAttention, heads: torch.Tensor) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
            raise PruneError("head pruning needs self-attention with one in_proj_weight "
                             "(kdim = vdim = embed_dim)")
        e, d = mha.embed_dim, mha.head_dim
        rows = torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads.tolist()])
        self.num_heads, self.head_dim, self.batch_first = len(heads), d, mha.batch_first
        self.dropout = mha.dropout
        bias = mha.in_proj_bias is not None
        self.q, self.k, self.v = (nn.Linear(e, len(rows), bias=bias) for _ in range(3))
        self.out = nn.Linear(len(rows), e, bias=mha.out_proj.bias is not None)
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(mha.in_proj_weight[i * e + rows])
                if bias:
                    lin.bias.copy_(mha.in_proj_bias[i * e + rows])
            self.out.weight.copy_(mha.out_proj.weight[:, rows])
            if self.out.bias is not None:
                self.out.bias.copy_(mha.out_proj.bias)
        # what nn.TransformerEncoder(Layer)'s fast-path checks read: they send it the plain path
        self.in_proj_weight = None
        self.in_proj_bias = None
        self._qkv_same_embed_dim = False

    def forward(self, query, key, value, attn_mask=None, key_padding_mask=None, need_weights=False,
                is_causal=False, average_attn_weights=True):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, t, s = query.shape[0], query.shape[1], key.shape[1]

        def heads(x: torch.Tensor, n: int) -> torch.Tensor:
            return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q(query), t), heads(self.k(key), s), heads(self.v(value), s)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        scores = scores + _additive(attn_mask, key_padding_mask, is_causal, t, s, scores)
        attn = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            attn = nn.functional.dropout(attn, self.dropout)
        out = self.out((attn @ v).transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _additive(attn_mask, key_padding_mask, is_causal: bool, t: int, s: int, like: torch.Tensor):
    """One float mask added to the scores (0 where attending, -inf where not)."""
    mask = torch.zeros((), dtype=like.dtype, device=like.device)
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(t, s, dtype=torch.bool, device=like.device).triu(1)
    for m, shape in ((attn_mask, None), (key_padding_mask, (-1, 1, 1, s))):
        if m is None:
            continue
        m = m.to(like.device)
        m = torch.zeros_like(m, dtype=like.dtype).masked_fill(m, float("-inf")) if m.dtype == torch.bool \
            else m.to(like.dtype)
        mask = mask + (m.view(shape) if shape else m)
    return mask


def _head_scores(mha: nn.MultiheadAttention, p: int) -> torch.Tensor:
    e, h, d = mha.embed_dim, mha.num_heads, mha.head_dim
    w = mha.in_proj_weight.detach().view(3, h, d, e).abs().pow(p).sum(dim=(0, 2, 3))
    return w + mha.out_proj.weight.detach().view(e, h, d).abs().pow(p).sum(dim=(0, 2))


def _prune_ffn(layer: nn.TransformerEncoderLayer, ratio: float, round_to: int, p: int) -> None:
    l1, l2 = layer.linear1, layer.linear2
    scores = l1.weight.detach().abs().pow(p).sum(1) + l2.weight.detach().abs().pow(p).sum(0)
    keep = _top(scores, _keep(l1.out_features, ratio, round_to))
    with torch.no_grad():
        l1.weight = nn.Parameter(l1.weight[keep].clone())
        if l1.bias is not None:
            l1.bias = nn.Parameter(l1.bias[keep].clone())
        l2.weight = nn.Parameter(l2.weight[:, keep].clone())
    l1.out_features = l2.in_features = len(keep)


def prune_attention(model: nn.Module, *, ratio: float, round_to: int = 8, p: int = 2) -> nn.Module:
    """Remove ``ratio`` of the heads and of the FFN neurons of every encoder layer, in place."""
    if not 0.0 <= ratio < 1.0:
        raise PruneError(f"pruning ratio must be in [0, 1), got {ratio}")
    layers = encoder_layers(model)
    if not layers:
        raise PruneError("attention pruning found no nn.TransformerEncoderLayer in the model")
    if ratio == 0.0:
        return model
    for layer in layers:
        mha = layer.self_attn
        if isinstance(mha, nn.MultiheadAttention):
            heads = _top(_head_scores(mha, p), _keep(mha.num_heads, ratio))
            if len(heads) < mha.num_heads:
                layer.self_attn = HeadPrunedAttention(mha, heads)
        _prune_ffn(layer, ratio, round_to, p)
    return model
