"""The search space of a run, assembled from the passes that apply to the model in hand, and
the configs that seed its first population.

The probe runs before any training: the model is exported as given (a model that cannot be
exported stops the run in seconds), then every pass tries itself on a copy. A pass that cannot
work removes its genes, each with the pass's one-line reason; nothing fails late.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from petra.candidate import PASSES, TORCH_GENES, CandidateConfig, SearchSpace
from petra.compression.pruning import Importance
from petra.errors import ConfigError
from petra.exporters import Calibration, Precision, export_onnx
from petra.optimizer.genome import ORT, Regularizer

#: one removed gene: (gene, why it cannot apply to this model on these runtimes)
Removed = tuple[str, str]


def handmade_config(threads: int, runtime: str = ORT, precision: Precision = Precision.INT8_STATIC,
                    per_channel: bool = True) -> CandidateConfig:
    """What an expert builds first: prune 50% (L2), fine-tune 4 epochs with distillation, then
    the post-training quantization measured fastest and within the drop on this model (INT8 by
    default)."""
    return CandidateConfig(prune_ratio=0.5, importance=Importance.L2, round_to=8, epochs=4, lr=1e-3,
                           regularizer=Regularizer.KD, reg_weight=0.75, precision=precision,
                           per_channel=per_channel, threads=threads, runtime=runtime)


def ptq_configs(threads: int, runtime: str, precisions: tuple[Precision, ...]) -> list[CandidateConfig]:
    """Each INT8 of ``precisions`` applied to the baseline alone, with per-channel and with
    per-tensor weight scales: the single techniques, ONNX Runtime's defaults (per-tensor) among
    them, so that the front holds at least what INT8 alone gives. Why both: on ucr-OSULeaf (AMD
    EPYC, AVX2 without VNNI) static INT8 lost 9.1 validation points per-channel and none
    per-tensor; without VNNI, ORT's u8s8 kernels can saturate, and full-range per-channel weights
    do so more often. A runtime without the per-channel gene gets one config per precision."""
    configs = [CandidateConfig(precision=p, calibration=Calibration.MINMAX, per_channel=pc, threads=threads,
                               runtime=runtime).canonical()
               for p in dict.fromkeys(precisions) if p is not Precision.FP32 for pc in (True, False)]
    return list(dict.fromkeys(configs))


#: a post-training precision that alone ran at least this many times FP32's p50, on every
#: runtime it was measured on, leaves the search space (see ``slow_precisions``)
SLOW_PTQ = 1.5


def slow_precisions(ratios: dict[Precision, list[float]]) -> dict[Precision, float]:
    """Of ``ratios`` (each PTQ precision's measured p50 over FP32's, every runtime and weight
    scale), those that ran at least SLOW_PTQ times FP32 in every measurement, with their best
    ratio. Why: pruning narrows every layer alike, so a precision whose kernels are that much
    slower on this model cannot win; on fashion-mnist's ResNet, ORT's dynamic INT8
    (ConvInteger) ran 5.6x FP32 (Xeon AMX VM), and in a 15 min run the GA built four children
    with it (178 s), none of them of use. Well under that margin, the choice stays: cdnow's GRU
    ran static INT8 at 1.01x FP32 alone, and pruned INT8 0.0330 ms against pruned FP32's
    0.0319."""
    return {p: min(r) for p, r in ratios.items()
            if p is not Precision.FP32 and r and min(r) >= SLOW_PTQ}


def seed_configs(threads: int, runtime: str = ORT, extra: list[CandidateConfig] = (),
                 screened: bool = True, precision: Precision = Precision.INT8_STATIC,
                 per_channel: bool = True) -> list[CandidateConfig]:
    """The FP32 baseline, INT8 post-training quantization alone, and prune-50% + KD at
    ``precision``, then ``extra`` (the sensitivity-shaped seeds). Without screening
    (``screened`` False, threads a gene), last the hand-made one on one thread when the baseline
    took more: a compressed model does a fraction of the baseline's work, and the thread count
    that suited the baseline is then often too many (OpenVINO, digits, Xeon with AMX: 0.070 ms on
    1 thread against 0.116 ms on 2). A screened search tries every thread count anyway."""
    handmade = handmade_config(threads, runtime, precision, per_channel)
    return [
        CandidateConfig(threads=threads, runtime=runtime),
        *[c for c in ptq_configs(threads, runtime, (Precision.INT8_STATIC, precision))
          if c.per_channel == per_channel],  # the other scales are in the book, not the population
        handmade,
        *extra,
        *([handmade.replace(threads=1)] if threads > 1 and not screened else []),
    ]


def default_space(runtimes: tuple[str, ...], n_threads: int) -> SearchSpace:
    """Threads up to the cores; runtime a gene of its own; each backend's machine limits."""
    from petra.runtimes import backend

    kwargs: dict = {"threads": tuple(range(1, n_threads + 1)), "runtime": tuple(runtimes)}
    for name in runtimes:
        kwargs |= backend(name).machine_choices()
    return SearchSpace(**kwargs)


