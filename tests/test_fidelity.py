"""The cheap pass of successive halving trains a fraction of the candidate's own fine-tune."""

import numpy as np
import onnx
from onnx import numpy_helper

from petra.fidelity import LOW_FIDELITY
from petra.optimizer.genome import CandidateConfig
from petra.pipeline import CandidateBuilder
from petra.runtimes import get_runtime


def _weights(path) -> list[np.ndarray]:
    return [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]


def test_a_cheap_epoch_is_a_quarter_of_a_full_one():
    assert [LOW_FIDELITY.steps(n) for n in (64, 128, 94, 2)] == [16, 32, 24, 1]
    assert "25% of its fine-tune steps" in LOW_FIDELITY.describe()


def test_more_epochs_train_longer_at_low_fidelity_too(tiny_task, tiny_teacher, tmp_path):
    # a fixed one-epoch cheap pass gave 1, 2 and 6 epochs the same training (the same weights), so
    # it could not tell a candidate that needs a long fine-tune from one that has it
    b = CandidateBuilder(tiny_task, tiny_teacher, get_runtime("onnxruntime"), tmp_path, stage_cache=False)
    cheap = [_weights(b.build(CandidateConfig(prune_ratio=0.3, epochs=e).canonical(),
                              fidelity=LOW_FIDELITY).path) for e in (1, 2)]
    full = _weights(b.build(CandidateConfig(prune_ratio=0.3, epochs=1).canonical()).path)
    assert [w.shape for w in cheap[0]] == [w.shape for w in cheap[1]] == [w.shape for w in full]
    assert any(not np.array_equal(a, c) for a, c in zip(cheap[0], cheap[1]))
    assert any(not np.array_equal(a, c) for a, c in zip(cheap[0], full))
