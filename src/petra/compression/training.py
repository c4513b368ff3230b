"""The one training loop: baseline training and candidate fine-tuning both go through ``fit``.

The baseline is trained to convergence with early stopping on the validation split and the
best epoch's weights restored: an under-trained baseline makes every fine-tuned candidate look
free (the "gain" would be training, not compression).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from petra.compression.regularizers import CrossEntropy, Loss, TaskLoss
from petra.genes import Gene, Pass, Stage
from petra.profilers.fingerprint import machine

if TYPE_CHECKING:  # compression reads tasks by shape only: models/ import compression, not back
    from petra.models.base import Metric, Split, Task


@dataclass(frozen=True)
class FitReport:
    epochs_run: int
    best_epoch: int
    best_val: float | None


def set_torch_threads() -> None:
    """Every core this process may use; an executor that shares the machine between several
    training processes narrows their affinity (or sets ``PETRA_TORCH_THREADS``) first."""
    forced = os.environ.get("PETRA_TORCH_THREADS", "")
    torch.set_num_threads(int(forced) if forced.isdigit() and int(forced) > 0
                          else max(1, len(os.sched_getaffinity(0))))


#: what ``train_precision`` may say; "auto" is bf16 where the hardware has bf16 matrix units
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")


def resolve_train_precision(choice: str, device: str = "cpu") -> str:
    """"fp32" or "bf16" for fine-tuning on ``device``. Why bf16 where "auto": fine-tuning is most of
    a candidate's build, and mixed precision (bf16 matmuls and convolutions, FP32 weights, optimizer
    and loss) halved an InceptionTime training step on a CPU with AMX (0.81-0.91 s to 0.41-0.45 s).
    Without bf16 units (``amx_bf16`` on x86, a CUDA GPU that reports bf16) it would be emulated and
    slower, so "auto" stays FP32 there."""
    if choice not in TRAIN_PRECISIONS:
        raise ValueError(f"train precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {choice!r}")
    if choice != "auto":
        return choice
    if device == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if "amx_bf16" in machine()["flags"] else "fp32"


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
            outs.append(model(xb).cpu().numpy())
    return np.concatenate(outs)


def _val_loss(outputs: np.ndarray, y: np.ndarray) -> float:
    """Cross-entropy of class scores; +inf where the outputs are not scores of ``y``'s classes.

    Why: early stopping on the metric alone stalls once a small validation split saturates.
    digits (360 images) reached 99.72% (one error) at epoch 11 of a 60-epoch cosine schedule and
    kept that checkpoint, taken at a high learning rate: 98.33% on test, below every fine-tuned
    candidate (99.72%), which made compression look free. At an equal metric, the checkpoint with
    the lower validation loss is the better-trained one.
    """
    y = np.asarray(y)
    if outputs.ndim != 2 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(outputs) \
            or y.min() < 0 or y.max() >= outputs.shape[1]:
        return math.inf
    logits = torch.from_numpy(np.ascontiguousarray(outputs, dtype=np.float32))
    return float(nn.functional.cross_entropy(logits, torch.from_numpy(y.astype(np.int64))))


def fit(
    model: nn.Module,
    train: Split,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    loss: Loss | None = None,
    val: Split | None = None,
    metric: Metric | None = None,
    patience: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    steps_per_epoch: int | None = None,
    bf16: bool = False,
) -> FitReport:
    """Adam with cosine decay; with ``val`` and ``patience``, early stopping on the metric (at an
    equal metric, on the validation loss; see ``_val_loss``). ``steps_per_epoch`` (default: one
    pass over ``train``) sets an epoch's length in batches, drawn from fresh shuffles as needed.

    On ``device`` "cuda" the model trains on the GPU (the data stays in host memory and goes
    over batch by batch); the caller moves it back to the CPU for export. ``bf16``: the forward
    runs under bfloat16 autocast (see ``resolve_train_precision``); the loss is taken in FP32."""
    set_torch_threads()
    model.to(device)
    loss = loss or CrossEntropy()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(train.x))
    y_all = torch.from_numpy(np.ascontiguousarray(train.y))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = steps_per_epoch or math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    best_val, best_loss, best_epoch, best_state, stale = None, math.inf, 0, None, 0
    lowest_loss = math.inf
    epoch = 0
    for epoch in range(1, epochs + 1):
        _epoch(model, (x_all, y_all), _shuffled(len(train), steps_per_epoch * batch_size, gen),
               batch_size, loss, opt, sched, device, epoch, bf16)
        if val is not None and metric is not None and patience is not None:
            outputs = predict(model, val.x)
            score, tie_break = metric(outputs, val.y), _val_loss(outputs, val.y)
            better = best_val is None or (
                score > best_val if metric.higher_is_better else score < best_val
            ) or (score == best_val and tie_break < best_loss)
            if better:
                best_val, best_loss, best_epoch = score, tie_break, epoch
                best_state = copy.deepcopy(model.state_dict())
            # patience runs out only when neither the metric nor the loss improves any more
            stale = 0 if better or tie_break < lowest_loss else stale + 1
            lowest_loss = min(lowest_loss, tie_break)
            if stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitReport(epochs_run=epoch, best_epoch=best_epoch or epoch, best_val=best_val)


def _shuffled(n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """``length`` indices from back-to-back shuffles of ``range(n)``: every example once per pass."""
    passes = [torch.randperm(n, generator=gen) for _ in range(max(1, math.ceil(length / n)))]
    return torch.cat(passes)[:length] if len(passes) > 1 else passes[0][:length]


def _epoch(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], perm: torch.Tensor, batch_size: int,
           loss: Loss, opt, sched, device: str, epoch: int, bf16: bool = False) -> None:
    model.train()
    x_all, y_all = data
    for i in range(0, len(perm), batch_size):
        idx = perm[i : i + batch_size]
        if len(idx) < 2:  # BatchNorm cannot train on a single example
            continue
        x, y = x_all[idx].to(device), y_all[idx].to(device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(x)
        if bf16 and isinstance(outputs, torch.Tensor) and outputs.dtype == torch.bfloat16:
            outputs = outputs.float()  # the loss (and KD's soft targets) in FP32
        value = loss(model, x, y, outputs)
        if not torch.isfinite(value):
            raise FloatingPointError(f"training loss became {value.item()} at epoch {epoch}")
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()


def train_baseline(model: nn.Module, task: Task) -> FitReport:
    s = task.train_settings
    return fit(
        model,
        task.train,
        epochs=s.max_epochs,
        lr=s.lr,
        batch_size=s.batch_size,
        weight_decay=s.weight_decay,
        val=task.val,
        metric=task.metric,
        patience=s.patience,
        seed=s.seed,
        loss=TaskLoss(getattr(task, "loss", None)),
    )


#: A fine-tune epoch's length in optimizer steps is one pass over the training data clamped to
#: this range. Why: recovery from pruning takes steps, not passes. digits' 1078 images are 17
#: steps, and 4 such epochs left a 50%-pruned depthwise CNN 2-20 points short where 24 were
#: within 1.1; CDNOW's 14142 sequences are 221 steps, and 4 epochs of a d64 transformer cost
#: 60 s of a 180 s budget.
FINE_TUNE_STEPS = (64, 128)
#: the fine-tune's batch, whatever the baseline's: small batches recover a pruned model in fewer
#: examples, and the step range above is counted in these
FINE_TUNE_BATCH = 64


def fine_tune_steps(n_train: int, batch_size: int) -> int:
    """Steps per fine-tune epoch on ``n_train`` training examples: one pass, clamped."""
    low, high = FINE_TUNE_STEPS
    return min(high, max(low, math.ceil(n_train / batch_size)))


class FineTune(Pass):
    """The fine-tune after pruning / factorizing (and the QAT run); epochs 0 = none. An epoch is
    ``fine_tune_steps`` batches, not always one pass over the data (see FINE_TUNE_STEPS)."""

    name = "fine_tune"
    #: 12 and 24 epochs: what removing residual blocks needs. On fashion-mnist, two blocks
    #: removed and 50% pruned lost 1.65 points after 4 epochs, 0.75 after 12 and 0.39 after 24.
    genes = (
        Gene("epochs", (0, 1, 2, 4, 6, 12, 24), 0, Stage.TORCH,
             help="fine-tuning epochs (64-128 steps each)"),
        Gene("lr", (3e-4, 1e-3, 3e-3), 1e-3, Stage.TORCH, when=lambda c: c.epochs > 0,
             help="fine-tuning learning rate"),
    )
