import sys

import numpy as np
import pytest

from petra.errors import ConfigError
from petra.models import Task, get_task, task_names
from petra.models.digits import load_digits_splits


def test_digits_splits_are_real_stratified_and_disjoint():
    train, val, test = load_digits_splits()
    assert (len(train), len(val), len(test)) == (1078, 359, 360)
    assert train.x.shape[1:] == (1, 8, 8) and train.x.dtype == np.float32
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0
    for split in (train, val, test):
        assert set(np.unique(split.y)) == set(range(10))
    flat = {row.tobytes() for row in test.x}
    assert sum(row.tobytes() in flat for row in train.x) < 10  # sklearn digits has few duplicates


def test_task_registry():
    assert "digits" in task_names()
    assert get_task("digits").name == "digits"
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        get_task("nope")


def test_user_task_from_module(tmp_path, monkeypatch):
    (tmp_path / "my_tasks.py").write_text(
        "from petra.models.digits import digits_task\n"
        "def make(): return digits_task(width=4)\n"
        "def wrong(): return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert isinstance(get_task("my_tasks:make"), Task)
    with pytest.raises(ConfigError, match="expected a petra Task"):
        get_task("my_tasks:wrong")
    with pytest.raises(ConfigError, match="cannot load task"):
        get_task("my_tasks:missing")
    sys.modules.pop("my_tasks", None)


def test_baseline_is_cached_by_content(tiny_task, tiny_teacher):
    again = tiny_task.baseline(log=lambda s: None)
    for a, b in zip(again.state_dict().values(), tiny_teacher.state_dict().values()):
        assert (a == b).all()
    assert tiny_task.content_hash() == tiny_task.content_hash()
