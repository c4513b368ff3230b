"""Structured pruning of attention blocks: attention heads and FFN neurons.

Why not torch-pruning: it prunes ``nn.MultiheadAttention``'s embed_dim as one coupled channel
and never changes ``num_heads`` (its ``check()`` asserts divisibility: on petra's probe a
2-layer encoder failed with "`embed_dim` must divide evenly by `num_heads`"). Heads are the
unit that matters: each one owns ``head_dim`` rows of the q, k and v projections and
``head_dim`` columns of the output projection, and removing it leaves the layer's width (the
residual stream) intact, so nothing outside the layer changes.

Two kinds of attention block are recognised (``attention_blocks``):

- ``nn.TransformerEncoderLayer``. ``nn.MultiheadAttention`` cannot hold fewer heads than its
  width allows (its q projection is square), so a pruned layer gets ``HeadPrunedAttention``:
  separate q/k/v ``nn.Linear`` layers (E -> H'.d) and an output ``nn.Linear`` (H'.d -> E),
  numerically the original for the kept heads. It sets the attributes
  ``nn.TransformerEncoderLayer``'s fast-path checks read so that the layer takes its plain
  path, which both exporters handle. Its FFN is ``linear1``/``linear2``.
- Self-attention as users write it: separate q/k/v ``nn.Linear`` children (``q/k/v``,
  ``query/key/value`` or ``q_proj/k_proj/v_proj``), an output ``nn.Linear`` (``out``, ``o``,
  ``out_proj`` or ``o_proj``) and an integer head count (``num_heads``, ``n_heads``, ``heads``
  or ``nhead``). Its Linears are sliced in place and the head count attribute lowered, so a
  forward that reshapes with it (``view(b, t, self.num_heads, self.head_dim)``) still runs;
  one that reshapes with a width stored elsewhere does not, and the pruning pass's probe
  reports it. Its FFN is a 2-layer MLP E -> n -> E of the module itself or, failing that, of
  its parent (``linear1/linear2``, ``fc1/fc2``, or an ``nn.Sequential`` Linear, parameter-free
  layers, Linear named ``ffn``, ``mlp`` or ``feed_forward``); without one only heads go.
  ``HeadPrunedAttention`` is of this kind, so a pruned encoder layer can be pruned again.

FFN neurons (first Linear's rows, second Linear's columns) are pruned in place. Heads and
neurons are ranked by the L2 (or L1) norm of all the weights they own. Modules of neither kind
are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from petra.errors import PruneError

_QKV_NAMES = (("q", "k", "v"), ("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))
_OUT_NAMES = ("out", "o", "out_proj", "o_proj")
_HEAD_NAMES = ("num_heads", "n_heads", "heads", "nhead")
_MLP_PAIRS = (("linear1", "linear2"), ("fc1", "fc2"))
_MLP_SEQUENTIALS = ("ffn", "mlp", "feed_forward")
#: the largest per-block ratio: a block keeps at least one head and one neuron anyway
MAX_LAYER_RATIO = 0.95


@dataclass(frozen=True)
class _QKV:
    """A recognised q/k/v self-attention: the Linears a head owns a slice of, and its counts."""

    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    out: nn.Linear
    head_attrs: tuple[str, ...]
    heads: int
    head_dim: int


def _linear(module: nn.Module, name: str) -> nn.Linear | None:
    child = module._modules.get(name)
    return child if isinstance(child, nn.Linear) else None


def _count(module: nn.Module, name: str) -> int | None:
    value = getattr(module, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _qkv(module: nn.Module) -> _QKV | None:
    """The module as a q/k/v self-attention, or None when it does not look like one."""
    qkv = next((lins for names in _QKV_NAMES
                if None not in (lins := tuple(_linear(module, n) for n in names))), None)
    out = next((lin for n in _OUT_NAMES if (lin := _linear(module, n)) is not None), None)
    counts = [(n, c) for n in _HEAD_NAMES if (c := _count(module, n)) is not None]
    if qkv is None or out is None or not counts:
        return None
    heads = counts[0][1]
    head_dim = _count(module, "head_dim") or max(1, qkv[0].out_features // heads)
    return _QKV(module, *qkv, out, tuple(n for n, c in counts if c == heads), heads, head_dim)


def _check_qkv(a: _QKV) -> None:
    """Raises unless the Linears split into ``heads`` slices of ``head_dim``: a head is then a
    slice, and anything else would prune the wrong rows silently."""
    name = type(a.module).__name__
    if len({id(a.q), id(a.k), id(a.v)}) < 3:
        raise PruneError(f"head pruning of {name} needs three distinct q, k and v nn.Linear")
    widths = [lin.out_features for lin in (a.q, a.k, a.v)] + [a.out.in_features]
    if any(w != a.heads * a.head_dim for w in widths):
        raise PruneError(f"head pruning of {name} needs q/k/v out_features and the output "
                         f"projection's in_features equal to heads x head_dim = "
                         f"{a.heads} x {a.head_dim}; they are {widths}")


def _check_mha(mha: nn.MultiheadAttention) -> None:
    if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
        raise PruneError("head pruning needs self-attention with one in_proj_weight "
                         "(kdim = vdim = embed_dim)")


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
        _check_mha(mha)
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


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """Every attention block, in module order: each ``nn.TransformerEncoderLayer`` (its
    ``self_attn`` belongs to it) and each other module recognised as q/k/v self-attention."""
    blocks: list[nn.Module] = []
    inner: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoderLayer):
            blocks.append(m)
            inner.add(id(m.self_attn))
        elif id(m) not in inner and _qkv(m) is not None:
            blocks.append(m)
    return blocks


def encoder_layers(model: nn.Module) -> list[nn.TransformerEncoderLayer]:
    return [m for m in attention_blocks(model) if isinstance(m, nn.TransformerEncoderLayer)]


def has_attention(model: nn.Module) -> bool:
    return bool(attention_blocks(model))


def _head_scores(mha: nn.MultiheadAttention, p: int) -> torch.Tensor:
    e, h, d = mha.embed_dim, mha.num_heads, mha.head_dim
    w = mha.in_proj_weight.detach().view(3, h, d, e).abs().pow(p).sum(dim=(0, 2, 3))
    return w + mha.out_proj.weight.detach().view(e, h, d).abs().pow(p).sum(dim=(0, 2))


def _qkv_scores(a: _QKV, p: int) -> torch.Tensor:
    h, d = a.heads, a.head_dim
    w = sum(lin.weight.detach().reshape(h, d, -1).abs().pow(p).sum(dim=(1, 2)) for lin in (a.q, a.k, a.v))
    return w + a.out.weight.detach().reshape(-1, h, d).abs().pow(p).sum(dim=(0, 2))


def _slice(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> None:
    """Keep the output ``rows`` and/or the input ``cols`` of ``lin``, in place."""
    with torch.no_grad():
        w = lin.weight if rows is None else lin.weight[rows]
        lin.weight = nn.Parameter((w if cols is None else w[:, cols]).clone())
        if rows is not None and lin.bias is not None:
            lin.bias = nn.Parameter(lin.bias[rows].clone())
    lin.out_features, lin.in_features = lin.weight.shape


def _keep_heads(a: _QKV, heads: torch.Tensor) -> None:
    rows = torch.cat([torch.arange(h * a.head_dim, (h + 1) * a.head_dim) for h in heads.tolist()])
    for lin in (a.q, a.k, a.v):
        _slice(lin, rows=rows)
    _slice(a.out, cols=rows)
    for name in a.head_attrs:  # what the module's forward reshapes with
        setattr(a.module, name, len(heads))


def _mlp(module: nn.Module | None, width: int | None) -> tuple[nn.Linear, nn.Linear] | None:
    """A 2-layer MLP child of ``module``; with ``width``, only one mapping width -> n -> width
    (a residual FFN, not e.g. a classifier head)."""
    if module is None:
        return None
    pairs = [(_linear(module, a), _linear(module, b)) for a, b in _MLP_PAIRS]
    for name in _MLP_SEQUENTIALS:
        seq = module._modules.get(name)
        if isinstance(seq, nn.Sequential) and len(seq) >= 2 and \
                not any(True for mid in list(seq)[1:-1] for _ in mid.parameters()):
            pairs.append((seq[0], seq[-1]))
    for l1, l2 in pairs:
        if isinstance(l1, nn.Linear) and isinstance(l2, nn.Linear) and l1.out_features == l2.in_features \
                and (width is None or l1.in_features == l2.out_features == width):
            return l1, l2
    return None


@dataclass(frozen=True)
class _Plan:
    """What pruning one block touches: its attention (None: heads stay) and FFN (None: none)."""

    block: nn.Module
    attention: nn.MultiheadAttention | _QKV | None
    ffn: tuple[nn.Linear, nn.Linear] | None


def _plans(model: nn.Module, blocks: list[nn.Module]) -> list[_Plan]:
    """One plan per block; an FFN two blocks could claim (a shared parent's) goes to the first."""
    parents = {id(c): m for m in model.modules() for c in m.children()}
    plans, claimed = [], set()
    for block in blocks:
        if isinstance(block, nn.TransformerEncoderLayer):
            attn = block.self_attn if isinstance(block.self_attn, nn.MultiheadAttention) \
                else _qkv(block.self_attn)
            ffn = _mlp(block, None)
        else:
            attn = _qkv(block)
            width = attn.out.out_features
            ffn = _mlp(block, width) or _mlp(parents.get(id(block)), width)
        if ffn is not None and id(ffn[0]) in claimed:
            ffn = None
        if ffn is not None:
            claimed.add(id(ffn[0]))
        plans.append(_Plan(block, attn, ffn))
    return plans


def _prune_heads(plan: _Plan, ratio: float, p: int) -> None:
    attn = plan.attention
    if isinstance(attn, nn.MultiheadAttention):
        heads = _top(_head_scores(attn, p), _keep(attn.num_heads, ratio))
        if len(heads) < attn.num_heads:
            plan.block.self_attn = HeadPrunedAttention(attn, heads)
    elif attn is not None:
        heads = _top(_qkv_scores(attn, p), _keep(attn.heads, ratio))
        if len(heads) < attn.heads:
            _keep_heads(attn, heads)


def _prune_ffn(l1: nn.Linear, l2: nn.Linear, ratio: float, round_to: int, p: int) -> None:
    scores = l1.weight.detach().abs().pow(p).sum(1) + l2.weight.detach().abs().pow(p).sum(0)
    keep = _top(scores, _keep(l1.out_features, ratio, round_to))
    _slice(l1, rows=keep)
    _slice(l2, cols=keep)


def per_layer_ratios(layer_ratios: Sequence[float] | None, blocks: int, ratio: float) -> list[float]:
    """``layer_ratios`` checked against the number of blocks (or layers), else ``ratio`` for all."""
    if layer_ratios is None:
        return [ratio] * blocks
    if len(layer_ratios) != blocks:
        raise PruneError(f"layer_ratios has {len(layer_ratios)} ratios for {blocks} layers")
    for r in layer_ratios:
        if not 0.0 <= r < MAX_LAYER_RATIO:
            raise PruneError(f"every layer ratio must be in [0, {MAX_LAYER_RATIO}), got {r}")
    return [float(r) for r in layer_ratios]


def prune_attention(model: nn.Module, *, ratio: float, round_to: int = 8, p: int = 2,
                    layer_ratios: Sequence[float] | None = None) -> nn.Module:
    """Remove ``ratio`` of the heads and of the FFN neurons of every attention block, in place;
    returns the model. With ``layer_ratios`` (one per block of ``attention_blocks``, in that
    order) block i removes ``layer_ratios[i]`` instead: blocks differ in how much they can lose.
    Every block keeps at least one head and one neuron. Shapes that do not split into heads are
    refused before anything changes."""
    if not 0.0 <= ratio < 1.0:
        raise PruneError(f"pruning ratio must be in [0, 1), got {ratio}")
    blocks = attention_blocks(model)
    if not blocks:
        raise PruneError("attention pruning found no attention block in the model "
                         "(nn.TransformerEncoderLayer, or self-attention with q/k/v nn.Linear)")
    ratios = per_layer_ratios(layer_ratios, len(blocks), ratio)
    plans = _plans(model, blocks)
    for plan, r in zip(plans, ratios):
        if r > 0 and isinstance(plan.attention, nn.MultiheadAttention):
            _check_mha(plan.attention)
        elif r > 0 and plan.attention is not None:
            _check_qkv(plan.attention)
    for plan, r in zip(plans, ratios):
        if r > 0:
            _prune_heads(plan, r, p)
            if plan.ffn is not None:
                _prune_ffn(*plan.ffn, r, round_to, p)
    return model
