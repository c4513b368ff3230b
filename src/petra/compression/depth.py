"""Architecture genes: whole residual blocks removed, per depth stage.

Why: pruning narrows layers but keeps every one of them, and on a CPU each layer costs a
fixed overhead (a kernel launch, a pass over the activations) however narrow it is. A block
``x + f(x)`` whose input and output shapes match can go entirely: the skip connection carries
the signal, and fine-tuning with distillation recovers what ``f`` added (layer dropping in
transformers, block dropping in ResNets). Which blocks go in a stage is decided on real inputs:
those that change their input least.

A block is removable when it sits in a container of blocks (``nn.Sequential`` or
``nn.ModuleList``) beside another block, has weights, keeps its input's shape, and either is an
``nn.TransformerEncoderLayer`` (residual by definition), adds its own input to its output (read
from its ``torch.fx`` graph), or is a composite module of its own (a block of layers, not a
single layer) with no skip: then the next block reads what the one before wrote, and the
fine-tune (with distillation) retrains it to. Why the last: InceptionTime's modules keep their
4 x nf channels but add no skip (the shortcut spans three of them), and once pruned its INT8
graph on OpenVINO costs about ten operators of fixed overhead per module (nf=4 ran 0.27 ms, nf=32
0.84 ms, on one Xeon core), so fewer modules are what is left to gain. A single layer (a 3x3 conv in
a plain ``nn.Sequential``) is never removed: that is what pruning narrows.

A stacked ``nn.GRU``/``nn.LSTM`` (no ``proj_size``) has such blocks too: every layer but the first
reads a sequence of the width it writes, so it can go and the next layer (or the consumer) reads
the one before. A recurrent layer is a sequential loop over time steps, its cost per step fixed
however few units pruning leaves it, so this is the one gene that shortens that loop. Without a
skip there is no "least change" to rank such layers by; the top one goes first, so the layers
below still see the inputs they were trained on, and distillation retrains the consumer.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from petra.compression.probe import try_on_copy
from petra.compression.recurrent import replace_child
from petra.compression.stages import MAX_STAGES, chunks
from petra.genes import Gene, Pass, Stage

DEPTH_GENES = tuple(f"drop_blocks{i}" for i in range(MAX_STAGES))
#: a block is (container, index in it)
Block = tuple[nn.Module, int]


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Hardswish)
_ADDS = {"add", "add_", "iadd", "__add__", "__iadd__"}


def _adds_its_input(block: nn.Module) -> bool:
    """Whether the block returns ``input + f(input)`` (an activation after the sum allowed)."""
    if isinstance(block, nn.TransformerEncoderLayer):
        return True
    try:
        traced = torch.fx.symbolic_trace(block)
    except Exception:  # data-dependent control flow: not provably residual, so never removed
        return False
    nodes = list(traced.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"][:1]
    outputs = [n for n in nodes if n.op == "output"]
    if not inputs or not outputs or not isinstance(outputs[0].args[0], torch.fx.Node):
        return False
    node = outputs[0].args[0]
    while (node.op == "call_module" and isinstance(traced.get_submodule(node.target), _ACTIVATIONS)) or (
            node.op in ("call_function", "call_method")
            and getattr(node.target, "__name__", str(node.target)) in ("relu", "relu_", "gelu", "relu6")):
        node = node.args[0]
    return _skip_chain(traced, node, inputs[0])


def _skip_chain(traced, node, source) -> bool:
    """``node`` is a sum with ``source`` on its skip path: ``source + f`` or ``(source + f) + g``
    (a pre-norm transformer block adds twice); an ``nn.Identity`` shortcut is the source too."""
    if node.op not in ("call_function", "call_method") or \
            getattr(node.target, "__name__", str(node.target)) not in _ADDS:
        return False

    def is_source(a) -> bool:
        return a is source or (isinstance(a, torch.fx.Node) and a.op == "call_module"
                               and isinstance(traced.get_submodule(a.target), nn.Identity)
                               and a.args[:1] == (source,))

    return any(is_source(a) or (isinstance(a, torch.fx.Node) and _skip_chain(traced, a, source))
               for a in node.args)


def _containers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Sequential | nn.ModuleList) and len(m) > 1]


def _blocks_with_inputs(model: nn.Module, x: torch.Tensor) -> tuple[list[Block], dict]:
    """The removable blocks and, from the same single forward on ``x``, each one's input."""
    seen: dict[nn.Module, torch.Tensor] = {}
    keeps_shape: dict[nn.Module, bool] = {}

    def hook(mod, args, out):
        x = args[0] if args else None
        seen[mod] = x
        keeps_shape[mod] = (isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor)
                            and x.shape == out.shape)

    candidates = [(c, i) for c in _containers(model) for i in range(len(c))
                  if any(p.requires_grad for p in c[i].parameters())]
    handles = [c[i].register_forward_hook(hook) for c, i in candidates]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return [(c, i) for c, i in candidates if keeps_shape.get(c[i]) and
            (_adds_its_input(c[i]) or _composite(c[i]))], seen


_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.RNNBase, nn.MultiheadAttention)


def _composite(block: nn.Module) -> bool:
    """A block of at least two layers, not one layer with its norm and activation (a
    ``Conv2dNormActivation`` is what pruning narrows, not a block)."""
    return sum(isinstance(m, _LAYERS) for m in block.modules()) >= 2


def _recurrent_layers(model: nn.Module) -> list[Block]:
    """Layers 1.. of every stacked GRU/LSTM, as (module, layer index)."""
    return [(m, j) for m in model.modules()
            if isinstance(m, nn.GRU | nn.LSTM) and not getattr(m, "proj_size", 0)
            for j in range(1, m.num_layers)]


