"""Time series: UCR/UEA classification sets shipped inside sktime, an InceptionTime-style 1-D CNN.

``ucr-<name>`` for ArrowHead, OSULeaf, ACSF1, BasicMotions (6 channels), GunPoint and
ItalyPowerDemand. sktime 1.2.0 ships these files, so nothing is downloaded.

Split: the official train and test parts are pooled and re-split (seeded, stratified) 60/20/20
into train / validation / held-out test, because several official train parts are too small
to carve a validation split from (ArrowHead: 36 series). Published accuracies use the official
split, so the comparison with them is indicative only.

Noise: these sets are small (OSULeaf's validation part has 88 series: one series = 1.1
points), so the task sets ``drop_confidence``: a candidate is feasible only if the one-sided
90% upper bound of its paired-bootstrap validation drop is within ``--max-drop``. A noisy
point estimate can neither admit a candidate that may lose more nor — when its predictions
match the baseline's — reject one. Expect to pass a ``--max-drop`` of a few points here.

Model: InceptionTime (Ismail Fawaz et al. 2020) shape — inception modules with a 1x1
bottleneck, three parallel convolutions (kernels 9/19/39) and a max-pool branch, 4 x nf
channels, a residual shortcut every third module, global average pooling. Depth 6, nf 32:
0.42M parameters, as in the paper. Recipe: Adam lr 1e-3, batch 16, at most 60 epochs, early
stopping on validation accuracy (patience 12). Published InceptionTime test accuracy
(official split, ensemble of 5, 1500 epochs): ArrowHead 84.7, OSULeaf 93.4, ACSF1 ~90, BasicMotions
100, GunPoint 100, ItalyPowerDemand 96.8.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from petra.errors import ConfigError
from petra.models.base import ACCURACY, Split, Task, TrainSettings

DATASETS = ("ArrowHead", "OSULeaf", "ACSF1", "BasicMotions", "GunPoint", "ItalyPowerDemand")
PUBLISHED = {"ArrowHead": 84.7, "OSULeaf": 93.4, "ACSF1": 90.0, "BasicMotions": 100.0,
             "GunPoint": 100.0, "ItalyPowerDemand": 96.8}


def load_ucr(name: str, seed: int = 0) -> tuple[Split, Split, Split]:
    """Pooled official train+test, per-series z-normalised, stratified 60/20/20."""
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise ConfigError(f"unknown UCR/UEA set {name!r}; choose one of {', '.join(DATASETS)}")
    try:
        from sktime.datasets import load_UCR_UEA_dataset
    except ImportError:
        raise ConfigError("UCR tasks need sktime: pip install 'sktime==1.2.0'") from None
    parts = [load_UCR_UEA_dataset(name, split=s, return_type="numpy3D") for s in ("train", "test")]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32)
    labels = np.concatenate([p[1] for p in parts])
    classes = sorted(set(labels.tolist()))
    y = np.array([classes.index(v) for v in labels], dtype=np.int64)
    mean, std = x.mean(axis=2, keepdims=True), x.std(axis=2, keepdims=True)
    x = ((x - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_va, x_te, y_va, y_te = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed,
                                              stratify=y_rest)
    return Split(x_tr, y_tr), Split(x_va, y_va), Split(x_te, y_te)


class InceptionModule(nn.Module):
    def __init__(self, cin: int, nf: int = 32, kernels: tuple[int, ...] = (39, 19, 9)) -> None:
        super().__init__()
        self.bottleneck = nn.Conv1d(cin, nf, 1, bias=False) if cin > 1 else nn.Identity()
        width = nf if cin > 1 else cin
        self.convs = nn.ModuleList(nn.Conv1d(width, nf, k, padding=k // 2, bias=False) for k in kernels)
        self.pool_conv = nn.Sequential(nn.MaxPool1d(3, 1, 1), nn.Conv1d(cin, nf, 1, bias=False))
        self.bn = nn.BatchNorm1d(nf * (len(kernels) + 1))
        self.relu = nn.ReLU()

    def forward(self, x):
        b = self.bottleneck(x)
        out = torch.cat([c(b) for c in self.convs] + [self.pool_conv(x)], dim=1)
        return self.relu(self.bn(out))


class InceptionTime(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, nf: int = 32, depth: int = 6) -> None:
        super().__init__()
        width = 4 * nf
        self.modules_ = nn.ModuleList(
            InceptionModule(in_channels if i == 0 else width, nf) for i in range(depth)
        )
        self.shortcuts = nn.ModuleList(
            nn.Sequential(nn.Conv1d(in_channels if i == 0 else width, width, 1, bias=False),
                          nn.BatchNorm1d(width))
            for i in range(depth // 3)
        )
        self.relu = nn.ReLU()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        res = x
        for i, module in enumerate(self.modules_):
            x = module(x)
            if i % 3 == 2:
                x = self.relu(x + self.shortcuts[i // 3](res))
                res = x
        return self.fc(x.mean(dim=2))


def ucr_task(name: str, nf: int = 32, depth: int = 6, max_epochs: int = 60) -> Task:
    train, val, test = load_ucr(name)
    channels, classes = train.x.shape[1], int(max(train.y.max(), val.y.max(), test.y.max())) + 1
    default = nf == 32 and depth == 6 and max_epochs == 60
    return Task(
        name=f"ucr-{name}" if default else f"ucr-{name}-nf{nf}-d{depth}-e{max_epochs}",
        build_model=lambda: InceptionTime(channels, classes, nf, depth),
        train=train,
        val=val,
        test=test,
        metric=ACCURACY,
        train_settings=TrainSettings(max_epochs=max_epochs, lr=1e-3, batch_size=16, patience=12,
                                     weight_decay=0.0),
        description=f"UCR/UEA {name} ({channels} ch, length {train.x.shape[2]}, {classes} classes), "
                    f"InceptionTime-style depth {depth}, nf {nf}",
        drop_confidence=0.9,
        reference=f"InceptionTime {PUBLISHED[name]}% on the official test split",
    )
