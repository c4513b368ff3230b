"""The input a model file expects, read without compiling it: the one input-shape reader
(``petra bench``, the hand-off snippet, the user ONNX task).

Reading the shape up front lets bad input fail as one line before a worker starts: a file that
is not a model, or a batch size the model's fixed batch dimension cannot take.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petra.errors import ConfigError

_OV_TYPES = {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32, "u8": np.uint8,
             "i8": np.int8, "boolean": np.bool_}


@dataclass(frozen=True)
class InputSpec:
    name: str
    #: None for a dynamic dimension
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def check_batch(self, batch: int) -> None:
        fixed = self.shape[0] if self.shape else None
        if fixed is not None and fixed != batch:
            raise ConfigError(f"the model's batch dimension is fixed at {fixed}, so batch {batch} "
                              f"cannot run; use --batch {fixed} or export with a dynamic batch")

    def example(self, batch: int, seed: int = 0) -> np.ndarray:
        """Random inputs of the right shape (dynamic non-batch dimensions become 1)."""
        shape = [batch] + [d or 1 for d in self.shape[1:]]
        rng = np.random.default_rng(seed)
        if np.issubdtype(self.dtype, np.floating):
            return rng.standard_normal(shape).astype(self.dtype)
        return np.zeros(shape, dtype=self.dtype)


def _onnx_input(path: Path) -> InputSpec:
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError, onnx its own errors
        raise ConfigError(f"{path.name} is not an ONNX model ({type(exc).__name__}); "
                          "pass an .onnx file exported by torch.onnx.export or petra") from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise ConfigError(f"{path.name} is not an ONNX model with inputs; pass an exported model file")
    inp = inputs[0]
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim)
    return InputSpec(inp.name, dims, np.dtype(tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)))


def _ir_input(path: Path) -> InputSpec:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ConfigError(f"{path.name} is not an OpenVINO IR file ({exc}); pass a model .xml") from None
    for layer in root.iter("layer"):
        if layer.get("type") == "Parameter":
            data = layer.find("data")
            if data is None:
                break
            dims = tuple(None if d.strip() in ("?", "-1") or ".." in d else int(d)
                         for d in (data.get("shape") or "").split(",") if d.strip())
            return InputSpec(layer.get("name", "input"), dims,
                             np.dtype(_OV_TYPES.get(data.get("element_type", "f32"), np.float32)))
    raise ConfigError(f"{path.name} is not an OpenVINO IR model (no Parameter layer); pass a model .xml")


def model_input(path: Path) -> InputSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such model file {str(path)!r}; pass the path of an .onnx or .xml file")
    return _ir_input(path) if path.suffix.lower() == ".xml" else _onnx_input(path)
