"""Real compression for recurrent (GRU) layers: hidden-unit pruning and an unrolled MatMul form.

Why this module exists (measured, toolchain notes): torch-pruning runs without error on a
model with ``nn.GRU`` and changes nothing in it; ONNX Runtime's static and dynamic quantizers
and NNCF leave the ONNX ``GRU`` op in float. Without this module a "prune 50% + INT8" gene
would build the same float GRU as the baseline — a gene silently ignored.

- ``prune_gru_units`` removes hidden units for real: for each unit kept, its rows in the three
  gates (r, z, n) of ``weight_ih``/``weight_hh``/biases, its column in ``weight_hh``, and its
  input column in whatever consumes the layer's output (the next GRU layer, or the head
  ``nn.Linear``). Widths are rounded up to multiples of ``round_to`` (SIMD-friendly).
- ``unroll_gru`` swaps every ``nn.GRU`` for ``UnrolledGRU``, numerically the same function
  written as MatMuls over a fixed sequence length: the input projection is one MatMul over all
  time steps, the recurrent projection one per step. Traced to ONNX it becomes plain
  MatMul/Add/Sigmoid/Tanh, which INT8 quantizers do reach.

Supported shape: unidirectional, ``batch_first`` GRUs whose last-layer output feeds one
``nn.Linear`` (found as the first Linear registered after the GRU with matching
``in_features``). Anything else raises ``PruneError`` — never a silent no-op.
"""

from __future__ import annotations

import torch
from torch import nn

from petra.compression.probe import try_on_copy
from petra.errors import PruneError
from petra.genes import Gene, Pass, Stage


def has_recurrent(model: nn.Module) -> bool:
    return any(isinstance(m, nn.GRU | UnrolledGRU) for m in model.modules())


def _consumer(model: nn.Module, gru: nn.GRU) -> nn.Linear:
    """The Linear fed by the GRU's output: the first one registered after it that fits."""
    seen = False
    for m in model.modules():
        if m is gru:
            seen = True
        elif seen and isinstance(m, nn.Linear) and m.in_features == gru.hidden_size:
            return m
    raise PruneError("recurrent pruning needs an nn.Linear reading the GRU output "
                     f"(in_features={gru.hidden_size}) registered after the GRU")


def _check(gru: nn.GRU) -> None:
    if gru.bidirectional or not gru.batch_first or getattr(gru, "proj_size", 0):
        raise PruneError("recurrent pruning supports unidirectional batch_first GRUs only")


def _unit_scores(gru: nn.GRU, layer: int, next_in: torch.Tensor, p: int) -> torch.Tensor:
    """Magnitude of everything a hidden unit owns: its gate rows, its recurrent column and
    the column that carries it into the next layer or the head."""
    h = gru.hidden_size
    w_ih = getattr(gru, f"weight_ih_l{layer}").detach()
    w_hh = getattr(gru, f"weight_hh_l{layer}").detach()
    rows = torch.cat([w_ih.view(3, h, -1), w_hh.view(3, h, -1)], dim=2)  # gate, unit, fan-in
    parts = [rows.abs().pow(p).sum(dim=(0, 2)), w_hh.abs().pow(p).sum(dim=0),
             next_in.detach().abs().pow(p).sum(dim=0)]
    return sum(parts)


