"""torch -> ONNX export and ONNX -> quantized ONNX; every output is a hashed ``Artifact``."""

from petra.exporters.artifact import Artifact, sha256_file
from petra.exporters.onnx_export import export_onnx
from petra.exporters.quantize import Calibration, Precision, QuantExclude, quantize

__all__ = ["Artifact", "Calibration", "Precision", "QuantExclude", "export_onnx", "quantize",
           "sha256_file"]
