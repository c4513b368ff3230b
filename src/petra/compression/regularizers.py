"""Training losses: cross-entropy plus the regularizers the genome can switch on.

Each regularizer is a small class with one ``__call__`` so the fine-tuning loop stays one loop:
knowledge distillation from the FP32 teacher (Hinton et al., soft targets at temperature T) and
L1 sparsity on BatchNorm scales (network slimming), which pushes whole channels towards zero
before pruning removes them, so that less accuracy is lost at the cut.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import Enum
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from petra.genes import Gene, Pass, Stage


class Regularizer(str, Enum):
    NONE = "none"
    L1 = "l1"  # L1 sparsity on BatchNorm scales before pruning
    KD = "kd"  # knowledge distillation from the FP32 teacher


class Loss(Protocol):
    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor: ...


class TaskLoss:
    """The task's own loss on (outputs, targets): ``Task.loss``, cross-entropy on class scores
    when the task gives none. A regression task that said nothing would be fine-tuned with
    cross-entropy on float targets, which fails."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.fn = fn

    @property
    def classes(self) -> bool:
        return self.fn is None

    def __call__(self, model, x, y, logits):
        return F.cross_entropy(logits, y) if self.fn is None else self.fn(logits, y)


class CrossEntropy(TaskLoss):
    def __init__(self) -> None:
        super().__init__(None)


class TeacherOutputs:
    """The teacher's outputs, each training example's computed once and kept for every later
    fine-tune in this process. Why: the teacher and the training data are the same for every
    candidate of a run, and there is no augmentation, so its forward pass on a batch is a pure
    function of the rows; recomputing it made each KD step cost a teacher forward beside the
    student's forward and backward. Rows are keyed by their bytes' hash, so any batch
    finds the rows an earlier fine-tune computed, whatever order it drew them in."""

    #: outputs kept at most (floats): past it, new rows are computed each time, never stored
    MAX_FLOATS = 64 * 1024 * 1024

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher.eval()
        self.memo: dict[bytes, torch.Tensor] = {}
        self.stored = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().cpu().contiguous().numpy()
        keys = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]
        missing = [i for i, k in enumerate(keys) if k not in self.memo]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            with torch.no_grad():
                out = self.teacher(x[missing] if len(missing) < len(keys) else x).cpu()
            for i, o in zip(missing, out):
                fresh[i] = o
                if self.stored + o.numel() <= self.MAX_FLOATS:
                    self.memo[keys[i]] = o
                    self.stored += o.numel()
        return torch.stack([fresh[i] if i in fresh else self.memo[k]
                            for i, k in enumerate(keys)]).to(x.device)


class Distillation:
    """(1 - alpha) * task loss + alpha * soft loss. For class scores the soft loss is
    T^2 * KL(student_T || teacher_T); for any other output (a task with its own loss, e.g. a
    regression) it is the mean squared distance to the teacher's outputs. ``teacher`` is the
    model, or its ``TeacherOutputs`` shared between the fine-tunes of a run."""

    def __init__(self, teacher: nn.Module | TeacherOutputs, alpha: float, temperature: float = 4.0,
                 task_loss: TaskLoss | None = None) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distillation weight must be in [0, 1], got {alpha}")
        self.teacher = teacher if isinstance(teacher, TeacherOutputs) else TeacherOutputs(teacher)
        self.alpha = alpha
        self.t = temperature
        self.task_loss = task_loss or CrossEntropy()

    def __call__(self, model, x, y, logits):
        teacher_logits = self.teacher(x)
        if self.task_loss.classes:
            soft = F.kl_div(F.log_softmax(logits / self.t, dim=1), F.softmax(teacher_logits / self.t, dim=1),
                            reduction="batchmean") * (self.t**2)
        else:
            soft = F.mse_loss(logits, teacher_logits)
        return (1.0 - self.alpha) * self.task_loss(model, x, y, logits) + self.alpha * soft


class BNSparsity:
    """task loss + lambda * sum |gamma| over BatchNorm scales (network slimming)."""

    def __init__(self, lam: float, task_loss: TaskLoss | None = None) -> None:
        self.lam = lam
        self.task_loss = task_loss or CrossEntropy()

    def __call__(self, model, x, y, logits):
        bns = (m for m in model.modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d))
        l1 = sum(m.weight.abs().sum() for m in bns)
        return self.task_loss(model, x, y, logits) + self.lam * l1


class Regularization(Pass):
    """What the fine-tune's loss adds to the task loss: distillation or BN-scale sparsity."""

    name = "regularization"
    genes = (
        Gene("regularizer", tuple(Regularizer), Regularizer.NONE, Stage.TORCH,
             when=lambda c: c.epochs > 0, help="distillation (kd) or BN-scale sparsity (l1)"),
        Gene("reg_weight", (0.25, 0.5, 0.75, 0.9), 0.5, Stage.TORCH,
             when=lambda c: c.regularizer is not Regularizer.NONE,
             help="weight of the regularizer in the loss"),
    )

    def narrow(self, model, example) -> dict[str, tuple[tuple, str]]:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            return {}
        return {"regularizer": ((Regularizer.NONE, Regularizer.KD),
                                "l1 sparsity acts on BatchNorm scales; the model has no BatchNorm")}
