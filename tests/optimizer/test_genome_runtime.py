"""The runtime as a gene: genes of the other runtime never split keys; settings per runtime."""

import numpy as np
import pytest

from petra.exporters import Calibration, NncfPreset, Precision
from petra.optimizer.genome import OPENVINO, ORT, CandidateConfig, SearchSpace
from petra.runtimes import GraphOpt, Hint, InferencePrecision


def test_openvino_genes_never_split_an_onnxruntime_key():
    a = CandidateConfig(ov_precision=InferencePrecision.BF16, ov_streams=2, nncf_subset=64,
                        nncf_preset=NncfPreset.MIXED)
    assert a.canonical() == CandidateConfig() and a.key == CandidateConfig().key


def test_onnxruntime_key_is_the_one_from_before_the_runtime_gene():
    """Keys of results written before OpenVINO existed must still name the same configs."""
    assert CandidateConfig().key == "0d4def8a16fdf030"
    old = CandidateConfig(prune_ratio=0.5, precision=Precision.INT8_STATIC, threads=2)
    assert old.key == "6724195ac6016916"


def test_onnxruntime_genes_never_split_an_openvino_key():
    a = CandidateConfig(runtime=OPENVINO, precision=Precision.INT8_STATIC, graph_opt=GraphOpt.BASIC,
                        calibration=Calibration.ENTROPY, per_channel=False)
    b = CandidateConfig(runtime=OPENVINO, precision=Precision.INT8_STATIC)
    assert a.key == b.key


def test_openvino_fp32_ignores_nncf_genes_and_dynamic_int8_is_fp32():
    fp32 = CandidateConfig(runtime=OPENVINO)
    assert CandidateConfig(runtime=OPENVINO, nncf_subset=64, nncf_fast_bias=False).key == fp32.key
    assert CandidateConfig(runtime=OPENVINO, precision=Precision.INT8_DYNAMIC).key == fp32.key
    int8 = CandidateConfig(runtime=OPENVINO, precision=Precision.INT8_STATIC)
    assert CandidateConfig(runtime=OPENVINO, precision=Precision.INT8_STATIC, nncf_subset=64).key != int8.key
    # compile settings matter for FP32 too
    assert CandidateConfig(runtime=OPENVINO, ov_precision=InferencePrecision.BF16).key != fp32.key


def test_more_streams_than_threads_is_the_same_config():
    two = CandidateConfig(runtime=OPENVINO, ov_streams=2, threads=1)
    assert two.key == CandidateConfig(runtime=OPENVINO, ov_streams=1, threads=1).key
    assert CandidateConfig(runtime=OPENVINO, ov_streams=2, threads=2).canonical().ov_streams == 2


def test_runtime_splits_keys_but_not_the_torch_stage():
    a = CandidateConfig(prune_ratio=0.5, epochs=2)
    b = CandidateConfig(prune_ratio=0.5, epochs=2, runtime=OPENVINO)
    assert a.key != b.key and a.torch_key == b.torch_key


def test_runtime_settings_follow_the_runtime():
    assert CandidateConfig(threads=2).runtime_settings() == {"graph_opt": GraphOpt.ALL, "threads": 2}
    ov = CandidateConfig(runtime=OPENVINO, threads=2, ov_hint=Hint.THROUGHPUT, ov_streams=2,
                         ov_precision=InferencePrecision.BF16)
    assert ov.runtime_settings() == {"hint": Hint.THROUGHPUT, "streams": 2, "threads": 2,
                                     "precision": InferencePrecision.BF16}


def test_json_roundtrip_of_an_openvino_config():
    cfg = CandidateConfig(runtime=OPENVINO, precision=Precision.INT8_STATIC, ov_hint=Hint.THROUGHPUT,
                          ov_precision=InferencePrecision.BF16, nncf_preset=NncfPreset.MIXED,
                          nncf_fast_bias=False)
    assert CandidateConfig.from_json(cfg.to_json()) == cfg


def test_equal_keys_only_for_equal_canonical_configs():
    """Over random genomes of a two-runtime space: canonical is idempotent and the key injective."""
    space = SearchSpace(threads=(1, 2), runtime=(ORT, OPENVINO))
    rng = np.random.default_rng(0)
    by_key: dict[str, CandidateConfig] = {}
    for _ in range(3000):
        cfg = space.decode(tuple(int(rng.integers(0, n)) for n in space.sizes))
        assert cfg.canonical() == cfg
        assert by_key.setdefault(cfg.key, cfg) == cfg
    runtimes = {c.runtime for c in by_key.values()}
    assert runtimes == {ORT, OPENVINO}


@pytest.mark.parametrize("runtime", [ORT, OPENVINO])
def test_encode_decode_keeps_the_runtime(runtime):
    space = SearchSpace(runtime=(ORT, OPENVINO))
    cfg = CandidateConfig(runtime=runtime, precision=Precision.INT8_STATIC)
    assert space.decode(space.encode(cfg)) == cfg.canonical()
