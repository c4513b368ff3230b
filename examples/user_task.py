"""Bring your own model: ``petra optimize --task examples/user_task.py:make_task``.

``make_task()`` returns a ``petra.models.Task`` built from your own ``nn.Module``, your data
loaders and your metric. Here: a 3-layer MLP on scikit-learn's bundled breast-cancer data
(569 tumours, 30 features; nothing to download), scored by balanced accuracy. Replace the
three marked parts with yours; everything else stays.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from petra.models import Metric, Split, Task, TrainSettings


class TumourMLP(nn.Module):  # 1. your model: petra trains it once, then compresses copies
    def __init__(self, features: int = 30, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2),
        )

    def forward(self, x):
        return self.net(x)


def loaders(seed: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:  # 2. your data
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_va, x_te, y_va, y_te = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed,
                                              stratify=y_rest)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-8  # statistics of the training part only

    def loader(a, b):
        ds = TensorDataset(torch.tensor((a - mean) / std, dtype=torch.float32), torch.tensor(b))
        return DataLoader(ds, batch_size=64, shuffle=False)

    return loader(x_tr, y_tr), loader(x_va, y_va), loader(x_te, y_te)


def balanced_accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:  # 3. your metric
    """Mean per-class recall in percent: petra's drops are then in percentage points."""
    pred = outputs.argmax(axis=1)
    return float(np.mean([(pred[targets == c] == c).mean() for c in np.unique(targets)]) * 100)


def make_task() -> Task:
    train, val, test = (Split.from_loader(dl) for dl in loaders())
    return Task(
        name="tumour-mlp",
        build_model=TumourMLP,
        train=train,  # fine-tuning and INT8 calibration
        val=val,  # selection: the --max-drop constraint is checked here
        test=test,  # held out: reported, never optimised against
        metric=Metric("balanced_accuracy", balanced_accuracy, higher_is_better=True),
        train_settings=TrainSettings(max_epochs=60, lr=1e-3, batch_size=32, patience=10),
        description="breast-cancer MLP 30-256-256-2, balanced accuracy",
    )
