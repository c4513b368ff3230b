"""Recurrent compression on real GRUs and LSTMs: pruning removes units for real (any number of
layers, both directions), unrolling keeps the GRU's function, and INT8 reaches the unrolled GRU
and the ONNX LSTM op (DynamicQuantizeLSTM)."""

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from petra.compression.pruning import StructuredPruning
from petra.compression.recurrent import (
    LayerwiseRNN,
    UnrolledGRU,
    prune_recurrent_units,
    recurrent_layers,
    unroll_gru,
)
from petra.errors import PruneError
from petra.exporters import Precision, export_onnx, quantize
from petra.exporters.quantize import QuantExclude
from petra.models.cdnow import GRUEncoder
from petra.models.ucr import load_ucr
from tests.user_models import LSTMClassifier


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return GRUEncoder(features=3, hidden=32, layers=2, num_classes=2).eval()


def test_unrolled_gru_is_the_same_function(encoder):
    x = torch.randn(6, 11, 3)
    unrolled = unroll_gru(copy.deepcopy(encoder))
    assert isinstance(unrolled.gru, UnrolledGRU)
    torch.testing.assert_close(unrolled(x), encoder(x), atol=1e-5, rtol=1e-5)


def test_pruning_dead_units_changes_nothing(encoder):
    """Units whose weights are all zero stay at h=0: removing them must be exact, and the
    magnitude criterion must pick exactly them."""
    dead = torch.arange(0, 32, 2)  # half the units
    g, h = encoder.gru, 32
    with torch.no_grad():
        for layer in range(2):
            rows = torch.cat([dead + k * h for k in range(3)])
            for kind in ("ih", "hh"):
                getattr(g, f"weight_{kind}_l{layer}")[rows] = 0
                getattr(g, f"bias_{kind}_l{layer}")[rows] = 0
            getattr(g, f"weight_hh_l{layer}")[:, dead] = 0
        g.weight_ih_l1[:, dead] = 0
        encoder.head.weight[:, dead] = 0
    x = torch.randn(5, 9, 3)
    before = encoder(x)
    pruned = prune_recurrent_units(copy.deepcopy(encoder), ratio=0.5, round_to=8)
    assert pruned.gru.hidden_size == 16 and pruned.head.in_features == 16
    assert pruned.gru.weight_ih_l1.shape == (48, 16) and pruned.gru.weight_hh_l0.shape == (48, 16)
    torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-5)


def test_round_to_and_parameter_count(encoder):
    n0 = sum(p.numel() for p in encoder.parameters())
    pruned = prune_recurrent_units(copy.deepcopy(encoder), ratio=0.3, round_to=8)
    assert pruned.gru.hidden_size == 24  # 32 * 0.7 = 22.4 -> rounded up to a multiple of 8
    assert sum(p.numel() for p in pruned.parameters()) < 0.7 * n0
    assert prune_recurrent_units(copy.deepcopy(encoder), ratio=0.0).gru.hidden_size == 32


class LastStep(nn.Module):
    """A GRU or LSTM, any depth, either direction, with a Linear head on the last step."""

    def __init__(self, kind, features=3, hidden=32, layers=2, bidirectional=False, proj_size=0):
        super().__init__()
        extra = {"proj_size": proj_size} if proj_size else {}
        self.rnn = kind(features, hidden, layers, batch_first=True, bidirectional=bidirectional, **extra)
        self.head = nn.Linear((proj_size or hidden) * (2 if bidirectional else 1), 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind,bidirectional", [(nn.GRU, True), (nn.LSTM, False), (nn.LSTM, True)])
def test_dead_units_are_the_ones_removed_exactly(kind, bidirectional):
    """Units whose weights are all zero stay at h=0 (and c=0) in every gate layout: removing them
    must be exact, and the criterion must pick exactly them, per direction."""
    torch.manual_seed(0)
    model = LastStep(kind, bidirectional=bidirectional).eval()
    dead = [torch.arange(0, 32, 2), torch.arange(1, 32, 2)]  # other units dead in each direction
    _kill(model, [dead, dead], bidirectional)
    gates = 4 if kind is nn.LSTM else 3
    dirs = ("", "_reverse") if bidirectional else ("",)
    x = torch.randn(5, 9, 3)
    before = model(x)
    pruned = prune_recurrent_units(copy.deepcopy(model), ratio=0.5, round_to=8)
    width = 16 * len(dirs)
    assert pruned.rnn.hidden_size == 16 and pruned.head.in_features == width
    for d in dirs:
        assert getattr(pruned.rnn, f"weight_ih_l1{d}").shape == (gates * 16, width)
        assert getattr(pruned.rnn, f"weight_hh_l0{d}").shape == (gates * 16, 16)
    torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-5)


