"""A task for users who only have an ONNX model: ``petra optimize --onnx m.onnx --data d.npz``.

Without the torch model there is nothing to prune or fine-tune: the search space's probe
removes every torch gene (with that reason) and only the genes that need no torch remain:
precision, calibration, per-channel, graph optimization, threads. The pipeline skips the torch
stage and starts from the given file.

The data file is an ``.npz`` read with ``allow_pickle=False`` (nothing is unpickled): ``x``
(inputs, batch first, required) and optionally ``y`` (integer class labels). With ``y`` the
metric is top-1 accuracy; without it, top-1 agreement with the FP32 model's own predictions
(a quantized model that changes no prediction scores 100). The examples are split (seeded)
50/25/25 into calibration / validation (selection) / held-out test.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from petra.errors import ConfigError
from petra.models.base import ACCURACY, Metric, Split, Task, default_cache_dir

MIN_EXAMPLES = 8


@dataclass
class OnnxTask(Task):
    onnx_model: Path | None = None

    def baseline(self, cache_dir: Path | None = None, log=print) -> nn.Module | None:
        """No torch model exists: the FP32 ONNX file *is* the baseline."""
        log(f"baseline: the given ONNX model {self.onnx_model}")
        return None

    def content_hash(self) -> str:
        from petra.exporters.artifact import sha256_file

        return sha256_file(self.onnx_model)[:16]


def _fp32_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from petra.runtimes import get_runtime

    session = get_runtime("onnxruntime").compile(path)
    return session.run_batched(x)


def _input_spec(onnx_path: Path):
    """The model's input as the one input reader sees it: known rank, dynamic batch."""
    from petra.runtimes import model_input

    spec = model_input(onnx_path)
    if not spec.shape:
        raise ConfigError(f"{onnx_path} has no tensor input of known rank; pass a file written by "
                          "torch.onnx.export with an example input")
    if spec.shape[0] not in (None, 0):
        raise ConfigError(f"{onnx_path.name} has a fixed batch size {spec.shape[0]}; export it "
                          "with a dynamic batch axis (dynamic_axes={'input': {0: 'batch'}})")
    return spec


def _load_inputs(data_path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    try:
        with np.load(data_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise ConfigError(f"cannot read {data_path} as .npz ({type(exc).__name__}: {exc}); "
                          "save it with numpy.savez(path, x=inputs[, y=labels])") from None
    if "x" not in arrays:
        raise ConfigError(f"{data_path.name} has no array 'x' (found {sorted(arrays)}); "
                          "save it with numpy.savez(path, x=inputs[, y=labels])")
    try:
        x = np.ascontiguousarray(arrays["x"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{data_path.name}: 'x' is not numeric ({arrays['x'].dtype}: {exc}); "
                          "save the model's inputs as a float array") from None
    if len(x) < MIN_EXAMPLES:
        raise ConfigError(f"{data_path.name} holds {len(x)} examples; give at least {MIN_EXAMPLES}")
    return x, arrays


def _check_shape(spec, x: np.ndarray, onnx_path: Path, data_path: Path) -> None:
    fixed = zip(spec.shape[1:], x.shape[1:])
    if x.ndim != len(spec.shape) or any(e is not None and e != got for e, got in fixed):
        want = ", ".join("batch" if i == 0 else str(e if e is not None else "?")
                         for i, e in enumerate(spec.shape))
        raise ConfigError(f"{onnx_path.name} expects input {spec.name!r} of shape ({want}), "
                          f"but 'x' in {data_path.name} has shape {tuple(x.shape)}; save 'x' with "
                          "that shape, examples first")


def _targets(arrays: dict, x: np.ndarray, local: Path, data_path: Path) -> tuple[np.ndarray, Metric]:
    """Labels ``y`` with accuracy, or without them agreement with the FP32 model's predictions."""
    if "y" in arrays:
        y = np.asarray(arrays["y"]).astype(np.int64)
        if len(y) != len(x):
            raise ConfigError(f"{data_path.name}: 'x' has {len(x)} rows but 'y' has {len(y)}")
        return y, ACCURACY
    out = _fp32_outputs(local, x)
    if out.ndim != 2:
        raise ConfigError(f"the model's output has shape {out.shape[1:]}, not (classes,): "
                          "add integer labels 'y' to the .npz")
    return out.argmax(axis=1).astype(np.int64), Metric("agreement", ACCURACY.fn)


def onnx_task(onnx_path: Path | str, data_path: Path | str, seed: int = 0) -> OnnxTask:
    onnx_path, data_path = Path(onnx_path), Path(data_path)
    if not onnx_path.is_file():
        raise ConfigError(f"no such model file {str(onnx_path)!r}; pass --onnx path/to/model.onnx")
    if not data_path.is_file():
        raise ConfigError(f"no such data file {str(data_path)!r}; pass --data with an .npz holding 'x'")
    spec = _input_spec(onnx_path)
    x, arrays = _load_inputs(data_path)
    _check_shape(spec, x, onnx_path, data_path)
    # the cache keeps a copy so trial artifacts never point at a file the user may move
    local = Path(default_cache_dir()) / "onnx" / f"{onnx_path.stem}.onnx"
    local.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, local)
    y, metric = _targets(arrays, x, local, data_path)
    idx = np.random.default_rng(seed).permutation(len(x))
    a, b = len(x) // 2, (3 * len(x)) // 4
    parts = [Split(x[idx[s]], y[idx[s]]) for s in (slice(0, a), slice(a, b), slice(b, None))]
    return OnnxTask(
        name=f"onnx-{onnx_path.stem}",
        build_model=nn.Identity,
        train=parts[0], val=parts[1], test=parts[2],
        metric=metric,
        description=f"ONNX model {onnx_path.name} with {len(x)} examples from {data_path.name}",
        onnx_model=local,
    )