#: torch vs ONNX Runtime on real validation inputs, relative to the outputs' scale: exporters
#: agree to ~1e-7 (toolchain notes); a model that disagrees by more exported something else
PARITY_TOLERANCE = 1e-3


def _export_as_given(model, example, inputs, folder: Path) -> Path:
    """Export the model as given into ``folder`` and run the file on real validation inputs
    beside torch: a model that cannot be exported, or exports to another function, stops the
    run here. The file is what the passes' ``narrow_graph`` read."""
    import numpy as np
    import torch

    from petra.runtimes import get_runtime

    try:
        art = export_onnx(model, example, folder / "model.onnx")
    except Exception as exc:
        raise ConfigError(f"the model does not export to ONNX ({exc}); make its forward "
                          "traceable by torch.onnx.export (TorchScript or dynamo)") from None
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(np.ascontiguousarray(inputs))).numpy()
    got = get_runtime("onnxruntime").compile(art.path).run(np.ascontiguousarray(inputs))
    scale = max(float(np.abs(expected).max()), 1e-6)
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if diff > PARITY_TOLERANCE * scale:
        raise ConfigError(f"the exported ONNX model disagrees with the torch model on validation inputs "
                          f"(max difference {diff:.3g} for outputs up to {scale:.3g}); its forward "
                          "probably depends on Python state the exporter cannot see")
    return art.path


def assemble(task, model, runtimes, n_threads: int, space: SearchSpace | None = None
             ) -> tuple[SearchSpace, list[Removed]]:
    """The run's search space: ``space`` (or the default one) less what cannot apply to
    ``model`` (None for an ONNX-only task) on ``runtimes``, then the task's own
    ``gene_choices`` (a user override). Returns the space and the removed genes with reasons."""
    from petra.runtimes import backend

    backends = [backend(name) for name in runtimes]
    space = space or default_space(tuple(runtimes), n_threads)
    space = space.replace(runtime=tuple(runtimes))
    example = task.example_input
    removed: list[Removed] = []
    choices: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory(prefix="petra-probe-") as tmp:
        graph = (getattr(task, "onnx_model", None) if model is None
                 else _export_as_given(model, example, task.val.x[:16], Path(tmp)))
        probed = [(p, *_probe_one(p, model, example, backends, graph)) for p in PASSES]
    for p, reason, narrowed in probed:
        for g in p.genes:
            current = getattr(space, g.name)
            if reason is not None and (len(current) > 1 or current[0] != g.default):
                choices[g.name] = (g.default,)
                removed.append((g.name, reason))
            elif g.name in narrowed:
                kept = tuple(c for c in current if c in narrowed[g.name][0]) or (g.default,)
                if kept != current:
                    choices[g.name] = kept
                    removed.append((g.name, f"{narrowed[g.name][1]} (kept {', '.join(map(_v, kept))})"))
    space = space.replace(**choices)
    space, overridden = _task_override(task, space)
    return space, removed + overridden


def _v(value) -> str:
    return str(getattr(value, "value", value))


def _probe_one(p, model, example, backends: list, graph: Path | None) -> tuple[str | None, dict]:
    """Why the pass cannot apply (None when it can), and its choices narrowed on the torch
    model and on ``graph``, the model as exported (or the ONNX file as given)."""
    if p.per_backend:
        reasons = [p.applies(model, example, b) for b in backends]
        reason = None if any(r is None for r in reasons) else "; ".join(dict.fromkeys(reasons))
        narrowed = {}
    elif model is None:
        torch_only = any(g.name in TORCH_GENES for g in p.genes)
        reason = "the task is an ONNX file: there is no torch model to change" if torch_only else None
        narrowed = {}
    else:
        reason = p.applies(model, example, backends[0])
        narrowed = {} if reason else p.narrow(model, example)
    if reason is None and graph is not None:
        narrowed = {**narrowed, **p.narrow_graph(Path(graph))}
    return reason, narrowed


def _task_override(task, space: SearchSpace) -> tuple[SearchSpace, list[Removed]]:
    """``Task.gene_choices``: where ``space`` still offers a gene's choices, the task's replace
    them (this is how a task opens a gene the default space keeps closed); else intersect."""
    restricted, removed = {}, []
    declared = SearchSpace()
    for gene, allowed in (getattr(task, "gene_choices", None) or {}).items():
        if gene not in space.gene_names:
            raise ConfigError(f"task {task.name!r} restricts unknown gene {gene!r}; "
                              f"use one of {', '.join(space.gene_names)}")
        current, allowed = getattr(space, gene), tuple(allowed)
        if current == getattr(declared, gene):
            restricted[gene] = allowed
        else:
            restricted[gene] = tuple(c for c in current if c in allowed) or allowed[:1]
        if len(restricted[gene]) < len(current):
            removed.append((gene, f"the task's gene_choices keep {', '.join(map(_v, restricted[gene]))}"))
    return space.replace(**restricted), removed
