"""Real compression for recurrent (GRU, LSTM) layers: hidden-unit pruning and an unrolled GRU.

Why this module exists (measured, toolchain notes): torch-pruning runs without error on a
model with ``nn.GRU`` and changes nothing in it, and its ``LSTMPruner`` asserts on an LSTM of
more than one layer; ONNX Runtime's static and dynamic quantizers and NNCF leave the ONNX ``GRU``
op in float. Without this module a "prune 50% + INT8" gene would build the same float GRU as
the baseline — a gene silently ignored — and a 2-layer LSTM could not be pruned at all.

- ``prune_recurrent_units`` removes hidden units for real, from ``nn.GRU`` (3 gates: r, z, n)
  and ``nn.LSTM`` (4 gates: i, f, g, o) of any ``num_layers``, alike: for each unit kept, its
  rows in every gate of ``weight_ih``/``weight_hh``/biases, its column in ``weight_hh``, and its
  input column in whatever consumes the layer's output (the next layer, or the head
  ``nn.Linear``). Widths are rounded up to multiples of ``round_to`` (SIMD-friendly).
  Bidirectional layers keep the same number of units in each direction, chosen per direction
  (a forward unit and the backward unit of the same index are unrelated); the consumer reads
  the output as two halves, ``[forward | backward]``, and loses the columns of both.
- ``unroll_gru`` swaps every ``nn.GRU`` for ``UnrolledGRU``, numerically the same function
  written as MatMuls over a fixed sequence length: the input projection is one MatMul over all
  time steps, the recurrent projection one per step. Traced to ONNX it becomes plain
  MatMul/Add/Sigmoid/Tanh, which INT8 quantizers do reach. (An LSTM needs no unrolling for
  INT8: ORT's dynamic quantizer turns the ONNX ``LSTM`` op into ``DynamicQuantizeLSTM``.)

Pruning needs the last layer's output to feed one ``nn.Linear`` (found as the first Linear
registered after the recurrent layer with matching ``in_features``) and refuses an LSTM with
``proj_size``; unrolling supports unidirectional ``batch_first`` GRUs. Anything else raises
``PruneError`` — never a silent no-op.
"""

from __future__ import annotations

import torch
from torch import nn

from petra.compression.probe import try_on_copy
from petra.errors import PruneError
from petra.genes import Gene, Pass, Stage

#: the layers hidden-unit pruning handles, and how many gates each stacks in its weights
_GATES = {nn.GRU: 3, nn.LSTM: 4}


def has_recurrent(model: nn.Module) -> bool:
    return any(isinstance(m, nn.GRU | nn.LSTM | UnrolledGRU) for m in model.modules())


def _gates(rnn: nn.RNNBase) -> int:
    return _GATES[nn.LSTM if isinstance(rnn, nn.LSTM) else nn.GRU]


def _directions(rnn: nn.RNNBase) -> tuple[str, ...]:
    """Parameter-name suffixes of the directions, in the order their outputs are concatenated."""
    return ("", "_reverse") if rnn.bidirectional else ("",)


def _consumer(model: nn.Module, rnn: nn.RNNBase) -> nn.Linear:
    """The Linear fed by the layer's output: the first one registered after it that fits."""
    width = rnn.hidden_size * len(_directions(rnn))
    seen = False
    for m in model.modules():
        if m is rnn:
            seen = True
        elif seen and isinstance(m, nn.Linear) and m.in_features == width:
            return m
    kind = type(rnn).__name__
    raise PruneError(f"recurrent pruning needs an nn.Linear reading the {kind} output "
                     f"(in_features={width}) registered after the {kind}")


def _check_unroll(gru: nn.GRU) -> None:
    if gru.bidirectional or not gru.batch_first:
        raise PruneError("unrolling supports unidirectional batch_first GRUs only")


def _check_prune(rnn: nn.RNNBase) -> None:
    if getattr(rnn, "proj_size", 0):
        raise PruneError(f"hidden-unit pruning does not support an LSTM with proj_size "
                         f"({rnn.proj_size}): its units are read through a projection")


def _readers(rnn: nn.RNNBase, layer: int, head: nn.Linear) -> list[torch.Tensor]:
    """The weights whose input columns are ``layer``'s output: the next layer's ``weight_ih``
    (each direction's), or the head's weight after the last layer."""
    if layer + 1 == rnn.num_layers:
        return [head.weight]
    return [getattr(rnn, f"weight_ih_l{layer + 1}{d}") for d in _directions(rnn)]


