"""Models petra's zoo does not contain, written the way users write them, on real data.

Importable as ``--task tests.user_models:NAME`` by CLI tests. Each family is one petra was not
designed around: a 2-layer LSTM, a TransformerEncoder (TorchScript cannot export it; the dynamo
fallback can), a depthwise-separable inverted-residual CNN, and a model no exporter takes.
"""

from __future__ import annotations

import torch
from torch import nn

from petra.models.base import Task, TrainSettings
from petra.models.digits import load_digits_splits
from petra.models.ucr import load_ucr

QUICK = TrainSettings(max_epochs=3, lr=3e-3, batch_size=64, patience=2)


class LSTMClassifier(nn.Module):
    def __init__(self, channels: int, hidden: int = 32, layers: int = 2, classes: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):  # (batch, channels, steps), as UCR series come
        out, _ = self.lstm(x.transpose(1, 2))
        return self.head(out[:, -1])


class TransformerClassifier(nn.Module):
    """``events_first``: inputs are (batch, steps, features), as event sequences come."""

    def __init__(self, channels: int, d_model: int = 32, classes: int = 2, ff: int = 64, layers: int = 2,
                 events_first: bool = False) -> None:
        super().__init__()
        self.events_first = events_first
        self.embed = nn.Linear(channels, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead=4, dim_feedforward=ff, batch_first=True,
                                           dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x):
        tokens = x if self.events_first else x.transpose(1, 2)
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


class InvertedResidual(nn.Module):
    def __init__(self, ch: int, expand: int = 4) -> None:
        super().__init__()
        mid = ch * expand
        self.block = nn.Sequential(
            nn.Conv2d(ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, ch, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x):
        return x + self.block(x)


class DepthwiseCNN(nn.Module):
    def __init__(self, ch: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(ch), InvertedResidual(ch))
        self.head = nn.Linear(ch, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class Eigen(nn.Module):
    """A layer no exporter takes: complex eigenvalues have no ONNX type."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 4)

    def forward(self, x):
        w = self.fc(x.flatten(1))
        return torch.linalg.eigvals(torch.diag_embed(w)).real


def _series_task(name: str, build) -> Task:
    train, val, test = load_ucr("ItalyPowerDemand")
    return Task(name=name, build_model=build, train=train, val=val, test=test, train_settings=QUICK)


def lstm_task() -> Task:
    return _series_task("user-lstm", lambda: LSTMClassifier(1))


def transformer_task() -> Task:
    return _series_task("user-transformer", lambda: TransformerClassifier(1))


def depthwise_task() -> Task:
    train, val, test = load_digits_splits()
    return Task(name="user-depthwise", build_model=DepthwiseCNN, train=train, val=val, test=test,
                train_settings=QUICK)


def unexportable_task() -> Task:
    train, val, test = load_digits_splits()
    return Task(name="user-eigen", build_model=Eigen, train=train, val=val, test=test, train_settings=QUICK)


class Stateful(nn.Module):
    """Exports, but to another function: the call counter is Python state the tracer bakes in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x.flatten(1)) * self.calls


def stateful_task() -> Task:
    train, val, test = load_digits_splits()
    return Task(name="user-stateful", build_model=Stateful, train=train, val=val, test=test,
                train_settings=QUICK)


class QKVSelfAttention(nn.Module):
    """Multi-head self-attention written by hand: separate q/k/v Linears, heads by reshaping."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (lin(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for lin in (self.q, self.k, self.v))
        attn = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim ** 0.5, dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class QKVBlock(nn.Module):
    """Pre-norm transformer block: attention and a fc1/fc2 MLP, each with a residual."""

    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = QKVSelfAttention(dim, num_heads)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(torch.relu(self.fc1(self.norm2(x))))


class QKVAttentionClassifier(nn.Module):
    def __init__(self, channels: int, d_model: int = 32, heads: int = 4, hidden: int = 64,
                 classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(channels, d_model)
        self.blocks = nn.Sequential(QKVBlock(d_model, heads, hidden), QKVBlock(d_model, heads, hidden))
        self.head = nn.Linear(d_model, classes)

    def forward(self, x):  # (batch, channels, steps)
        return self.head(self.blocks(self.embed(x.transpose(1, 2))).mean(dim=1))


def qkv_task() -> Task:
    return _series_task("user-qkv-attention", lambda: QKVAttentionClassifier(1))
