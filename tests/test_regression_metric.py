"""A lower-is-better metric end to end: MSE on a real time-series regression set.

Tecator (the UEA/UCR regression archive, shipped inside sktime): near-infrared absorbance
spectra of meat samples, 100 wavelengths each; the target is the fat content. A small MLP is
trained here on MSE (the task's model is given trained, as a user's would be), and the search
varies post-training quantization and untrained pruning. Before the fix, the fitness maximised
the raw MSE: the front kept the worse-error candidates and dropped the accurate ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from petra.config import load_config
from petra.exporters import Precision, QuantExclude
from petra.models.base import Metric, Split, Task
from petra.optimizer.genome import SearchSpace
from petra.optimizer.study import run_study

sktime_datasets = pytest.importorskip("sktime.datasets")

MSE = Metric("mse", lambda out, y: float(((np.asarray(out).reshape(-1) - y) ** 2).mean()),
             higher_is_better=False)
MAX_DROP = 0.3  # in MSE of the standardised fat content: INT8 and pruning cost 0.03-0.5


def tecator_splits(seed: int = 0) -> tuple[Split, Split, Split]:
    """Official train split into train/val (3:1), official test as test; inputs standardised
    per wavelength and the target by the train split's mean and deviation."""
    parts = [sktime_datasets.load_UCR_UEA_dataset("Tecator", split=s, return_type="numpy3D")
             for s in ("train", "test")]
    (x_tr, y_tr), (x_te, y_te) = [(x[:, 0, :].astype(np.float32), y.astype(np.float32)) for x, y in parts]
    idx = np.random.default_rng(seed).permutation(len(x_tr))
    n_val = len(idx) // 4
    val_idx, tr_idx = idx[:n_val], idx[n_val:]
    mu, sd = x_tr[tr_idx].mean(0), x_tr[tr_idx].std(0) + 1e-6
    ymu, ysd = y_tr[tr_idx].mean(), y_tr[tr_idx].std()

    def split(x, y):
        return Split(((x - mu) / sd).astype(np.float32), ((y - ymu) / ysd).astype(np.float32))

    return split(x_tr[tr_idx], y_tr[tr_idx]), split(x_tr[val_idx], y_tr[val_idx]), split(x_te, y_te)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(100, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))


class TrainedRegression(Task):
    """The model comes trained on MSE (the study's baseline training assumes class scores)."""

    def baseline(self, cache_dir=None, log=print) -> nn.Module:
        torch.manual_seed(0)
        model = mlp()
        x, y = torch.from_numpy(self.train.x), torch.from_numpy(self.train.y)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        for _ in range(400):
            opt.zero_grad()
            nn.functional.mse_loss(model(x)[:, 0], y).backward()
            opt.step()
        return model.eval()


@pytest.fixture(scope="module")
def tecator_task() -> Task:
    train, val, test = tecator_splits()
    return TrainedRegression("tecator-mlp", mlp, train, val, test, metric=MSE)


SPACE = SearchSpace(
    prune_ratio=(0.0, 0.25, 0.5, 0.75), round_to=(1,), epochs=(0,), lowrank_ratio=(0.0,), qat=(False,),
    precision=(Precision.FP32, Precision.INT8_STATIC, Precision.INT8_DYNAMIC), threads=(1,),
    quant_exclude=(QuantExclude.NONE,),
)


@pytest.fixture(scope="module")
def regression_run(tecator_task, tmp_path_factory):
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1, generations=2, population=6,
                      time_budget=90,
                      max_drop=MAX_DROP, output=tmp_path_factory.mktemp("tecator"), max_threads=1)
    return run_study(cfg, task=tecator_task, space=SPACE)


def test_baseline_is_a_real_regressor(regression_run):
    """Worth compressing: far better than predicting the mean (MSE 1 on a standardised target)."""
    assert regression_run["baseline"]["metric"]["name"] == "mse"
    assert regression_run["baseline"]["metric"]["val"] < 0.3


def test_feasibility_uses_the_drop_in_the_metric_s_direction(regression_run):
    """A candidate is INFEASIBLE exactly when its MSE exceeds the baseline's by more than
    max_drop; a lower MSE is a negative drop, and feasible."""
    base = regression_run["baseline"]["metric"]["val"]
    measured = [e for e in regression_run["all_trials"] if e["metric"]["val"] is not None]
    assert any(e["state"] == "INFEASIBLE" for e in measured)  # pruning without fine-tune hurts
    for e in measured:
        mse, drop = e["metric"]["val"], e["metric"]["drop_val"]
        assert drop == pytest.approx(mse - base)
        if e["state"] in ("COMPLETE", "INFEASIBLE"):
            assert (e["state"] == "INFEASIBLE") == (drop > MAX_DROP), e
        if mse < base:
            assert e["state"] != "INFEASIBLE"


def test_the_front_keeps_the_lowest_error(regression_run):
    """Lower MSE is better: the feasible trial of least error is on the front (nothing feasible
    has a lower drop), no front member has more error than a trial that is also no slower and
    no larger, and the fitness of a lower MSE is the higher one."""
    feasible = [e for e in regression_run["all_trials"] if e["state"] == "COMPLETE"]
    front = regression_run["pareto"]
    assert len(feasible) >= 2 and front
    assert min(e["metric"]["val"] for e in front) == pytest.approx(min(e["metric"]["val"] for e in feasible))
    for f in front:
        for o in feasible:
            assert not (o["metric"]["val"] < f["metric"]["val"]
                        and o["latency_ms"]["p50"] <= f["latency_ms"]["p50"]
                        and o["size_bytes"] <= f["size_bytes"]), (f["trial"], o["trial"])
    assert regression_run["best"]["metric"]["drop_val"] <= MAX_DROP


def test_a_regression_task_fine_tunes_and_distils_on_its_own_loss(tecator_task):
    """``Task.loss``: a pruned regressor recovers under distillation with the task's MSE (before
    it, fine-tuning hard-wired cross-entropy, which fails on float targets)."""
    import copy
    import dataclasses

    import torch.nn.functional as F

    from petra.compression.pruning import StructuredPruning
    from petra.compression.regularizers import Distillation, TaskLoss
    from petra.compression.training import fit, predict

    task = dataclasses.replace(tecator_task, loss=lambda out, y: F.mse_loss(out[:, 0], y))
    teacher = task.baseline()
    model = StructuredPruning.prune(copy.deepcopy(teacher), task.example_input, ratio=0.75, round_to=1)
    before = MSE(predict(model, task.val.x), task.val.y)
    fit(model, task.train, epochs=30, lr=1e-3, batch_size=32,
        loss=Distillation(teacher, 0.5, task_loss=TaskLoss(task.loss)))
    after = MSE(predict(model, task.val.x), task.val.y)
    assert after < 0.5 * before
