"""torch -> ONNX: opset >= 18, one self-contained file, dynamic batch dimension.

The TorchScript-based exporter is the default because it is ~40x faster here (0.08 s against
3.2 s for the dynamo exporter on the digits CNN) and export runs once per candidate; both give
the same graph to within 1e-5. ``method="dynamo"`` selects torch.export for models the
TorchScript tracer cannot handle.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from petra.errors import ExportError
from petra.exporters.artifact import Artifact

INPUT_NAME = "input"
OUTPUT_NAME = "output"
MIN_OPSET = 18


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int = MIN_OPSET,
    method: str = "torchscript",
) -> Artifact:
    if opset < MIN_OPSET:
        raise ExportError(f"opset must be >= {MIN_OPSET}, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: runs may share the cache
    model = model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if method == "torchscript":
                torch.onnx.export(
                    model, (example,), str(tmp), opset_version=opset, dynamo=False,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                )
            elif method == "dynamo":
                name = next(iter(_forward_arg_names(model)))
                torch.onnx.export(
                    model, (example,), str(tmp), opset_version=opset, dynamo=True,
                    external_data=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes={name: {0: torch.export.Dim("batch")}}, verbose=False,
                )
            else:
                raise ExportError(f"unknown export method {method!r}; use torchscript or dynamo")
        onnx.checker.check_model(str(tmp))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    os.replace(tmp, path)
    return Artifact.of(path)


def _forward_arg_names(model: nn.Module) -> list[str]:
    import inspect

    return list(inspect.signature(model.forward).parameters)
