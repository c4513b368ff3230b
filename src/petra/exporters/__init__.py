"""torch -> ONNX export, ONNX -> quantized ONNX (ORT) or IR (OpenVINO, NNCF); hashed ``Artifact``s."""

from petra.exporters.artifact import Artifact, sha256_file
from petra.exporters.onnx_export import export_onnx
from petra.exporters.openvino_quant import AccuracyControl, NncfPreset, quantize_nncf, to_ir
from petra.exporters.quantize import Calibration, Precision, QuantExclude, quantize

__all__ = ["AccuracyControl", "Artifact", "Calibration", "NncfPreset", "Precision", "QuantExclude",
           "export_onnx", "quantize", "quantize_nncf", "sha256_file", "to_ir"]
