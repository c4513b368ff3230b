"""A trained model handed in: as a module, as a checkpoint, through ``petra.optimize``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import petra
from petra.errors import ConfigError
from petra.models.base import Split, Task
from petra.models.digits import DigitsResNet, load_digits_splits


@pytest.fixture(scope="module")
def trained(tiny_teacher):
    return copy.deepcopy(tiny_teacher)


def test_a_trained_module_is_the_baseline_as_given(trained, tiny_task):
    task = Task(name="given", model=trained, train=tiny_task.train, val=tiny_task.val, test=tiny_task.test)
    logs: list[str] = []
    base = task.baseline(log=logs.append)
    assert any("not retrained" in line for line in logs)
    for a, b in zip(base.state_dict().values(), trained.state_dict().values()):
        assert torch.equal(a, b)  # the same weights, never trained further
    assert base is not trained  # a copy: the search never touches the user's module


def test_a_checkpoint_loads_into_build_model(trained, tiny_task, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    task = Task("ckpt", lambda: DigitsResNet(8), tiny_task.train, tiny_task.val, tiny_task.test, weights=path)
    assert task.trained
    x = torch.from_numpy(tiny_task.val.x[:8])
    with torch.no_grad():
        torch.testing.assert_close(task.baseline(log=lambda s: None)(x), trained(x))
    wrong = Task("wrong", lambda: DigitsResNet(16), tiny_task.train, tiny_task.val, tiny_task.test,
                 weights=path)
    with pytest.raises(ConfigError, match="cannot load the checkpoint") as err:
        wrong.baseline(log=lambda s: None)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "either model= .* or build_model="),
    ({"model": "not a module"}, "must be a torch.nn.Module"),
    ({"build_model": DigitsResNet, "weights": "missing.pt"}, "no such checkpoint"),
    ({"model": DigitsResNet(), "build_model": DigitsResNet}, "not both"),
])
def test_bad_task_arguments_are_one_line_config_errors(kwargs, message, tiny_task):
    with pytest.raises(ConfigError, match=message):
        Task("bad", train=tiny_task.train, val=tiny_task.val, test=tiny_task.test, **kwargs)


def test_splits_from_loaders_and_arrays():
    train, _, _ = load_digits_splits()
    loader = DataLoader(TensorDataset(torch.from_numpy(train.x), torch.from_numpy(train.y)), batch_size=50)
    a, b = Split.of(loader), Split.of((train.x, train.y))
    assert np.array_equal(a.x, train.x) and np.array_equal(b.y, train.y)
    with pytest.raises(ConfigError, match="DataLoader"):
        Split.of(3, "val")


@pytest.mark.slow
def test_optimize_a_trained_model_from_python(trained, tiny_task, tmp_path):
    loaders = [DataLoader(TensorDataset(torch.from_numpy(s.x), torch.from_numpy(s.y)), batch_size=64)
               for s in (tiny_task.train, tiny_task.val, tiny_task.test)]
    logs: list[str] = []
    results = petra.optimize(trained, train=loaders[0], val=loaders[1], test=loaders[2], name="mine",
                             time_budget=20, generations=1, population=4, max_threads=1,
                             final_sessions=1, final_max_sessions=1, search_sessions=1, output=tmp_path,
                             log=logs.append)
    assert results["task"] == "mine" and results["status"] == "complete"
    assert not any("training" in line and "convergence" in line for line in logs)  # never retrained
    with torch.no_grad():
        outputs = trained(torch.from_numpy(tiny_task.val.x)).numpy()
    expected = petra.api.as_metric(None)(outputs, tiny_task.val.y)
    assert results["baseline"]["metric"]["val"] == pytest.approx(expected, abs=0.6)
