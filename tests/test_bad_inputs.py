"""Whatever a user gets wrong, `petra` answers with one line on stderr that names the fix and
exit code 2: never a traceback. One table of bad inputs (config, flags, task files, user models
and metrics, data files, run folders, artifacts), each given to the CLI's entry point
``petra.cli.main`` with the process's stdout and stderr captured at the file descriptors (what a
terminal would show); in-process, so the table costs its cases' work, not 30 interpreter starts.
The case the issue started from also runs as a real ``petra`` process."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

#: a user task file's first lines: a tiny model on the digits data that trains in a second
TASK_HEAD = """
import numpy as np
import torch
from dataclasses import replace
from torch import nn
from petra.models.base import Metric, Split, Task, TrainSettings
from petra.models.digits import digits_task

def tiny(model=lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), **changes):
    return replace(digits_task(width=8), name="tiny-user-task", build_model=model,
                   train_settings=TrainSettings(max_epochs=2, patience=1), **changes)
"""


def task_file(d: Path, body: str) -> str:
    path = d / "my_task.py"
    path.write_text(TASK_HEAD + textwrap.dedent(body))
    return f"{path}:make_task"


def npz(d: Path, **arrays) -> str:
    path = d / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def text(path: Path, content: str) -> str:
    path.write_text(content)
    return str(path)


def optimize(*args):
    return ["optimize", "--time-budget", "60", "--generations", "1", "--population", "2", *args]


#: an OpenVINO IR graph (x -> Result) without its .bin: what a user copies half of
IR_XML = """<?xml version="1.0"?>
<net name="m" version="11"><layers>
<layer id="0" name="x" type="Parameter" version="opset1"><data shape="?,1,8,8" element_type="f32"/>
<output><port id="0" precision="FP32" names="x"><dim>-1</dim><dim>1</dim><dim>8</dim><dim>8</dim></port>
</output></layer>
<layer id="1" name="r" type="Result" version="opset1"><input><port id="0" precision="FP32"><dim>-1</dim>
<dim>1</dim><dim>8</dim><dim>8</dim></port></input></layer>
</layers><edges><edge from-layer="0" from-port="0" to-layer="1" to-port="0"/></edges></net>
"""


# name -> (arguments given the case's folder and a small valid ONNX model, words the line holds)
CASES = {
    # the configuration and the flags
    "yaml unknown key": (lambda d, m: optimize("--config", text(d / "c.yaml", "generationz: 3\n")),
                         ["generationz", "not a known key"]),
    "yaml invalid": (lambda d, m: optimize("--config", text(d / "c.yaml", "generations: [1, 2\n")),
                     ["c.yaml"]),
    "generations 0": (lambda d, m: optimize("--generations", "0"), ["generations"]),
    "batch -4": (lambda d, m: optimize("--batch", "-4"), ["batch"]),
    "generations not a number": (lambda d, m: optimize("--generations", "abc"), ["--generations"]),
    "unknown flag": (lambda d, m: optimize("--speed", "max"), ["--speed"]),
    "unknown command": (lambda d, m: ["frobnicate"], ["frobnicate"]),
    "unknown task": (lambda d, m: optimize("--task", "imagenet-nope"), ["unknown task", "digits"]),
    "unknown runtime": (lambda d, m: optimize("--runtime", "tflite"), ["unknown runtime"]),
    "unwritable output": (lambda d, m: ["optimize", "--output", str(Path(text(d / "f", "x")) / "sub")],
                          ["--output"]),
    # the user's task file, model, data loader and metric
    "missing task file": (lambda d, m: optimize("--task", f"{d / 'nope.py'}:make_task"),
                          ["no such task file"]),
    "task file syntax error": (lambda d, m: optimize("--task", task_file(d, "def make_task(:\n")),
                               ["SyntaxError"]),
    "task factory returns a dict": (
        lambda d, m: optimize("--task", task_file(d, "def make_task():\n    return {}\n")),
        ["returned dict", "petra Task"]),
    "task factory raises": (
        lambda d, m: optimize("--task", task_file(d, "def make_task():\n    raise KeyError('gone')\n")),
        ["raised KeyError", "task factory"]),
    "loader yields dicts": (lambda d, m: optimize("--task", task_file(d, """
        def make_task():
            from torch.utils.data import DataLoader
            rows = [{"x": np.zeros((1, 8, 8), np.float32), "y": 0}] * 4
            split = Split.from_loader(DataLoader(rows, batch_size=2))
            return tiny(train=split)
        """)), ["(inputs, targets) pairs"]),
    "metric raises": (lambda d, m: optimize("--task", task_file(d, """
        def broken(outputs, targets):
            raise ValueError("my metric broke")

        def make_task():
            return tiny(metric=Metric("mine", broken))
        """)), ["metric 'mine'", "ValueError: my metric broke", "petra.log"]),
    "model outputs NaN": (lambda d, m: optimize("--task", task_file(d, """
        class NaNs(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, 10)

            def forward(self, x):
                return self.fc(x.flatten(1)) * float("nan")

        def make_task():
            return tiny(model=NaNs)
        """)), ["NaN or Inf", "validation inputs"]),
    "model forward raises": (lambda d, m: optimize("--task", task_file(d, """
        def make_task():  # 63 inputs where the data has 64
            return tiny(model=lambda: nn.Sequential(nn.Flatten(), nn.Linear(63, 10)))
        """)), ["mat1 and mat2 shapes cannot be multiplied"]),
    # an ONNX model and its .npz
    "corrupt onnx": (lambda d, m: optimize("--onnx", text(d / "junk.onnx", "not a model"),
                                           "--data", npz(d, x=np.zeros((16, 1, 8, 8), np.float32))),
                     ["not an ONNX model"]),
    "npz without x": (lambda d, m: optimize("--onnx", m, "--data", npz(d, inputs=np.zeros((16, 1, 8, 8)))),
                      ["no array 'x'"]),
    "npz of the wrong rank": (lambda d, m: optimize("--onnx", m, "--data", npz(d, x=np.zeros((16, 64)))),
                              ["(batch, 1, 8, 8)", "(16, 64)"]),
    "npz of the wrong width": (lambda d, m: optimize("--onnx", m, "--data",
                                                     npz(d, x=np.zeros((16, 1, 7, 8)))),
                               ["(batch, 1, 8, 8)", "(16, 1, 7, 8)"]),
    "data is not an npz": (lambda d, m: optimize("--onnx", m, "--data", text(d / "d.npz", "1,2,3")),
                           ["cannot read", ".npz"]),
    "onnx without data": (lambda d, m: optimize("--onnx", m), ["--onnx and --data"]),
    # run folders
    "resume a missing run": (lambda d, m: ["resume", str(d / "never-ran")], ["study.db"]),
    "show corrupt results.json": (lambda d, m: ["show", str(Path(text(d / "results.json", "{oops")).parent)],
                                  ["not valid JSON"]),
    "show results.json of another program": (
        lambda d, m: ["show", str(Path(text(d / "results.json", "[1, 2]")).parent)],
        ["results.json", "petra optimize"]),
    "report a missing run": (lambda d, m: ["report", str(d / "never-ran")], ["results.json"]),
    # artifacts for `petra bench`
    "bench lone xml": (lambda d, m: ["bench", text(d / "model.xml", IR_XML), "--runtime", "openvino"],
                       ["model.bin"]),
    "bench threads 0": (lambda d, m: ["bench", m, "--threads", "0"], ["--threads"]),
    "bench corrupt onnx": (lambda d, m: ["bench", text(d / "junk.onnx", "not a model")],
                           ["not an ONNX model"]),
    # the rest of the commands
    "models unknown task": (lambda d, m: ["models", "imagenet-nope"], ["unknown task"]),
    "init over a file": (lambda d, m: ["init", text(d / "petra.yaml", "x: 1\n")], ["--force"]),
}


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """An untrained CNN with a dynamic batch axis: what a user exports from torch."""
    from petra.exporters.onnx_export import export_onnx

    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    return str(export_onnx(model.eval(), torch.zeros(1, 1, 8, 8), path).path)


def test_the_table_is_large_enough():
    assert len(CASES) >= 20


def run_main(args: list[str], capfd, monkeypatch) -> tuple[int, str, str]:
    """``petra ARGS`` through ``main()``: (exit code, stdout, stderr). An exception that escaped
    ``main`` would be the traceback a user sees: it fails the test as it is."""
    import petra.cli
    import petra.cli_errors

    monkeypatch.setattr(sys, "argv", ["petra", *args])
    monkeypatch.setattr(petra.cli_errors, "run_log_dir", None)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as done:
            petra.cli.main()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    out, err = capfd.readouterr()
    return done.value.code, out, err


def assert_one_line_error(code: int, out: str, err: str, words) -> None:
    assert "Traceback" not in out + err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert code == 2, (code, err)
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_2(name, tmp_path, small_onnx, capfd, monkeypatch):
    make_args, words = CASES[name]
    args = [str(a) for a in make_args(tmp_path, small_onnx)]
    if args[0] == "optimize" and "--output" not in args:
        args += ["--output", str(tmp_path / "out")]
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(*run_main(args, capfd, monkeypatch), words)


def test_the_traceback_of_user_code_is_in_the_run_log(tmp_path):
    out = tmp_path / "out"
    spec = task_file(tmp_path, "def make_task():\n    return tiny(metric=Metric('m', lambda o, t: 1 / 0))\n")
    args = optimize("--task", spec, "--output", str(out))
    proc = subprocess.run([sys.executable, "-m", "petra.cli", *args], capture_output=True, text=True,
                          timeout=120)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, ["metric 'm'", "ZeroDivisionError"])
    assert f"traceback in {out / 'petra.log'}" in proc.stderr
    log = (out / "petra.log").read_text()
    assert "Traceback" in log and "ZeroDivisionError" in log and "my_task.py" in log
    assert "baseline: training tiny-user-task" in log  # the run's own lines are there too