def _ort_outputs(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x)})[0]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_two_layer_lstm_prunes_exports_and_ort_matches_torch(bidirectional, tmp_path):
    torch.manual_seed(0)
    model = LSTMClassifier(1, hidden=32, layers=2).eval()
    if bidirectional:
        model.lstm = nn.LSTM(1, 32, num_layers=2, batch_first=True, bidirectional=True)
        model.head = nn.Linear(64, 2)
    example = torch.randn(1, 1, 24)
    pruned = StructuredPruning.prune(copy.deepcopy(model), example, ratio=0.5, round_to=8)
    assert pruned.lstm.hidden_size == 16 and pruned.head.in_features == 16 * (2 if bidirectional else 1)
    assert _count(pruned) < 0.35 * _count(model)  # gates and recurrent matrices shrink ~quadratically
    x = torch.randn(7, 1, 24)
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (7, 2)
    path = export_onnx(pruned, example, tmp_path / "pruned.onnx").path
    assert "LSTM" in _ops(path)
    np.testing.assert_allclose(_ort_outputs(path, x.numpy()), out.numpy(), atol=1e-5)


def test_unsupported_shapes_are_errors_not_no_ops():
    proj = LastStep(nn.LSTM, proj_size=4)
    with pytest.raises(PruneError, match="proj_size"):
        prune_recurrent_units(proj, ratio=0.5)
    reason = StructuredPruning().applies(proj, torch.randn(1, 6, 3), None)
    assert "proj_size" in reason and "\n" not in reason  # the probe reports the refusal
    with pytest.raises(PruneError, match="no nn.GRU or nn.LSTM"):
        prune_recurrent_units(nn.Sequential(nn.Linear(3, 2)), ratio=0.5)
    headless = nn.Sequential()
    headless.lstm = nn.LSTM(3, 8, batch_first=True)
    with pytest.raises(PruneError, match="nn.Linear reading the LSTM output"):
        prune_recurrent_units(headless, ratio=0.5)
    with pytest.raises(PruneError, match="unidirectional"):
        unroll_gru(LastStep(nn.GRU, bidirectional=True))


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_reaches_the_unrolled_form_only(encoder, tmp_path):
    x = torch.randn(1, 13, 3)
    plain = export_onnx(copy.deepcopy(encoder), x, tmp_path / "gru.onnx")
    unrolled = export_onnx(unroll_gru(copy.deepcopy(encoder)), x, tmp_path / "unrolled.onnx")
    assert "GRU" in _ops(plain.path) and "GRU" not in _ops(unrolled.path)
    q_plain = quantize(plain, tmp_path / "q_gru.onnx", precision=Precision.INT8_DYNAMIC)
    q_unrolled = quantize(unrolled, tmp_path / "q_unrolled.onnx", precision=Precision.INT8_DYNAMIC)
    assert "GRU" in _ops(q_plain.path)  # the recurrent op stays float
    assert "MatMulInteger" in _ops(q_unrolled.path)  # the recurrent MatMuls are INT8
    import onnxruntime as ort

    sess = ort.InferenceSession(str(q_unrolled.path), providers=["CPUExecutionProvider"])
    xs = np.random.default_rng(0).standard_normal((4, 13, 3)).astype(np.float32)
    out = sess.run(None, {sess.get_inputs()[0].name: xs})[0]
    np.testing.assert_allclose(out, encoder(torch.from_numpy(xs)).detach().numpy(), atol=0.1)


