"""Transformer fusion: a pass added with one declaration (its gene) and this test."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from petra.candidate import CandidateConfig
from petra.exporters import Precision, QuantExclude, export_onnx, quantize
from petra.exporters.fusion import TransformerFusion
from petra.runtimes import get_runtime
from tests import user_models


def test_fusion_fuses_a_transformer_encoder_and_keeps_its_outputs(tmp_path):
    torch.manual_seed(0)
    model = user_models.TransformerClassifier(1).eval()
    x = torch.randn(8, 1, 24)
    src = export_onnx(model, x[:1], tmp_path / "model.onnx")
    cfg = CandidateConfig(transformer_fusion=True).canonical()
    assert cfg.transformer_fusion and TransformerFusion().applies(model, x[:1], None) is None
    fused = TransformerFusion().rewrite(src, tmp_path / "trial", cfg)
    ops = {n.op_type for n in onnx.load(str(fused.path)).graph.node}
    assert "SkipLayerNormalization" in ops
    assert "SkipLayerNormalization" in (tmp_path / "trial" / "fusion.txt").read_text()
    ort = get_runtime("onnxruntime")
    ref = ort.compile(src.path).run(x.numpy())
    np.testing.assert_allclose(ort.compile(fused.path).run(x.numpy()), ref, atol=1e-4)
    for precision in (Precision.INT8_DYNAMIC, Precision.INT8_STATIC):  # quantizers take the fused ops
        q = quantize(fused, tmp_path / "q.onnx", precision=precision, exclude=QuantExclude.FIRST_LAST,
                     calibration_data=x.numpy())  # (untyped contrib outputs once failed here)
        assert np.abs(ort.compile(q.path).run(x.numpy()) - ref).max() < 0.5
    assert TransformerFusion().rewrite(src, tmp_path / "off", CandidateConfig()) is src


def test_fusion_stays_out_where_nothing_fuses_or_the_runtime_cannot_run_it(tiny_teacher, tiny_task):
    assert "fuses nothing" in TransformerFusion().applies(tiny_teacher, tiny_task.example_input, None)
    ov = CandidateConfig(transformer_fusion=True, runtime="openvino").canonical()
    assert ov.transformer_fusion is False  # ORT contrib ops: OpenVINO cannot compile them
    assert CandidateConfig(transformer_fusion=True).key != CandidateConfig().key