def _unit_scores(rnn: nn.RNNBase, layer: int, direction: int, readers: list[torch.Tensor],
                 p: int) -> torch.Tensor:
    """Magnitude of everything one direction's hidden unit owns: its gate rows, its recurrent
    column and the columns that carry it into the next layer or the head."""
    g, h, d = _gates(rnn), rnn.hidden_size, _directions(rnn)[direction]
    w_ih = getattr(rnn, f"weight_ih_l{layer}{d}").detach()
    w_hh = getattr(rnn, f"weight_hh_l{layer}{d}").detach()
    rows = torch.cat([w_ih.view(g, h, -1), w_hh.view(g, h, -1)], dim=2)  # gate, unit, fan-in
    cols = torch.cat([w.detach()[:, direction * h:(direction + 1) * h] for w in readers])
    return rows.abs().pow(p).sum(dim=(0, 2)) + w_hh.abs().pow(p).sum(dim=0) + cols.abs().pow(p).sum(dim=0)


def _keep_count(h: int, ratio: float, round_to: int) -> int:
    step = max(1, round_to)
    keep = -(-round(h * (1.0 - ratio)) // step) * step
    return max(step if step < h else 1, min(h, keep))


def _output_columns(keeps: list[torch.Tensor], h: int) -> torch.Tensor:
    """Kept units per direction -> kept columns of the ``[forward | backward]`` output."""
    return torch.cat([keep + i * h for i, keep in enumerate(keeps)])


def prune_recurrent_units(model: nn.Module, *, ratio: float, round_to: int = 8, p: int = 2) -> nn.Module:
    """Remove ``ratio`` of every GRU/LSTM layer's hidden units, in place; returns the model.

    The same kept width is used for all layers and directions of one module (it has one
    hidden_size); which units are kept is decided per layer and direction by ``p``-norm
    magnitude.
    """
    if not 0.0 <= ratio < 1.0:
        raise PruneError(f"pruning ratio must be in [0, 1), got {ratio}")
    rnns = [m for m in model.modules() if isinstance(m, nn.GRU | nn.LSTM)]
    if not rnns:
        raise PruneError("recurrent pruning found no nn.GRU or nn.LSTM in the model")
    for rnn in rnns:
        _check_prune(rnn)
    if ratio == 0.0:
        return model
    for rnn in rnns:
        head = _consumer(model, rnn)
        new_h = _keep_count(rnn.hidden_size, ratio, round_to)
        if new_h < rnn.hidden_size:
            _prune_units(rnn, head, new_h, p)
    return model


def _prune_units(rnn: nn.RNNBase, head: nn.Linear, new_h: int, p: int) -> None:
    g, h, dirs = _gates(rnn), rnn.hidden_size, _directions(rnn)
    keeps = []  # per layer, per direction: the kept unit indices, sorted
    for layer in range(rnn.num_layers):
        readers = _readers(rnn, layer, head)
        keeps.append([torch.sort(torch.topk(_unit_scores(rnn, layer, i, readers, p), new_h).indices).values
                      for i in range(len(dirs))])
    with torch.no_grad():
        for layer, per_dir in enumerate(keeps):
            inputs = _output_columns(keeps[layer - 1], h) if layer else None
            for d, keep in zip(dirs, per_dir):
                rows = torch.cat([keep + gate * h for gate in range(g)])
                for kind, cols in (("ih", inputs), ("hh", keep)):
                    w = getattr(rnn, f"weight_{kind}_l{layer}{d}")[rows]
                    w = w if cols is None else w[:, cols]
                    setattr(rnn, f"weight_{kind}_l{layer}{d}", nn.Parameter(w.clone()))
                    if rnn.bias:
                        b = getattr(rnn, f"bias_{kind}_l{layer}{d}")[rows]
                        setattr(rnn, f"bias_{kind}_l{layer}{d}", nn.Parameter(b.clone()))
        head.weight = nn.Parameter(head.weight[:, _output_columns(keeps[-1], h)].clone())
        head.in_features = new_h * len(dirs)
    rnn.hidden_size = new_h
    rnn._init_flat_weights()
    rnn.flatten_parameters()


class UnrolledGRU(nn.Module):
    """``nn.GRU`` (unidirectional, batch_first) as explicit MatMuls; same parameters and
    outputs. Traced, the time loop unrolls to the fixed sequence length of the example."""

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        _check_unroll(gru)
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
