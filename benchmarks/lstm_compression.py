"""A 2-layer LSTM (hidden 128) on ItalyPowerDemand: FP32, 50% hidden-unit pruning, dynamic INT8
(DynamicQuantizeLSTM), and both — on ONNX Runtime, 1 thread, batch 1, timed by petra.

The model is the user-written ``tests.user_models.LSTMClassifier`` (last step -> Linear head).
Pruning is ``StructuredPruning.prune`` (hidden-unit pruning of every layer, round_to 8),
followed by a short fine-tune; INT8 is petra's ``quantize(..., INT8_DYNAMIC)`` of the exported
file. Each artifact's p50 is the fastest of 3-5 fresh isolated sessions, interleaved (A B C D A
B C D ...), as petra's final re-measurement does; accuracy is computed on ORT on the test split.

    PYTHONPATH=src:. python benchmarks/lstm_compression.py
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from tests.user_models import LSTMClassifier

from petra.compression.pruning import StructuredPruning
from petra.compression.training import fit
from petra.exporters import Precision, export_onnx, quantize
from petra.models.ucr import load_ucr
from petra.profilers import IsolatedMeasurer, MeasureRequest, fingerprint, interleaved_fastest


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x)})[0]
    return float((out.argmax(1) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ItalyPowerDemand")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--finetune", type=int, default=2)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lstm_compression.json")
    args = ap.parse_args()
    t0 = time.monotonic()
    train, _, test = load_ucr(args.dataset)
    torch.manual_seed(0)
    model = LSTMClassifier(train.x.shape[1], hidden=args.hidden, layers=2, classes=int(train.y.max()) + 1)
    fit(model, train, epochs=args.epochs, lr=5e-3)
    model.eval()
    example = torch.from_numpy(test.x[:1])
    pruned = StructuredPruning.prune(copy.deepcopy(model), example, ratio=args.ratio, round_to=8)
    work = Path(tempfile.mkdtemp(prefix="petra-lstm-"))
    unfinetuned = export_onnx(pruned, example, work / "pruned_no_ft.onnx")
    fit(pruned, train, epochs=args.finetune, lr=2e-3)
    pruned.eval()
    train_s = time.monotonic() - t0

    fp32 = export_onnx(model, example, work / "fp32.onnx")
    small = export_onnx(pruned, example, work / "pruned.onnx")
    arts = {
        "fp32": fp32,
        f"pruned{int(args.ratio * 100)}": small,
        "int8_dynamic": quantize(fp32, work / "int8.onnx", precision=Precision.INT8_DYNAMIC),
        f"pruned{int(args.ratio * 100)}+int8_dynamic": quantize(small, work / "pruned_int8.onnx",
                                                                precision=Precision.INT8_DYNAMIC),
    }
    sample = np.ascontiguousarray(test.x[:64])
    with IsolatedMeasurer() as measurer:
        jobs = [lambda a=a: measurer.measure(MeasureRequest(Path(a.path), "onnxruntime", {"threads": 1},
                                                            sample=sample, batches=(1,)))
                for a in arts.values()]
        figures = interleaved_fastest(jobs, lambda i, exc: print(f"{list(arts)[i]} failed: {exc}"),
                                      rounds=3, max_rounds=5)
    base = figures[0]
    rows = {}
    for (name, art), m in zip(arts.items(), figures):
        ops = [n.op_type for n in onnx.load(str(art.path)).graph.node]
        rows[name] = {
            "p50_ms": m.p50_ms, "p90_ms": m.latency.summary()["p90"], "size_bytes": m.size_bytes,
            "p50_ratio": m.p50_ms / base.p50_ms, "size_ratio": m.size_bytes / base.size_bytes,
            "test_accuracy": ort_accuracy(art.path, test.x, test.y),
            "lstm_ops": {k: ops.count(k) for k in ("LSTM", "DynamicQuantizeLSTM")},
            "session_p50_ms": list(m.session_p50s), "noisy": m.noisy, "other_load_cores": m.other_load_cores,
        }
    rows[f"pruned{int(args.ratio * 100)}"]["test_accuracy_before_finetune"] = ort_accuracy(
        unfinetuned.path, test.x, test.y)
    print(f"{args.dataset}, LSTM {args.hidden}x2 -> {pruned.lstm.hidden_size}x2, ORT 1 thread, batch 1 "
          f"(train + fine-tune {train_s:.0f} s, total {time.monotonic() - t0:.0f} s)")
    print(f"{'artifact':<24}{'p50 ms':>9}{'p50 x':>8}{'size kB':>9}{'size x':>8}{'test acc':>10}  noisy")
    for name, r in rows.items():
        print(f"{name:<24}{r['p50_ms']:>9.4f}{r['p50_ratio']:>8.3f}{r['size_bytes'] / 1e3:>9.1f}"
              f"{r['size_ratio']:>8.3f}{r['test_accuracy']:>10.4f}  {r['noisy']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"settings": settings, "pruned_hidden": pruned.lstm.hidden_size,
                                    "train_s": train_s, "rows": rows, "fingerprint": fingerprint()},
                                   indent=2, default=str))


if __name__ == "__main__":
    main()
