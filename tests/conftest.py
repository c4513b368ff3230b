"""Shared fixtures: tiny real models on real data (sklearn digits), fixed seeds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from petra.config import load_config
from petra.exporters import Precision, QuantExclude, export_onnx
from petra.models.digits import digits_task
from petra.optimizer.genome import SearchSpace
from petra.optimizer.study import Study


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Baselines trained by the tests live in a per-session cache, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PETRA_CACHE_DIR", str(tmp_path_factory.mktemp("petra-cache")))
    torch.manual_seed(0)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_task():
    """The digits task with an 8/16-channel residual CNN: trains to ~97% in seconds."""
    return digits_task(width=8)


@pytest.fixture(scope="session")
def tiny_teacher(tiny_task):
    return tiny_task.baseline(log=lambda s: None)


@pytest.fixture
def tiny_model(tiny_teacher):
    return copy.deepcopy(tiny_teacher)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_task, tiny_teacher, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(copy.deepcopy(tiny_teacher), tiny_task.example_input, path)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


TINY_SPACE = SearchSpace(
    prune_ratio=(0.0, 0.5), round_to=(1, 4), epochs=(0, 2), lr=(3e-3,),
    precision=(Precision.FP32, Precision.INT8_STATIC, Precision.INT8_DYNAMIC), threads=(1,),
    lowrank_ratio=(0.0,), qat=(False,), quant_exclude=(QuantExclude.NONE,),  # tested on their own
)


@pytest.fixture(scope="session")
def tiny_run(tiny_task, tmp_path_factory):
    """One whole tiny search shared by the tests that read a finished run."""
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(final_sessions=2, final_max_sessions=2,
                      generations=2, population=4, time_budget=120, output=out, max_threads=1)
    logs = []
    results = Study(cfg, task=tiny_task, space=TINY_SPACE, log=logs.append).run()
    return out, results, logs