def test_unrolling_is_a_gene_of_quantized_artifacts_only():
    """In float the fused GRU op is faster: an FP32 config asking for unrolling is the plain one."""
    from petra.candidate import CandidateConfig

    fp32 = CandidateConfig(unroll_recurrent=True, precision=Precision.FP32)
    assert fp32.canonical() == CandidateConfig(precision=Precision.FP32).canonical()
    assert fp32.key == CandidateConfig().key
    for p in (Precision.INT8_DYNAMIC, Precision.INT8_STATIC):
        assert CandidateConfig(unroll_recurrent=True, precision=p).canonical().unroll_recurrent


def test_sensitive_exclusion_keeps_every_step_of_one_recurrent_weight_in_float(encoder, tmp_path):
    """An unrolled GRU reads each weight from one MatMul per step: the weight, not one step's
    copy of it, is ranked and kept in float (13 steps x 2 layers: 4 weights, not 30 layers)."""
    from petra.exporters.quantize import weight_groups, weighted_nodes

    x = torch.randn(1, 13, 3)
    art = export_onnx(unroll_gru(copy.deepcopy(encoder)), x, tmp_path / "unrolled.onnx")
    groups = weight_groups(art.path)
    assert len(weighted_nodes(art.path)) > 2 * 13 and len(groups) < 8
    assert sorted(len(nodes) for nodes in groups.values())[-2:] == [13, 13]  # the two hh weights
    data = np.random.default_rng(0).standard_normal((64, 13, 3)).astype(np.float32)
    q = quantize(art, tmp_path / "q.onnx", precision=Precision.INT8_STATIC, calibration_data=data,
                 exclude=QuantExclude.SENSITIVE)
    graph = onnx.load(str(q.path)).graph
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    kept = {w for w, nodes in groups.items() if w in floats
            and all(w in n.input for n in graph.node if n.name in nodes)}
    assert len(kept) == 1  # every node that reads it still reads the float weight
    assert "DequantizeLinear" in _ops(q.path)  # and the rest is INT8


def test_pruned_gru_fine_tunes(encoder, rng):
    """The replaced parameters must be the ones the GRU computes with (flat weights refreshed)."""
    from petra.compression.training import fit
    from petra.models.base import Split

    pruned = prune_recurrent_units(copy.deepcopy(encoder), ratio=0.5, round_to=8)
    split = Split(rng.standard_normal((64, 10, 3)).astype(np.float32), rng.integers(0, 2, 64))
    x = torch.from_numpy(split.x[:4])
    before_w, before_out = pruned.gru.weight_hh_l1.clone(), pruned(x).detach()
    fit(pruned, split, epochs=1, lr=1e-2)
    assert (pruned.gru.weight_hh_l1 - before_w).abs().max() > 0
    assert (pruned(x) - before_out).abs().max() > 0


