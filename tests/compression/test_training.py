import copy

import pytest
import torch

from petra.compression.pruning import Importance, prune
from petra.compression.regularizers import BNSparsity, CrossEntropy, Distillation
from petra.compression.training import (
    FINE_TUNE_STEPS,
    fine_tune_steps,
    fit,
    predict,
    resolve_train_precision,
)
from petra.profilers.fingerprint import machine


def test_baseline_is_converged_on_real_data(tiny_task, tiny_teacher):
    acc = tiny_task.metric(predict(tiny_teacher, tiny_task.test.x), tiny_task.test.y)
    assert acc > 90.0  # an 8-channel ResNet reaches ~97% on sklearn digits


def test_losses_are_finite_and_distillation_uses_teacher(tiny_task, tiny_teacher, tiny_model):
    x = torch.from_numpy(tiny_task.train.x[:16])
    y = torch.from_numpy(tiny_task.train.y[:16])
    logits = tiny_model(x)
    ce = CrossEntropy()(tiny_model, x, y, logits)
    pure_kd = Distillation(tiny_teacher, alpha=1.0)(tiny_model, x, y, logits)
    # the student is a copy of the teacher: pure distillation loss is ~0, CE is not
    assert pure_kd.item() == pytest.approx(0.0, abs=1e-4)
    assert ce.item() > 0
    l1 = BNSparsity(1e-3)(tiny_model, x, y, logits)
    assert l1.item() > ce.item()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Distillation(tiny_teacher, alpha=1.5)


def test_finetune_recovers_pruned_accuracy(tiny_task, tiny_teacher, tiny_model):
    prune(tiny_model, tiny_task.example_input, ratio=0.5, importance=Importance.L2, round_to=1)
    pruned_acc = tiny_task.metric(predict(tiny_model, tiny_task.val.x), tiny_task.val.y)
    fit(tiny_model, tiny_task.train, epochs=4, lr=3e-3, loss=Distillation(tiny_teacher, 0.5))
    tuned_acc = tiny_task.metric(predict(tiny_model, tiny_task.val.x), tiny_task.val.y)
    assert tuned_acc > pruned_acc and tuned_acc > 80.0


def test_early_stopping_restores_best(tiny_task, tiny_teacher):
    model = copy.deepcopy(tiny_teacher)
    report = fit(model, tiny_task.train, epochs=30, lr=3e-2, val=tiny_task.val,
                 metric=tiny_task.metric, patience=2)
    acc = tiny_task.metric(predict(model, tiny_task.val.x), tiny_task.val.y)
    assert report.epochs_run <= 30 and acc == pytest.approx(report.best_val)


def test_at_an_equal_metric_the_lower_validation_loss_wins(tiny_task, tiny_model):
    import math

    import numpy as np

    from petra.compression.training import _val_loss
    from petra.models.base import Metric

    assert _val_loss(np.zeros((2, 2), np.float32), np.array([0, 1])) == pytest.approx(math.log(2))
    assert _val_loss(np.zeros((2, 1), np.float32), np.array([0, 3])) == math.inf  # not class scores
    # a saturated metric (the same score every epoch) used to keep epoch 1 and stop after
    # `patience` epochs; the checkpoint is now the one of lowest validation loss
    losses = []

    class Spy(Metric):
        def __call__(self, outputs, targets):
            losses.append(_val_loss(outputs, targets))
            return 100.0

    spy = Spy("flat", lambda out, y: 100.0)
    report = fit(tiny_model, tiny_task.train, epochs=5, lr=3e-4, val=tiny_task.val, metric=spy, patience=1)
    assert report.best_epoch == 1 + int(np.argmin(losses))
    kept = _val_loss(predict(tiny_model, tiny_task.val.x), tiny_task.val.y)
    assert kept == pytest.approx(min(losses), rel=1e-5)
    # patience counts epochs in which neither the metric nor the loss improved
    assert report.epochs_run == len(losses) and (report.epochs_run == 5 or losses[-1] > min(losses))


def test_fine_tune_epoch_is_clamped_in_steps():
    # digits (1078 images) is 17 batches: floored; CDNOW (14142) is 221: capped
    assert fine_tune_steps(1078, 64) == FINE_TUNE_STEPS[0]
    assert fine_tune_steps(14142, 64) == FINE_TUNE_STEPS[1]
    assert fine_tune_steps(6000, 64) == 94


def test_an_epoch_of_set_steps_draws_that_many_batches(tiny_task, tiny_model):
    seen = []
    tiny_model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])) if m.training else None)
    fit(tiny_model, tiny_task.train, epochs=2, lr=1e-3, batch_size=64, steps_per_epoch=40)
    assert len(seen) == 80 and set(seen) == {64}  # 40 full batches per epoch, past one pass


def test_bf16_fine_tune_recovers_pruned_accuracy_with_fp32_weights(tiny_task, tiny_teacher, tiny_model):
    """The autocast really runs (other weights than the FP32 fine-tune's from the same seed), the
    weights and what the model then computes stay FP32, and the pruned model still recovers."""
    prune(tiny_model, tiny_task.example_input, ratio=0.5, importance=Importance.L2, round_to=1)
    pruned_acc = tiny_task.metric(predict(tiny_model, tiny_task.val.x), tiny_task.val.y)
    fp32 = copy.deepcopy(tiny_model)
    for model, bf16 in ((fp32, False), (tiny_model, True)):
        fit(model, tiny_task.train, epochs=4, lr=3e-3, loss=Distillation(tiny_teacher, 0.5), bf16=bf16)
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(fp32.parameters(), tiny_model.parameters()))
    outputs = predict(tiny_model, tiny_task.val.x)
    assert outputs.dtype == "float32"
    tuned_acc = tiny_task.metric(outputs, tiny_task.val.y)
    assert tuned_acc > pruned_acc and tuned_acc > 80.0


def test_train_precision_auto_follows_the_bf16_units():
    has_units = "amx_bf16" in machine()["flags"]
    assert resolve_train_precision("auto") == ("bf16" if has_units else "fp32")
    assert resolve_train_precision("fp32") == "fp32" and resolve_train_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolve_train_precision("fp16")
