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
  ``nn.Linear``). Widths are rounded up to multiples of ``round_to`` (SIMD-friendly). With
  ``layer_ratios`` every layer keeps its own width; a multi-layer module has one hidden_size,
  so one whose layers come out different becomes a ``LayerwiseRNN`` (one single-layer module
  per layer, each still an ONNX ``GRU``/``LSTM`` op, so ORT's ``DynamicQuantizeLSTM`` still
  reaches an LSTM).
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

from collections.abc import Sequence

import torch
from torch import nn

from petra.compression.attention import per_layer_ratios
from petra.compression.probe import try_on_copy
from petra.errors import PruneError
from petra.exporters.quantize import Precision
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


#: one recurrent layer: a module and the index of the layer in it
Slot = tuple[nn.RNNBase, int]
#: a GRU's hidden state, or an LSTM's (h, c)
_State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class LayerwiseRNN(nn.Module):
    """Single-layer GRUs or LSTMs run one after the other: a multi-layer module whose layers
    were pruned to different widths, which one module (one hidden_size) cannot hold.

    Same batch_first, bidirectional, bias and dropout between layers (in training only) as the
    module it replaces, and the same return: ``(output, h_n)`` for a GRU, ``(output, (h_n,
    c_n))`` for an LSTM, except that h_n and c_n are the last layer's only, of shape
    (directions, batch, H_last): states of different widths do not stack into one
    (layers x directions, batch, H) tensor, and ``h_n[-1]``, the usual reading, stays the same.
    For the same reason, initial states ``hx`` are refused while widths differ.
    """

    def __init__(self, layers: Sequence[nn.GRU | nn.LSTM], dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.dropout = dropout
        self.mode = "LSTM" if isinstance(layers[0], nn.LSTM) else "GRU"
        self.batch_first, self.bidirectional = layers[0].batch_first, layers[0].bidirectional

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        """The last layer's: the width of the output its consumer reads."""
        return self.layers[-1].hidden_size

    def _initial(self, hx: _State) -> list[_State]:
        widths = [layer.hidden_size for layer in self.layers]
        if len(set(widths)) > 1:
            raise ValueError(f"LayerwiseRNN: initial states cannot be given when layers have "
                             f"different widths ({widths}); call it with hx=None")
        n = 2 if self.bidirectional else 1
        if self.mode == "LSTM":
            return [(hx[0][i * n:(i + 1) * n], hx[1][i * n:(i + 1) * n]) for i in range(len(widths))]
        return [hx[i * n:(i + 1) * n] for i in range(len(widths))]

    def forward(self, x: torch.Tensor, hx: _State | None = None) -> tuple[torch.Tensor, _State]:
        states = None if hx is None else self._initial(hx)
        last = None
        for i, layer in enumerate(self.layers):
            if i and self.training and self.dropout > 0:
                x = nn.functional.dropout(x, self.dropout, training=True)
            x, last = layer(x) if states is None else layer(x, states[i])
        return x, last


def _stacks(model: nn.Module) -> list[tuple[nn.Module, list[Slot]]]:
    """Each stack of layers feeding one another, with its module: a GRU/LSTM and its layers,
    or a ``LayerwiseRNN`` and its single-layer modules."""
    stacks, inner = [], set()
    for m in model.modules():
        if isinstance(m, LayerwiseRNN):
            inner.update(id(layer) for layer in m.layers)
            if all(isinstance(layer, nn.GRU | nn.LSTM) for layer in m.layers):  # not unrolled
                stacks.append((m, [(layer, 0) for layer in m.layers]))
        elif isinstance(m, nn.GRU | nn.LSTM) and id(m) not in inner:
            stacks.append((m, [(m, layer) for layer in range(m.num_layers)]))
    return stacks


def recurrent_layers(model: nn.Module) -> list[Slot]:
    """Every GRU/LSTM layer, in module order, as (module, layer index in it): what
    ``layer_ratios`` of ``prune_recurrent_units`` gives one ratio each."""
    return [slot for _, slots in _stacks(model) for slot in slots]


def _readers(slots: list[Slot], j: int, head: nn.Linear) -> list[torch.Tensor]:
    """The weights whose input columns are layer ``j``'s output: the next layer's ``weight_ih``
    (each direction's), or the head's weight after the last layer."""
    if j + 1 == len(slots):
        return [head.weight]
    rnn, layer = slots[j + 1]
    return [getattr(rnn, f"weight_ih_l{layer}{d}") for d in _directions(rnn)]


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


def prune_recurrent_units(model: nn.Module, *, ratio: float, round_to: int = 8, p: int = 2,
                          layer_ratios: Sequence[float] | None = None) -> nn.Module:
    """Remove ``ratio`` of every GRU/LSTM layer's hidden units, in place; returns the model.

    With ``layer_ratios`` (one per entry of ``recurrent_layers``, each in [0, 0.95)) layer i
    removes ``layer_ratios[i]``: layers differ in how much they can lose. A multi-layer module
    whose layers then differ in width is replaced, in its parent, by a ``LayerwiseRNN``; one
    whose widths come out equal stays itself. Which units are kept is decided per layer and
    direction by ``p``-norm magnitude. Everything is checked before anything changes.
    """
    if not 0.0 <= ratio < 1.0:
        raise PruneError(f"pruning ratio must be in [0, 1), got {ratio}")
    stacks = _stacks(model)
    if not stacks:
        raise PruneError("recurrent pruning found no nn.GRU or nn.LSTM in the model")
    for _, slots in stacks:
        for rnn, _ in slots:
            _check_prune(rnn)
    ratios = iter(per_layer_ratios(layer_ratios, sum(len(s) for _, s in stacks), ratio))
    plans = []
    for owner, slots in stacks:
        asked = [next(ratios) for _ in slots]
        if any(asked):  # a missing consumer is refused even where rounding keeps every unit
            widths = [_keep_count(rnn.hidden_size, r, round_to) for r, (rnn, _) in zip(asked, slots)]
            plans.append((owner, slots, widths, _consumer(model, owner)))
    for owner, slots, widths, head in plans:
        if all(w == rnn.hidden_size for w, (rnn, _) in zip(widths, slots)):
            continue
        if isinstance(owner, nn.RNNBase) and len(set(widths)) > 1:
            layerwise = _split(owner)
            replace_child(model, owner, layerwise, "layer-wise pruning")
            slots = [(layer, 0) for layer in layerwise.layers]
        _prune_stack(slots, widths, head, p)
    return model


def _split(rnn: nn.GRU | nn.LSTM) -> LayerwiseRNN:
    """The same function as one single-layer module per layer."""
    kind, n = (nn.LSTM if isinstance(rnn, nn.LSTM) else nn.GRU), len(_directions(rnn))
    layers = []
    for layer in range(rnn.num_layers):
        single = kind(rnn.input_size if layer == 0 else rnn.hidden_size * n, rnn.hidden_size,
                      bias=rnn.bias, batch_first=rnn.batch_first, bidirectional=rnn.bidirectional)
        for name in single._flat_weights_names:
            w = getattr(rnn, name.replace("_l0", f"_l{layer}"))
            setattr(single, name, nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad))
        single._init_flat_weights()
        layers.append(single)
    return LayerwiseRNN(layers, dropout=rnn.dropout).train(rnn.training)