def test_dynamic_int8_reaches_the_lstm_op_and_keeps_its_predictions(tmp_path):
    """ORT quantizes the ONNX LSTM op (weights per channel) only when W and R are 3-D
    initializers; petra's export and quantize path must give it that, on a trained model."""
    from petra.compression.training import fit

    train, _, test = load_ucr("ItalyPowerDemand")
    torch.manual_seed(0)
    model = LSTMClassifier(1, hidden=32, layers=2)
    fit(model, train, epochs=5, lr=1e-2)
    model.eval()
    fp32 = export_onnx(model, torch.from_numpy(test.x[:1]), tmp_path / "lstm.onnx")
    q = quantize(fp32, tmp_path / "q_lstm.onnx", precision=Precision.INT8_DYNAMIC)
    ops = [n.op_type for n in onnx.load(str(q.path)).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops
    ref, out = _ort_outputs(fp32.path, test.x), _ort_outputs(q.path, test.x)
    with torch.no_grad():
        np.testing.assert_allclose(ref, model(torch.from_numpy(test.x)).numpy(), atol=1e-4)
    assert np.abs(out - ref).mean() < 0.1 * np.abs(ref).mean()
    accuracy, q_accuracy = (ref.argmax(1) == test.y).mean(), (out.argmax(1) == test.y).mean()
    assert accuracy > 0.9  # a model that learned the task (97% here)
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.98 and q_accuracy >= accuracy - 0.02
    # the dynamo export computes W and R (Slice/Concat); the quantize path folds them
    dynamo = export_onnx(model, torch.from_numpy(test.x[:2]), tmp_path / "dynamo.onnx", method="dynamo")
    q_dynamo = quantize(dynamo, tmp_path / "q_dynamo.onnx", precision=Precision.INT8_DYNAMIC)
    assert [n.op_type for n in onnx.load(str(q_dynamo.path)).graph.node].count("DynamicQuantizeLSTM") == 2
    # mixed precision by exclusion reaches the LSTM layers, not only the head
    first = quantize(fp32, tmp_path / "q_first.onnx", precision=Precision.INT8_DYNAMIC,
                     exclude=QuantExclude.FIRST)
    ops = [n.op_type for n in onnx.load(str(first.path)).graph.node]
    assert ops.count("LSTM") == 1 and ops.count("DynamicQuantizeLSTM") == 1 and "MatMulInteger" in ops


class LastState(nn.Module):
    """A 2-layer GRU or LSTM read through its final hidden state ``h_n[-1]``, as many write it."""

    def __init__(self, kind, features=3, hidden=32):
        super().__init__()
        self.rnn = kind(features, hidden, 2, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x):
        _, h = self.rnn(x)
        return self.head((h[0] if isinstance(h, tuple) else h)[-1])


def _kill(model, dead, bidirectional=False):
    """Zero every weight of the ``dead[layer][direction]`` units: they stay at h=0 (and c=0)."""
    rnn, h = model.rnn, model.rnn.hidden_size
    gates = 4 if isinstance(rnn, nn.LSTM) else 3
    dirs = ("", "_reverse") if bidirectional else ("",)
    with torch.no_grad():
        for layer, per_dir in enumerate(dead):
            cols = torch.cat([per_dir[i] + i * h for i in range(len(dirs))])
            for i, d in enumerate(dirs):
                rows = torch.cat([per_dir[i] + k * h for k in range(gates)])
                for kind in ("ih", "hh"):
                    getattr(rnn, f"weight_{kind}_l{layer}{d}")[rows] = 0
                    getattr(rnn, f"bias_{kind}_l{layer}{d}")[rows] = 0
                getattr(rnn, f"weight_hh_l{layer}{d}")[:, per_dir[i]] = 0
            readers = [getattr(rnn, f"weight_ih_l{layer + 1}{d}") for d in dirs] if layer + 1 < len(dead) \
                else [model.head.weight]
            for w in readers:
                w[:, cols] = 0


@pytest.mark.parametrize("kind,bidirectional", [(nn.GRU, False), (nn.LSTM, False), (nn.LSTM, True)])
def test_per_layer_widths_remove_the_dead_units_exactly(kind, bidirectional, tmp_path):
    """Layer 0 has 8 dead units, layer 1 has 16: with one ratio each, exactly those go, the
    module becomes a LayerwiseRNN of two widths, the function does not change, and ONNX
    Runtime computes it too."""
    torch.manual_seed(0)
    model = LastStep(kind, bidirectional=bidirectional).eval()
    n = 2 if bidirectional else 1
    _kill(model, [[torch.arange(i, 32, 4) for i in range(n)], [torch.arange(i, 32, 2) for i in range(n)]],
          bidirectional)
    x = torch.randn(5, 9, 3)
    before = model(x)
    assert [layer for _, layer in recurrent_layers(model)] == [0, 1]
    pruned = prune_recurrent_units(copy.deepcopy(model), ratio=0.0, layer_ratios=[0.25, 0.5])
    assert isinstance(pruned.rnn, LayerwiseRNN)
    assert [m.hidden_size for m, _ in recurrent_layers(pruned)] == [24, 16]
    assert pruned.rnn.layers[1].input_size == 24 * n and pruned.head.in_features == 16 * n
    torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-5)
    assert _count(pruned) < _count(model)
    path = export_onnx(pruned, x[:1], tmp_path / "layerwise.onnx").path
    np.testing.assert_allclose(_ort_outputs(path, x.numpy()), before.detach().numpy(), atol=1e-4)


