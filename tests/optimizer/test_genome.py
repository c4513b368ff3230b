import pytest

from petra.compression.pruning import Importance
from petra.errors import ConfigError
from petra.exporters import Calibration, Precision, QuantExclude
from petra.optimizer.genome import GENES, CandidateConfig, Regularizer, SearchSpace


def test_decode_every_gene_and_roundtrip():
    space = SearchSpace(threads=(1, 2))
    assert space.gene_names == tuple(g.name for g in GENES)  # every declared gene, in genome order
    genome = tuple(n - 1 for n in space.sizes)  # last choice of every gene
    cfg = space.decode(genome)
    assert cfg.prune_ratio == 0.8 and cfg.importance is Importance.TAYLOR and cfg.round_to == 16
    assert cfg.epochs == 24 and cfg.regularizer is Regularizer.KD and cfg.reg_weight == 0.9
    assert cfg.precision is Precision.INT8_DYNAMIC and cfg.threads == 2
    # QAT exports static QDQ: canonicalised off under dynamic INT8; exclusions still apply
    assert cfg.lowrank_ratio == 0.5 and cfg.qat is False and cfg.quant_exclude is QuantExclude.SENSITIVE
    assert space.decode(space.encode(cfg)) == cfg


def test_decode_rejects_bad_genomes():
    space = SearchSpace()
    with pytest.raises(ValueError, match="genes"):
        space.decode((0, 1))
    bad = list(space.encode(CandidateConfig()))
    bad[0] = 99
    with pytest.raises(ValueError, match="prune_ratio"):
        space.decode(tuple(bad))


def test_config_is_frozen_and_hashable():
    cfg = CandidateConfig(prune_ratio=0.5)
    with pytest.raises(AttributeError):
        cfg.prune_ratio = 0.1  # type: ignore[misc]
    assert len({cfg, CandidateConfig(prune_ratio=0.5)}) == 1


def test_key_is_stable_and_canonical():
    a = CandidateConfig(precision=Precision.FP32, calibration=Calibration.ENTROPY, per_channel=False)
    b = CandidateConfig(precision=Precision.FP32)
    # calibration cannot matter for an FP32 model: same artifact, same key
    assert a.key == b.key
    assert CandidateConfig(epochs=0, lr=3e-3, regularizer=Regularizer.KD).key == CandidateConfig().key
    assert CandidateConfig(prune_ratio=0.0, importance=Importance.TAYLOR).key == CandidateConfig().key
    assert CandidateConfig(prune_ratio=0.5).key != CandidateConfig(prune_ratio=0.6).key
    # fixed value: the key must not depend on the process (no salted hash())
    assert CandidateConfig().key == CandidateConfig().key and len(CandidateConfig().key) == 16


def test_torch_key_ignores_quantization_and_runtime_genes():
    a = CandidateConfig(prune_ratio=0.5, epochs=2, precision=Precision.INT8_STATIC, threads=1)
    b = CandidateConfig(prune_ratio=0.5, epochs=2, precision=Precision.FP32, threads=2)
    assert a.torch_key == b.torch_key and a.key != b.key
    assert a.torch_key != CandidateConfig(prune_ratio=0.5, epochs=4).torch_key


def test_new_genes_are_canonical():
    static = dict(precision=Precision.INT8_STATIC, epochs=2)
    # QAT cannot matter for FP32, dynamic INT8 or without a fine-tune; exclusions not for FP32
    assert CandidateConfig(qat=True, quant_exclude=QuantExclude.FIRST).key == CandidateConfig().key
    assert CandidateConfig(qat=True, precision=Precision.INT8_STATIC).canonical().qat is False
    assert CandidateConfig(qat=True, **static).canonical().qat is True
    # QAT sets its own scales and quantizes every layer
    a = CandidateConfig(qat=True, calibration=Calibration.ENTROPY, quant_exclude=QuantExclude.LAST, **static)
    assert a.key == CandidateConfig(qat=True, **static).key
    assert CandidateConfig(quant_exclude=QuantExclude.LAST, **static).key != CandidateConfig(**static).key
    # QAT and low rank are torch-stage genes; exclusions are not
    assert a.torch_key != CandidateConfig(**static).torch_key
    assert CandidateConfig(lowrank_ratio=0.5).torch_key != CandidateConfig().torch_key
    assert (CandidateConfig(quant_exclude=QuantExclude.FIRST, **static).torch_key
            == CandidateConfig(**static).torch_key)
    with pytest.raises(ConfigError, match="lowrank_ratio"):
        SearchSpace(lowrank_ratio=(1.0,))


def test_json_roundtrip():
    cfg = CandidateConfig(prune_ratio=0.3, regularizer=Regularizer.L1, epochs=2,
                          precision=Precision.INT8_STATIC, calibration=Calibration.PERCENTILE,
                          lowrank_ratio=0.25, quant_exclude=QuantExclude.FIRST_LAST)
    assert CandidateConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown config key"):
        CandidateConfig.from_json({"nope": 1})


def test_space_validation():
    with pytest.raises(ConfigError, match="at least one choice"):
        SearchSpace(threads=())
    with pytest.raises(ConfigError, match=r"\[0, 0.8\]"):
        SearchSpace(prune_ratio=(0.9,))


def test_plain_values_are_read_as_their_genes_type():
    cfg = CandidateConfig(importance="l2", precision="int8_static", regularizer="kd", prune_ratio=0)
    assert cfg.importance is Importance.L2 and cfg.precision is Precision.INT8_STATIC
    assert cfg.regularizer is Regularizer.KD and isinstance(cfg.prune_ratio, float)
    assert cfg == CandidateConfig.from_json(cfg.to_json())
    with pytest.raises(ConfigError, match="invalid config value"):
        CandidateConfig(importance="l3")
