"""Your trained model: train and save a checkpoint the way you already do, then hand the
trained module to petra. Nothing retrains it: it is the FP32 baseline, measured as given.

    python examples/trained_model.py [--time-budget 120]

Data: scikit-learn's bundled 8x8 digits (nothing to download). Model: a small depthwise-
separable CNN written here, not one of petra's zoo.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import petra


class SeparableCNN(nn.Module):
    def __init__(self, ch: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(),
            nn.Conv2d(ch, ch, 3, padding=1, groups=ch), nn.Conv2d(ch, 2 * ch, 1), nn.BatchNorm2d(2 * ch),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * ch, classes))

    def forward(self, x):
        return self.net(x)


def loaders(batch: int = 64) -> tuple[DataLoader, DataLoader, DataLoader]:
    data = load_digits()
    x = torch.from_numpy((data.images / 16.0).astype(np.float32)[:, None])
    y = torch.from_numpy(data.target.astype(np.int64))
    idx_train, idx_rest = train_test_split(np.arange(len(y)), test_size=0.4, random_state=0, stratify=y)
    idx_val, idx_test = train_test_split(idx_rest, test_size=0.5, random_state=0, stratify=y[idx_rest])
    return tuple(DataLoader(TensorDataset(x[i], y[i]), batch_size=batch, shuffle=False)
                 for i in (idx_train, idx_val, idx_test))


def train_and_save(path: Path, epochs: int = 30) -> None:
    """Your own training loop and checkpoint (here: 30 epochs of Adam)."""
    torch.manual_seed(0)
    model = SeparableCNN()
    train, _, _ = loaders()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    torch.save(model.state_dict(), path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", type=Path, default=Path("runs/separable-cnn.pt"))
    p.add_argument("--time-budget", type=float, default=120)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args()
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if not args.checkpoint.is_file():
        train_and_save(args.checkpoint)
    model = SeparableCNN()
    model.load_state_dict(torch.load(args.checkpoint, weights_only=True))
    train, val, test = loaders()
    results = petra.optimize(model, train=train, val=val, test=test, name="separable-cnn",
                             time_budget=args.time_budget, output=args.output)
    r = results["best"]["ratios_to_baseline"]
    print(f"best: p50 {r['p50_latency']:.3f}x, size {r['size']:.3f}x, throughput {r['throughput']:.2f}x, "
          f"test drop {r['metric_drop_test']:.2f} points -> {results['output']}/best")


if __name__ == "__main__":
    main()
