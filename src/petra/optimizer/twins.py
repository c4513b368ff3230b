"""Post-training twins: a trained candidate quantized the other ways the search space offers.

Why: a candidate's torch stage (pruning, removed blocks, the fine-tune) is the expensive part
of its build and is cached by its torch genes, while its quantization, measurement and scoring
take seconds. NSGA-II still pays a whole child for each pairing of the two, and mutation pairs
a long fine-tune with whatever precision it draws. On fashion-mnist (Xeon AMX VM, 15 min per
searcher) five of the GA's 24-epoch children were FP32, 40-94 s each. One of them removed two
blocks, was feasible and ran 0.295x FP32's p50; static INT8 alone ran 0.33x. Its INT8 twin
would have cost seconds, and no child drew it.

Only twins that could join the front are built, judged by what each choice did alone on the
unpruned model (the PTQ-alone trials every run starts with). A feasible trial gets the choices
that alone ran faster than its own. An infeasible one close to the bound gets those that alone
lost less.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

from petra.exporters import Precision
from petra.optimizer.genome import CandidateConfig, SearchSpace
from petra.optimizer.records import Trial, TrialState

#: the genes a twin varies: those the PTQ-alone trials measured on their own
TWIN_GENES = ("precision", "per_channel")
#: an infeasible candidate gets its more accurate twins while its drop is at most this many
#: times max_drop. Further out, going back to FP32 does not recover the drop: quantization
#: alone cost fashion-mnist 0.01-0.02 points, and its infeasible children lost 1.7 to 83
TWIN_DROP = 2.0

#: the recorded trial of a config, or None (``TrialBook.recorded``)
Lookup = Callable[[CandidateConfig], Trial | None]


def reference(base: Trial, config: CandidateConfig, lookup: Lookup) -> Trial | None:
    """The trial of ``config``'s post-training choices applied to the unpruned model alone:
    the baseline itself for FP32, else its PTQ-alone trial (None when none was measured)."""
    ref = base.config.replace(**{g: getattr(config, g) for g in TWIN_GENES}).canonical()
    return base if ref.precision is Precision.FP32 else lookup(ref)


def twin_configs(trial: Trial, space: SearchSpace, base: Trial, lookup: Lookup,
                 max_drop: float) -> list[CandidateConfig]:
    """The twins of ``trial`` worth a build, each snapped to ``space`` and not built yet:
    the same torch stage, another combination of TWIN_GENES. For a feasible trial, those
    whose choices alone ran faster than its own; for one infeasible by at most TWIN_DROP x
    ``max_drop``, those whose choices alone lost less. A slower twin of a feasible point or a
    less accurate one of an infeasible point could not join the front; a trial that trained
    nothing has every twin among the PTQ-alone seeds already."""
    c = trial.config
    if trial.state is TrialState.STOPPED_EARLY or trial.measurement is None or trial.drop is None:
        return []
    if c.torch_key == base.config.torch_key or (not trial.ok and trial.drop > TWIN_DROP * max_drop):
        return []
    own = reference(base, c, lookup)
    if own is None or own.measurement is None:
        return []
    twins: dict[str, CandidateConfig] = {}
    for values in product(*(getattr(space, g) for g in TWIN_GENES)):
        twin = space.decode(space.encode(c.replace(**dict(zip(TWIN_GENES, values)))))
        if twin.torch_key != c.torch_key or lookup(twin) is not None:
            continue  # a QAT model's stage is its precision's; the trial itself is built
        ref = reference(base, twin, lookup)
        if ref is None or ref.measurement is None:
            continue
        if (ref.measurement.p50_ms < own.measurement.p50_ms if trial.ok
                else (ref.drop or 0.0) < (own.drop or 0.0)):
            twins.setdefault(twin.key, twin)
    return list(twins.values())


def quantization(config: CandidateConfig) -> str:
    """A config's TWIN_GENES in words, for the log."""
    if config.precision is Precision.FP32:
        return "fp32"
    return f"{config.precision.value} {'per-channel' if config.per_channel else 'per-tensor'}"
