"""The README's user-task example: loads from its file path and survives a real tiny search."""

from pathlib import Path

import pytest

from petra.config import load_config
from petra.exporters import Precision
from petra.models import Task, get_task
from petra.optimizer.genome import SearchSpace
from petra.optimizer.study import Study

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "user_task.py"


def test_readme_shows_the_example_command():
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    assert "petra optimize --task examples/user_task.py:make_task" in readme


@pytest.mark.slow
def test_user_task_example_searches(tmp_path):
    task = get_task(f"{EXAMPLE}:make_task")
    assert isinstance(task, Task) and task.metric.name == "balanced_accuracy"
    assert (len(task.train), len(task.val), len(task.test)) == (341, 114, 114)
    task.baseline(log=lambda s: None)
    space = SearchSpace(prune_ratio=(0.0, 0.5), round_to=(8,), epochs=(0, 2), lr=(1e-3,),
                        precision=(Precision.FP32, Precision.INT8_DYNAMIC), threads=(1,))
    cfg = load_config(final_sessions=2, final_max_sessions=2, search_sessions=1,
                      generations=1, population=4, time_budget=18, output=tmp_path, max_threads=1,
                      max_drop=5.0)
    results = Study(cfg, task=task, space=space, log=lambda s: None).run()
    assert results["baseline"]["metric"]["val"] > 90  # an MLP separates these tumours well
    assert results["best"]["metric"]["drop_val"] <= 5.0
    assert (tmp_path / "best" / "model.onnx").is_file()
