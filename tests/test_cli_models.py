"""CLI paths of the task zoo: `petra models`, user task files, the ONNX-only flags."""


import numpy as np
import pytest

from tests.test_cli import _one_line_error, petra


def test_models_lists_sizes_and_parameters():
    proc = petra("models", "ucr-ArrowHead", "cdnow")
    assert proc.returncode == 0, proc.stderr
    assert "ucr-ArrowHead" in proc.stdout and "126" in proc.stdout  # 60% of 211 series
    assert "cdnow" in proc.stdout and "14142" in proc.stdout  # 60% of 23,570 customers
    _one_line_error(petra("models", "nope"), "unknown task 'nope'")


@pytest.mark.parametrize("body, words", [
    ("def make_task():\n    raise FileNotFoundError('my data is gone')\n", ["raised FileNotFoundError"]),
    ("def make_task():\n    return {'model': None}\n", ["returned dict", "petra Task"]),
])
def test_bad_user_task_file_is_one_line(tmp_path, body, words):
    f = tmp_path / "task.py"
    f.write_text(body)
    _one_line_error(petra("optimize", "--task", f"{f}:make_task", "--output", str(tmp_path / "o")), *words)


def test_onnx_flags_need_each_other_and_real_files(tmp_path, tiny_onnx):
    _one_line_error(petra("optimize", "--onnx", str(tiny_onnx.path), "--output", str(tmp_path / "o")),
                    "--onnx and --data")
    data = tmp_path / "d.npz"
    np.savez(data, inputs=np.zeros((10, 1, 8, 8), np.float32))
    _one_line_error(petra("optimize", "--onnx", str(tiny_onnx.path), "--data", str(data),
                          "--output", str(tmp_path / "o")), "no array 'x'")
