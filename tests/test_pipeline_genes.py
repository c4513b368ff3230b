"""The torch-stage genes (low rank, QAT) and the exclusion gene, dispatched by the pipeline."""

import onnx

from petra.exporters import Precision, QuantExclude
from petra.optimizer.genome import CandidateConfig
from petra.pipeline import CandidateBuilder
from petra.runtimes import get_runtime


def _float_layers(path):
    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits
            and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT]


def test_low_rank_qat_candidate_builds_and_measures(tiny_task, tiny_teacher, tmp_path):
    b = CandidateBuilder(tiny_task, tiny_teacher, get_runtime("onnxruntime"), tmp_path)
    cfg = CandidateConfig(lowrank_ratio=0.5, qat=True, epochs=2, precision=Precision.INT8_STATIC,
                          quant_exclude=QuantExclude.FIRST).canonical()
    assert cfg.qat and cfg.quant_exclude is QuantExclude.NONE
    built = b.evaluate(cfg)
    assert "lowrank_s" in built.stage_s and "finetune_s" in built.stage_s
    graph = onnx.load(str(built.artifact.path)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and not _float_layers(built.artifact.path)  # the QAT graph as exported
    n_conv = ops.count("Conv")
    assert n_conv > 10  # factorized: the 3x3 convs became 3x3 + 1x1 pairs (10 convs before)
    assert built.test > 0.5 and built.measurement.p50_ms > 0


def test_exclusion_gene_reaches_the_quantizer(tiny_task, tiny_teacher, tmp_path):
    b = CandidateBuilder(tiny_task, tiny_teacher, get_runtime("onnxruntime"), tmp_path)
    art = b.build(CandidateConfig(precision=Precision.INT8_STATIC, quant_exclude=QuantExclude.LAST))
    assert [n.split("/")[1] for n in _float_layers(art.path)] == ["fc"]
