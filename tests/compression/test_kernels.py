"""Kernel cropping: long same-padded kernels cut to their centre, shapes kept, short ones untouched."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from petra.compression.kernels import KernelCrop, crop_kernels, cuttable, kept_taps
from petra.compression.probe import count_params
from petra.compression.regularizers import CrossEntropy
from petra.compression.training import fit, predict
from petra.exporters import export_onnx
from petra.models.digits import DigitsResNet
from petra.models.ucr import InceptionTime, load_ucr


def _conv_taps(path) -> list[list[int]]:
    graph = onnx.load(str(path)).graph
    inits = {t.name: list(t.dims) for t in graph.initializer}
    return [inits[n.input[1]][2:] for n in graph.node if n.op_type == "Conv"]


@pytest.fixture(scope="module")
def series():
    return load_ucr("ItalyPowerDemand")


def test_kept_taps_are_odd_central_and_never_below_three():
    assert [kept_taps(k, 0.5) for k in (39, 19, 9, 5, 3, 1)] == [21, 11, 5, 3, 3, 1]
    assert [kept_taps(k, 0.25) for k in (39, 19, 9)] == [11, 5, 3]
    assert kept_taps(39, 1.0) == 39


def test_inception_kernels_are_cut_to_their_centre_and_shapes_kept(series):
    torch.manual_seed(0)
    model = InceptionTime(1, 2, nf=4, depth=3).eval()
    x = torch.from_numpy(series[1].x[:8])
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in cuttable(model)}
    params = count_params(model)
    changed = crop_kernels(model, 0.5)
    assert sorted(changed) == sorted(before) and len(changed) == 9  # 3 long kernels x 3 modules
    for name, w in before.items():
        conv = model.get_submodule(name)
        k, n = w.shape[-1], conv.kernel_size[0]
        assert n == kept_taps(k, 0.5) and conv.padding[0] == n // 2
        assert torch.equal(conv.weight.detach(), w[..., (k - n) // 2:(k - n) // 2 + n])
    assert model(x).shape == (8, 2) and count_params(model) < 0.7 * params


def test_strided_and_2d_convs_keep_their_output_shape():
    conv = nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.Conv2d(8, 8, (9, 3), padding=(4, 1)),
                         nn.Conv2d(8, 8, 5, padding=0))  # not same-padded: never cut
    x = torch.randn(2, 3, 17, 23)
    shape = conv(x).shape
    assert crop_kernels(conv, 0.25) == ["0", "1"]
    assert conv[0].kernel_size == (3, 3) and conv[1].kernel_size == (3, 3) and conv[2].kernel_size == (5, 5)
    assert conv(x).shape == shape


def test_applies_to_long_kernels_only(series):
    x = torch.from_numpy(series[1].x[:1])
    assert KernelCrop().applies(InceptionTime(1, 2, nf=4, depth=3), x, None) is None
    why = KernelCrop().applies(DigitsResNet(), torch.zeros(1, 1, 8, 8), None)
    assert why is not None and "5 or more taps" in why
    with pytest.raises(ValueError):
        crop_kernels(InceptionTime(1, 2, nf=4, depth=3), 0.0)


def test_cut_model_trains_and_exports_with_the_short_kernels(series, tmp_path):
    train, val, _ = series
    torch.manual_seed(0)
    model = InceptionTime(1, 2, nf=4, depth=3)
    fit(model, train, epochs=3, lr=3e-3, batch_size=64, seed=0)
    crop_kernels(model, 0.25)
    fit(model, train, epochs=3, lr=1e-3, batch_size=64, seed=0, loss=CrossEntropy())
    acc = float((predict(model, val.x).argmax(1) == val.y).mean())
    assert acc > 0.8  # ItalyPowerDemand: a 24-step series; 3 taps still separate its two classes
    art = export_onnx(model, torch.from_numpy(val.x[:1]), tmp_path / "m.onnx")
    assert max(t for taps in _conv_taps(art.path) for t in taps) == 11  # 39->11, 19->5, 9->3
    got = ort.InferenceSession(str(art.path)).run(None, {"input": val.x[:16]})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval()(torch.from_numpy(val.x[:16])).numpy(), atol=1e-4)
