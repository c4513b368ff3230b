"""Event sequences: the CDNOW transaction log (shipped in ``lifetimes``), a GRU encoder.

Data: 69,659 purchases by 23,570 customers who all first bought in 1997-Q1 (id, date, CDs,
dollars). Input per customer: the calibration period 1997-01-01 .. 1997-09-30 as 39 weekly
steps of (log1p CDs, log1p dollars, log1p purchases) — a fixed-length event sequence, the shape
of the paper's bank-transaction tasks, and a fixed length the unrolled GRU can be traced at.
Split: customers, seeded and stratified 60/20/20 into train / validation / held-out test.

Label and metric: the customer's value tier over the next nine months (1997-10-01 ..
1998-06-30), six classes: no purchase (70.1%), or total spend under $24, $24-42, $42-74,
$74-144, $144 and more (the quintiles of the 7,058 customers who buy again, ~6% each); macro
one-vs-rest ROC AUC x 100. Predicting a tier needs how often, how recently *and* how much a
customer buys, jointly. Measured with ``benchmarks/cdnow_capacity.py`` (seeds 0-2, each its
own split and initialisation; every model trained from scratch with this task's recipe: Adam
3e-3, batch 256, at most 16 epochs, early stopping with patience 3; best validation AUC, mean
of the three seeds; AMD EPYC Zen 4, 2 cores):

    model                       parameters   value-tier AUC   "buys again" AUC
    GRU 64x2 (the task's model)     38,598   73.67            77.32
    GRU 16x2                         2,742   72.75 (-0.92)    77.35 (+0.03)
    GRU 8x2                            798   71.85 (-1.82)    77.38 (+0.06)
    GRU 4x1                            138   71.33 (-2.34)    77.21 (-0.11)
    logistic regression on RFM           -   73.45 (-0.22)    77.22 (-0.10)

So a 280x smaller GRU loses over 2 points on this label, beyond the default ``--max-drop`` of
1, and every seed agrees (gaps -1.99 / -2.67 / -2.36), while on the binary "buys again after
the period" label (still there as ``label="again"``) it loses 0.1 and any shrinkage is free.
Part of the mid-size gap is training time, not capacity: given 24 epochs without early
stopping, the 8x2 GRU reached 73.90 against 74.05 for the 64x2 at 16, but the 4-unit GRU only
71.43. The tier needs a few quantities, not many, which is what this data holds: recency,
frequency and spend in a logistic regression come within a quarter of a point.

Model: a CoLES-style 2-layer GRU encoder (hidden 64) with a linear head on the last state.
Genes: torch-pruning leaves ``nn.GRU`` untouched, so pruning is hidden-unit pruning
(``petra.compression.recurrent``), L1/L2 magnitude only (no BatchNorm: the BN-scale and
Taylor importances and the BN-sparsity regularizer are removed from this task's search
space), and ``unroll_recurrent`` exports the GRU as MatMuls that INT8 can reach.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from torch import nn

from petra.errors import ConfigError
from petra.models.base import Metric, Split, Task, TrainSettings

CALIBRATION_DAYS = 273  # 1997-01-01 .. 1997-09-30
WEEKS = 39
#: the value tiers' spend bounds in dollars (quintiles of the customers who buy again)
TIER_BOUNDS = (24.0, 42.0, 74.0, 144.0)
LABELS = ("value-tier", "again")
LABEL_NOTE = "value-tier AUC (3 seeds): GRU 64x2 73.67, 4-unit GRU 71.33, RFM logistic regression 73.45"


def roc_auc_percent(outputs: np.ndarray, targets: np.ndarray) -> float:
    """ROC AUC x 100 of class 1 (binary) or macro one-vs-rest (multi-class), from logits."""
    from sklearn.metrics import roc_auc_score

    z = outputs - outputs.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    if prob.shape[1] == 2:
        return float(roc_auc_score(targets, prob[:, 1]) * 100.0)
    return float(roc_auc_score(targets, prob, multi_class="ovr", average="macro") * 100.0)


AUC = Metric("roc_auc", roc_auc_percent, higher_is_better=True)


def transactions_path() -> Path:
    try:
        import lifetimes
    except ImportError:
        raise ConfigError("the cdnow task needs lifetimes: pip install 'lifetimes==0.11.3'") from None
    path = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"
    if not path.is_file():
        raise ConfigError(f"CDNOW_master.txt is missing from {path.parent}; reinstall lifetimes==0.11.3")
    return path


def load_transactions() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(customer index from 0, day since 1997-01-01, CDs, dollars) per purchase."""
    raw = np.loadtxt(transactions_path(), skiprows=1, dtype=np.float64)
    customer = raw[:, 0].astype(np.int64) - 1
    start = dt.date(1997, 1, 1)
    dates = raw[:, 1].astype(np.int64)
    day = np.array([(dt.date(d // 10000, d // 100 % 100, d % 100) - start).days for d in dates])
    return customer, day, raw[:, 2], raw[:, 3]


def build_dataset(label: str = "value-tier") -> tuple[np.ndarray, np.ndarray]:
    customer, day, cds, dollars = load_transactions()
    n = int(customer.max()) + 1
    cal = day < CALIBRATION_DAYS
    x = np.zeros((n, WEEKS, 3), np.float64)
    week = day[cal] // 7
    np.add.at(x, (customer[cal], week, 0), cds[cal])
    np.add.at(x, (customer[cal], week, 1), dollars[cal])
    np.add.at(x, (customer[cal], week, 2), 1.0)
    later, spend = np.zeros(n), np.zeros(n)
    np.add.at(later, customer[~cal], 1.0)
    np.add.at(spend, customer[~cal], dollars[~cal])
    if label == "again":
        y = (later > 0).astype(np.int64)
    elif label == "value-tier":
        y = np.where(later > 0, 1 + np.digitize(spend, TIER_BOUNDS), 0).astype(np.int64)
    else:
        raise ConfigError(f"unknown cdnow label {label!r}; use one of {', '.join(LABELS)}")
    return np.log1p(x).astype(np.float32), y


def load_splits(label: str = "value-tier", seed: int = 0,
                limit: int | None = None) -> tuple[Split, Split, Split]:
    from sklearn.model_selection import train_test_split

    x, y = build_dataset(label)
    if limit is not None and limit < len(x):
        x, _, y, _ = train_test_split(x, y, train_size=limit, random_state=seed, stratify=y)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_va, x_te, y_va, y_te = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed,
                                              stratify=y_rest)
    return Split(x_tr, y_tr), Split(x_va, y_va), Split(x_te, y_te)


class GRUEncoder(nn.Module):
    """Sequence -> last hidden state -> logits (CoLES-style encoder with a linear head)."""

    def __init__(self, features: int = 3, hidden: int = 64, layers: int = 2, num_classes: int = 2) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def cdnow_task(hidden: int = 64, layers: int = 2, label: str = "value-tier", limit: int | None = None,
               max_epochs: int = 16) -> Task:
    train, val, test = load_splits(label, limit=limit)
    classes = int(train.y.max()) + 1
    default = (hidden, layers, label, limit, max_epochs) == (64, 2, "value-tier", None, 16)
    return Task(
        name="cdnow" if default else f"cdnow-{label}-h{hidden}x{layers}-n{len(train) + len(val) + len(test)}",
        build_model=lambda: GRUEncoder(3, hidden, layers, classes),
        train=train,
        val=val,
        test=test,
        metric=AUC,
        train_settings=TrainSettings(max_epochs=max_epochs, lr=3e-3, batch_size=256, patience=3,
                                     weight_decay=0.0),
        description=f"CDNOW weekly purchase sequences (39 weeks), label {label!r}, GRU {hidden}x{layers}",
        reference=LABEL_NOTE,
    )