def test_layerwise_lstm_exports_runs_in_ort_and_quantizes_its_lstm_ops(tmp_path):
    torch.manual_seed(0)
    model = LSTMClassifier(1, hidden=32, layers=2).eval()
    pruned = prune_recurrent_units(copy.deepcopy(model), ratio=0.5, layer_ratios=[0.25, 0.5])
    assert [m.hidden_size for m, _ in recurrent_layers(pruned)] == [24, 16]
    x = torch.randn(7, 1, 24)
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (7, 2)
    fp32 = export_onnx(pruned, x[:1], tmp_path / "layerwise.onnx")
    assert [n.op_type for n in onnx.load(str(fp32.path)).graph.node].count("LSTM") == 2
    np.testing.assert_allclose(_ort_outputs(fp32.path, x.numpy()), out.numpy(), atol=1e-4)
    q = quantize(fp32, tmp_path / "q_layerwise.onnx", precision=Precision.INT8_DYNAMIC)
    assert [n.op_type for n in onnx.load(str(q.path)).graph.node].count("DynamicQuantizeLSTM") == 2
    assert np.abs(_ort_outputs(q.path, x.numpy()) - out.numpy()).max() < 0.1
    pruned.train()
    pruned(x).sum().backward()  # fine-tuning reaches the new modules' weights
    assert pruned.lstm.layers[0].weight_hh_l0.grad.abs().sum() > 0


def test_layerwise_gru_keeps_h_n_reading_unrolls_and_exports(tmp_path):
    """h_n[-1] is the last layer's final state before and after; unrolling and ONNX agree."""
    torch.manual_seed(0)
    model = LastState(nn.GRU).eval()
    _kill(model, [[torch.arange(0, 32, 4)], [torch.arange(0, 32, 2)]])
    x = torch.randn(4, 10, 3)
    before = model(x)
    pruned = prune_recurrent_units(copy.deepcopy(model), ratio=0.0, layer_ratios=[0.25, 0.5])
    assert isinstance(pruned.rnn, LayerwiseRNN) and pruned.rnn.hidden_size == 16
    out, h = pruned.rnn(x)
    assert out.shape == (4, 10, 16) and h.shape == (1, 4, 16)
    torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-5)
    unrolled = unroll_gru(copy.deepcopy(pruned))
    assert all(isinstance(m, UnrolledGRU) for m in unrolled.rnn.layers)
    torch.testing.assert_close(unrolled(x), before, atol=1e-5, rtol=1e-5)
    path = export_onnx(pruned, x[:1], tmp_path / "gru.onnx").path
    np.testing.assert_allclose(_ort_outputs(path, x.numpy()), before.detach().numpy(), atol=1e-4)


def test_equal_layer_widths_keep_the_module_and_pruning_again_works():
    torch.manual_seed(0)
    model = LastState(nn.LSTM).eval()
    same = prune_recurrent_units(copy.deepcopy(model), ratio=0.0, layer_ratios=[0.5, 0.5])
    assert type(same.rnn) is nn.LSTM and same.rnn.hidden_size == 16 and same.rnn.num_layers == 2
    layerwise = prune_recurrent_units(copy.deepcopy(model), ratio=0.0, layer_ratios=[0.0, 0.5])
    again = prune_recurrent_units(layerwise, ratio=0.5)  # each layer of the LayerwiseRNN again
    assert [m.hidden_size for m, _ in recurrent_layers(again)] == [16, 8]
    assert again(torch.randn(2, 5, 3)).shape == (2, 2)


def test_bad_layer_ratios_and_initial_states_are_refused():
    torch.manual_seed(0)
    model = LastStep(nn.LSTM)
    with pytest.raises(PruneError, match="1 ratios for 2 layers"):
        prune_recurrent_units(model, ratio=0.0, layer_ratios=[0.5])
    with pytest.raises(PruneError, match=r"\[0, 0.95\)"):
        prune_recurrent_units(model, ratio=0.0, layer_ratios=[0.5, 0.95])
    assert type(model.rnn) is nn.LSTM and model.rnn.hidden_size == 32  # nothing changed
    pruned = prune_recurrent_units(model, ratio=0.0, layer_ratios=[0.25, 0.5])
    h0 = torch.zeros(2, 3, 24)
    with pytest.raises(ValueError, match="initial states"):
        pruned.rnn(torch.randn(3, 4, 3), (h0, h0))
