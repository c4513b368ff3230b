"""Does the cdnow label test the model? GRUs of falling size, trained from scratch, per label.

A compression search proves nothing about accuracy retention on a task where a tiny model
scores as well as the full one: its ``--max-drop`` never binds. This script trains the task's
GRU and much smaller ones with the task's own recipe (``fit``, early stopping on validation),
plus a logistic regression on recency / frequency / spend / tenure features, on several seeded
splits, and prints the best validation AUC of each with its gap to the task's model. The
figures in ``petra.models.cdnow``'s docstring come from this script.

    PYTHONPATH=src python benchmarks/cdnow_capacity.py [--seeds 0,1,2] [--labels value-tier,again]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from petra.compression.training import fit, predict
from petra.models.cdnow import LABELS, GRUEncoder, cdnow_task, load_splits
from petra.profilers import fingerprint

SIZES = ((64, 2), (16, 2), (8, 2), (4, 1))


def rfm(x: np.ndarray) -> np.ndarray:
    """Recency, frequency, spend, mean spend and first week from the weekly log1p sequence."""
    count, dollars = np.expm1(x[:, :, 2]), np.expm1(x[:, :, 1])
    active = count > 0
    weeks = x.shape[1]
    last = weeks - 1 - np.argmax(active[:, ::-1], axis=1)
    first = np.argmax(active, axis=1)
    n, spend = count.sum(1), dollars.sum(1)
    return np.stack([n, np.log1p(spend), last, first, np.log1p(spend / np.maximum(n, 1))], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--labels", default=",".join(LABELS))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cdnow_capacity.json")
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression

    rows = []
    for label in args.labels.split(","):
        task = cdnow_task(label=label)
        classes, s = int(task.train.y.max()) + 1, task.train_settings
        for seed in (int(v) for v in args.seeds.split(",")):
            train, val, _ = load_splits(label, seed=seed)  # seed 0 is the task's own split
            (x_tr, y_tr), (x_va, y_va) = (train.x, train.y), (val.x, val.y)
            lr = LogisticRegression(max_iter=2000).fit(rfm(x_tr), y_tr)
            row = {"label": label, "seed": seed,
                   "logistic_rfm": task.metric(lr.predict_log_proba(rfm(x_va)), y_va)}
            for hidden, layers in SIZES:
                model = GRUEncoder(3, hidden, layers, classes)
                t0 = time.monotonic()
                fit(model, train, epochs=s.max_epochs, lr=s.lr, batch_size=s.batch_size,
                    weight_decay=s.weight_decay, val=val, metric=task.metric, patience=s.patience,
                    seed=seed)
                row[f"gru{hidden}x{layers}"] = task.metric(predict(model, x_va), y_va)
                row[f"gru{hidden}x{layers}_params"] = sum(p.numel() for p in model.parameters())
                row[f"gru{hidden}x{layers}_s"] = time.monotonic() - t0
            rows.append(row)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)
    print(f"\n{'label':<11} {'model':<14} {'params':>7} {'AUC (mean of seeds)':>20} {'gap to 64x2':>11}")
    for label in args.labels.split(","):
        mine = [r for r in rows if r["label"] == label]
        full = np.mean([r["gru64x2"] for r in mine])
        for hidden, layers in SIZES:
            key = f"gru{hidden}x{layers}"
            auc = np.mean([r[key] for r in mine])
            print(f"{label:<11} {key:<14} {mine[0][key + '_params']:>7} {auc:>20.2f} {auc - full:>+11.2f}")
        auc = np.mean([r["logistic_rfm"] for r in mine])
        print(f"{label:<11} {'logistic RFM':<14} {'-':>7} {auc:>20.2f} {auc - full:>+11.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "sizes": SIZES, "fingerprint": fingerprint()}, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