def _in_depth_order(model: nn.Module, blocks: list[Block]) -> list[Block]:
    position = {id(m): i for i, m in enumerate(model.modules())}

    def where(b: Block) -> tuple[int, int]:
        container, i = b
        return (position[id(container)], i) if isinstance(container, nn.RNNBase) else \
            (position[id(container[i])], 0)
    return sorted(blocks, key=where)


def removable_blocks(model: nn.Module, example: torch.Tensor) -> list[Block]:
    """Shape-keeping blocks with weights (residual or composite) and stacked recurrent layers, in
    depth order."""
    return _in_depth_order(model, _blocks_with_inputs(model, example)[0] + _recurrent_layers(model))


def _change(block: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        out = block(x)
    return float((out - x).norm() / x.norm().clamp_min(1e-12))


def ranking_inputs(train_x: np.ndarray) -> torch.Tensor:
    """The training rows on which blocks are ranked for removal: the build and the sensitivity
    pass must rank on the same ones, or the pass scores another block than the one removed."""
    return torch.from_numpy(train_x[:128])


def drop_blocks(model: nn.Module, example: torch.Tensor, per_stage: tuple[int, ...],
                inputs: torch.Tensor | None = None) -> nn.Module:
    """Remove ``per_stage[k]`` blocks from depth stage ``k``, in place: in each stage, those whose
    output differs least from their input on ``inputs`` (the example when None)."""
    blocks, seen = _blocks_with_inputs(model, example if inputs is None else inputs)
    blocks = _in_depth_order(model, blocks + _recurrent_layers(model))

    def rank(b: Block) -> tuple[int, float]:  # residual blocks by change, then the top recurrent layer
        if isinstance(b[0], nn.RNNBase):
            return 1, -b[1]
        return 0, _change(b[0][b[1]], seen[b[0][b[1]]])

    doomed = []
    for stage, k in zip(chunks(blocks), per_stage):
        doomed += sorted(stage, key=rank)[:min(k, len(stage))]
    _remove(model, [b for b in doomed if not isinstance(b[0], nn.RNNBase)])
    for rnn, j in sorted((b for b in doomed if isinstance(b[0], nn.RNNBase)), key=lambda b: -b[1]):
        _remove_recurrent_layer(model, rnn, j)
    return model


def _remove_recurrent_layer(model: nn.Module, rnn: nn.GRU | nn.LSTM, j: int) -> None:
    """``rnn`` without its layer ``j``: a module of the same kind and one layer fewer takes its
    place in its parent, with the other layers' weights."""
    kept = [k for k in range(rnn.num_layers) if k != j]
    new = type(rnn)(rnn.input_size, rnn.hidden_size, len(kept), bias=rnn.bias, batch_first=rnn.batch_first,
                    dropout=rnn.dropout if len(kept) > 1 else 0.0, bidirectional=rnn.bidirectional)
    with torch.no_grad():
        for name in new._flat_weights_names:
            layer = int(name.split("_l")[1].split("_")[0])
            getattr(new, name).copy_(getattr(rnn, name.replace(f"_l{layer}", f"_l{kept[layer]}", 1)))
    new.train(rnn.training)
    replace_child(model, rnn, new, "removing a recurrent layer")


def _remove(model: nn.Module, doomed: list[Block]) -> None:
    """The block's place gets an Identity, so an owner that indexes its blocks (InceptionTime
    adds a shortcut after every third) still finds each where it was. The layers of an owner that
    counts them (nn.TransformerEncoder: ``num_layers``, and it calls each with a mask an Identity
    does not take) lose the entry instead, one always kept."""
    counters = [owner for owner in model.modules()
                if isinstance(getattr(owner, "layers", None), nn.ModuleList)
                and isinstance(getattr(owner, "num_layers", None), int)]
    counted = {id(owner.layers) for owner in counters}
    for container, i in sorted(doomed, key=lambda b: -b[1]):
        if id(container) not in counted:
            container[i] = nn.Identity()
        elif len(container) > 1:
            del container[i]
    for owner in counters:
        owner.num_layers = len(owner.layers)


def depth_stages(model: nn.Module, example: torch.Tensor) -> list[int]:
    """How many removable blocks each depth stage holds."""
    return [len(stage) for stage in chunks(removable_blocks(model, example))]


class BlockRemoval(Pass):
    """Blocks removed per depth stage (a residual block's skip connection stays)."""

    name = "block_removal"
    genes = tuple(Gene(g, (0, 1, 2), 0, Stage.TORCH, keyed_at_default=False,
                       help=f"blocks removed from depth stage {i + 1} of {MAX_STAGES}")
                  for i, g in enumerate(DEPTH_GENES))

    def applies(self, model, example, backend) -> str | None:
        try:
            counts = depth_stages(model, example)
        except Exception as exc:
            return f"its blocks could not be traced ({type(exc).__name__}: {exc})"
        if not counts:
            return "the model has no residual or composite block whose input and output shapes match"
        return try_on_copy(model, example, lambda m: drop_blocks(m, example, (1,) * MAX_STAGES),
                           what="removing a block per stage", must_shrink=True)

    def narrow(self, model, example) -> dict[str, tuple[tuple, str]]:
        counts = depth_stages(model, example)
        out = {}
        for gene, n in zip(DEPTH_GENES, counts + [0] * MAX_STAGES):
            kept = tuple(c for c in (0, 1, 2) if c <= n)
            if len(kept) < 3:
                out[gene] = (kept, f"depth stage holds {n} removable block{'s' if n != 1 else ''}")
        return out
