"""Shared fixtures: tiny real models on real data (sklearn digits), fixed seeds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from petra.exporters import export_onnx
from petra.models.digits import digits_task


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