def replace_child(model: nn.Module, old: nn.Module, new: nn.Module, what: str) -> None:
    """``new`` in ``old``'s place in its parent, under the same key (module order, hence the
    consumers found by position, kept); ``what`` names the change for the error."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise PruneError(f"{what} replaces the {type(old).__name__} in its parent "
                     "module; the model itself cannot be replaced")


def _prune_stack(slots: list[Slot], widths: list[int], head: nn.Linear, p: int) -> None:
    """Keep ``widths[j]`` units of layer j, the columns that read them, and the head's."""
    dirs, old = _directions(slots[0][0]), [rnn.hidden_size for rnn, _ in slots]
    keeps = []  # per layer, per direction: the kept unit indices, sorted
    for j, ((rnn, layer), width) in enumerate(zip(slots, widths)):
        readers = _readers(slots, j, head)
        keeps.append([torch.sort(torch.topk(_unit_scores(rnn, layer, i, readers, p), width).indices).values
                      for i in range(len(dirs))])
    with torch.no_grad():
        for j, (rnn, layer) in enumerate(slots):
            inputs = _output_columns(keeps[j - 1], old[j - 1]) if j else None
            _slice_layer(rnn, layer, keeps[j], inputs, old[j])
        head.weight = nn.Parameter(head.weight[:, _output_columns(keeps[-1], old[-1])].clone())
        head.in_features = widths[-1] * len(dirs)
    for j, (rnn, layer) in enumerate(slots):
        rnn.hidden_size = widths[j]
        if j and layer == 0:  # a single-layer module of a LayerwiseRNN reads the one before
            rnn.input_size = widths[j - 1] * len(dirs)
    for rnn in {id(rnn): rnn for rnn, _ in slots}.values():
        rnn._init_flat_weights()
        rnn.flatten_parameters()


def _slice_layer(rnn: nn.RNNBase, layer: int, keeps: list[torch.Tensor], inputs: torch.Tensor | None,
                 h: int) -> None:
    """One layer's gate rows and recurrent columns of the kept units, per direction, and the
    input columns ``inputs`` (the previous layer's kept output) when there is one."""
    for d, keep in zip(_directions(rnn), keeps):
        rows = torch.cat([keep + gate * h for gate in range(_gates(rnn))])
        for kind, cols in (("ih", inputs), ("hh", keep)):
            w = getattr(rnn, f"weight_{kind}_l{layer}{d}")[rows]
            w = w if cols is None else w[:, cols]
            setattr(rnn, f"weight_{kind}_l{layer}{d}", nn.Parameter(w.clone()))
            if rnn.bias:
                b = getattr(rnn, f"bias_{kind}_l{layer}{d}")[rows]
                setattr(rnn, f"bias_{kind}_l{layer}{d}", nn.Parameter(b.clone()))


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


def _unroll_matters(c) -> bool:
    """Unrolling pays only by letting a quantizer reach the GRU's MatMuls. In float the fused GRU
    op wins: on cdnow (ORT, 1 thread) unrolled FP32 GRUs ran 2.6x to 9x the p50 of their
    GRU-op twins, and such children cost the search full trials."""
    return c.precision is not Precision.FP32


class RecurrentUnroll(Pass):
    """Export GRUs as MatMuls, so that INT8 quantizers reach them (the ONNX GRU op stays float)."""

    name = "recurrent_unroll"
    genes = (
        Gene("unroll_recurrent", (False, True), False, Stage.TORCH, keyed_at_default=False,
             when=_unroll_matters, help="export nn.GRU layers as unrolled MatMuls (quantized only)"),
    )

    def applies(self, model, example, backend) -> str | None:
        if not any(isinstance(m, nn.GRU) for m in model.modules()):
            return "the model has no nn.GRU to unroll"
        return try_on_copy(model, example, unroll_gru, what="unrolling the GRU")