def _keep_count(h: int, ratio: float, round_to: int) -> int:
    step = max(1, round_to)
    keep = -(-round(h * (1.0 - ratio)) // step) * step
    return max(step if step < h else 1, min(h, keep))


def prune_gru_units(model: nn.Module, *, ratio: float, round_to: int = 8, p: int = 2) -> nn.Module:
    """Remove ``ratio`` of every GRU layer's hidden units, in place; returns the model.

    The same kept width is used for all layers of one ``nn.GRU`` (it has one hidden_size);
    which units are kept is decided per layer by ``p``-norm magnitude.
    """
    if not 0.0 <= ratio < 1.0:
        raise PruneError(f"pruning ratio must be in [0, 1), got {ratio}")
    grus = [m for m in model.modules() if isinstance(m, nn.GRU)]
    if not grus:
        raise PruneError("recurrent pruning found no nn.GRU in the model")
    if ratio == 0.0:
        return model
    for gru in grus:
        _check(gru)
        head = _consumer(model, gru)
        h, layers = gru.hidden_size, gru.num_layers
        new_h = _keep_count(h, ratio, round_to)
        if new_h == h:
            continue
        keeps = []
        for layer in range(layers):
            nxt = getattr(gru, f"weight_ih_l{layer + 1}") if layer + 1 < layers else head.weight
            scores = _unit_scores(gru, layer, nxt, p)
            keeps.append(torch.sort(torch.topk(scores, new_h).indices).values)
        with torch.no_grad():
            for layer, keep in enumerate(keeps):
                rows = torch.cat([keep + g * h for g in range(3)])
                for kind in ("ih", "hh"):
                    w = getattr(gru, f"weight_{kind}_l{layer}")[rows]
                    if kind == "hh":
                        w = w[:, keep]
                    elif layer > 0:
                        w = w[:, keeps[layer - 1]]
                    setattr(gru, f"weight_{kind}_l{layer}", nn.Parameter(w.clone()))
                    if gru.bias:
                        b = getattr(gru, f"bias_{kind}_l{layer}")[rows]
                        setattr(gru, f"bias_{kind}_l{layer}", nn.Parameter(b.clone()))
            head.weight = nn.Parameter(head.weight[:, keeps[-1]].clone())
            head.in_features = new_h
        gru.hidden_size = new_h
        gru._init_flat_weights()
        gru.flatten_parameters()
    return model


class UnrolledGRU(nn.Module):
    """``nn.GRU`` (unidirectional, batch_first) as explicit MatMuls; same parameters and
    outputs. Traced, the time loop unrolls to the fixed sequence length of the example."""

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        _check(gru)
        self.hidden_size, self.num_layers = gru.hidden_size, gru.num_layers
        self.ih = nn.ModuleList()
        self.hh = nn.ModuleList()
        for layer in range(gru.num_layers):
            for kind, store in (("ih", self.ih), ("hh", self.hh)):
                w = getattr(gru, f"weight_{kind}_l{layer}")
                lin = nn.Linear(w.shape[1], w.shape[0], bias=gru.bias)
                with torch.no_grad():
                    lin.weight.copy_(w)
                    if gru.bias:
                        lin.bias.copy_(getattr(gru, f"bias_{kind}_l{layer}"))
                store.append(lin)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None):
        h_size, steps = self.hidden_size, x.shape[1]
        finals = []
        for layer in range(self.num_layers):
            gi_all = self.ih[layer](x)  # one MatMul for every time step
            h = x.new_zeros(x.shape[0], h_size) if h0 is None else h0[layer]
            outs = []
            for t in range(steps):
                gi, gh = gi_all[:, t], self.hh[layer](h)
                r = torch.sigmoid(gi[:, :h_size] + gh[:, :h_size])
                z = torch.sigmoid(gi[:, h_size : 2 * h_size] + gh[:, h_size : 2 * h_size])
                n = torch.tanh(gi[:, 2 * h_size :] + r * gh[:, 2 * h_size :])
                h = (1 - z) * n + z * h
                outs.append(h)
            x = torch.stack(outs, dim=1)
            finals.append(h)
        return x, torch.stack(finals, dim=0)


def unroll_gru(model: nn.Module) -> nn.Module:
    """Replace every ``nn.GRU`` child with its ``UnrolledGRU``, in place; returns the model."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.GRU):
            setattr(model, name, UnrolledGRU(child))
        else:
            unroll_gru(child)
    return model


class RecurrentUnroll(Pass):
    """Export GRUs as MatMuls, so that INT8 quantizers reach them (the ONNX GRU op stays float)."""

    name = "recurrent_unroll"
    genes = (
        Gene("unroll_recurrent", (False, True), False, Stage.TORCH, keyed_at_default=False,
             help="export nn.GRU layers as unrolled MatMuls"),
    )

    def applies(self, model, example, backend) -> str | None:
        if not any(isinstance(m, nn.GRU) for m in model.modules()):
            return "the model has no nn.GRU to unroll"
        return try_on_copy(model, example, unroll_gru, what="unrolling the GRU")
