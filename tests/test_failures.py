"""Failure isolation: broken candidates become FAIL trials with reasons; the search finishes."""

import torch
from torch import nn

from petra.config import load_config
from petra.exporters import Precision
from petra.models import Task
from petra.optimizer.genome import SearchSpace
from petra.optimizer.study import Study
from petra.runtimes.onnxruntime import GraphOpt
from tests.crashy import AbortingRuntime


class HardCodedWidth(nn.Module):
    """Works as trained, breaks once pruning changes its width (a hard-coded reshape)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).reshape(-1, 16 * 8 * 8))


class DivergesWhenTrained(nn.Module):
    """A trained model whose every training step diverges (what a fine-tune at a learning rate
    far too high looks like): no probe can see it, only building the candidate does."""

    def __init__(self, trained: nn.Module) -> None:
        super().__init__()
        self.net = trained

    def forward(self, x):
        out = self.net(x)
        return out * float("nan") if self.training else out


def test_a_pass_that_cannot_apply_leaves_before_the_search(tiny_task):
    """Pruning a hard-coded reshape used to fail candidate after candidate; the probe removes it."""
    from petra.optimizer.space import assemble

    task = Task("hardcoded", HardCodedWidth, tiny_task.train, tiny_task.val, tiny_task.test)
    space, removed = assemble(task, task.architecture(), ("onnxruntime",), 1)
    assert space.prune_ratio == (0.0,) and "pruning 50%" in dict(removed)["prune_ratio"]


def test_candidates_that_break_are_recorded_and_the_search_finishes(tiny_task, tiny_teacher, tmp_path):
    task = Task("diverges", model=DivergesWhenTrained(tiny_teacher), train=tiny_task.train,
                val=tiny_task.val, test=tiny_task.test)
    space = SearchSpace(prune_ratio=(0.0, 0.5), round_to=(1,), epochs=(0, 1), lr=(3e-3,),
                        precision=(Precision.FP32, Precision.INT8_STATIC), threads=(1,))
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      generations=1, population=4, time_budget=300, output=tmp_path, max_threads=1,
                      multi_fidelity=False)
    results = Study(cfg, task=task, space=space, log=lambda s: None).run()
    failed = [t for t in results["all_trials"] if t["state"] == "FAIL"]
    assert failed, "a fine-tune that diverges must fail its candidates"
    assert all("nan" in t["reason"] and t["config"]["epochs"] > 0 for t in failed)
    assert results["status"] == "complete" and results["best"] is not None
    assert results["failed"] == len(failed) < results["trials"]


def test_a_runtime_that_aborts_the_process_fails_only_its_trials(tiny_task, tmp_path):
    # every candidate at BASIC (the baseline is measured at ALL): no population can miss it; with
    # settings as genes, so that BASIC is a trial's own setting (a screen's crash is in profilers)
    space = SearchSpace(prune_ratio=(0.0,), epochs=(0,), precision=(Precision.FP32, Precision.INT8_STATIC),
                        graph_opt=(GraphOpt.BASIC,), threads=(1,))
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1, screen_settings=False,
                      generations=1, population=4, time_budget=300, output=tmp_path, max_threads=1)
    study = Study(cfg, task=tiny_task, space=space, log=lambda s: None)
    study.runtime = AbortingRuntime()
    study.runtimes = {"onnxruntime": study.runtime}  # candidates name "onnxruntime": this one answers
    results = study.run()
    crashed = [t for t in results["all_trials"] if t["state"] == "FAIL"]
    assert crashed and all(t["config"]["graph_opt"] == "basic" for t in crashed)
    assert all("SIGABRT" in t["reason"] for t in crashed), [t["reason"] for t in crashed]
    assert results["status"] == "complete"
    assert results["baseline"]["config"]["graph_opt"] == "all"
