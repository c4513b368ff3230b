"""Measurement records: noise and load flags, pooling of rounds, memory and load probes."""

import numpy as np
import pytest

from petra.errors import ConfigError
from petra.profilers import Measurement, Timing, fingerprint, sessions_agree
from petra.profilers.fingerprint import fingerprint_id
from petra.profilers.measure import LOADED_CORES
from petra.profilers.resources import current_rss, peak_rss, reset_peak_rss
from petra.runtimes.inputs import InputSpec, model_input

TIGHT = Timing((1.0,) * 30, 10, 0.02)
WIDE = Timing(tuple(np.linspace(1.0, 2.0, 40)), 10, 0.02)


def _m(latency=TIGHT, other=0.0, batch_timings=None):
    return Measurement(latency, 32, Timing((8.0,) * 30, 10, 0.02), 1000, 0.01, {"threads": 1},
                       batch_timings=batch_timings or {}, other_load_cores=other)


def test_flags_say_when_a_figure_is_not_to_be_trusted():
    assert not _m().noisy and _m().interval_met and not _m().loaded
    assert _m(latency=WIDE).noisy and not _m(latency=WIDE).interval_met
    loaded = _m(other=LOADED_CORES + 0.5)
    assert loaded.loaded and loaded.noisy and loaded.interval_met  # tight, but beside other load
    j = loaded.to_json()
    assert j["loaded"] is True and j["noisy"] is True and j["other_load_cores"] == LOADED_CORES + 0.5


def test_every_batch_size_is_reported():
    m = _m(batch_timings={8: Timing((2.0,) * 30, 10, 0.02)})
    assert list(m.timings) == [1, 8, 32]
    assert m.throughput(8) == pytest.approx(4000.0) and m.throughput_sps == pytest.approx(4000.0)
    assert set(m.to_json()["by_batch"]) == {"1", "8", "32"}


def test_fastest_of_sessions_ignores_slow_sessions_and_keeps_the_worst_load():
    fast, slow = Timing((1.0,) * 30, 10, 0.02), Timing((1.4,) * 30, 10, 0.02)
    sessions = [_m(latency=slow, other=1.0), _m(latency=Timing((1.02,) * 30, 10, 0.02)), _m(latency=fast),
                _m(latency=slow)]
    m = Measurement.fastest_of(sessions)
    assert m.p50_ms == pytest.approx(1.0)  # half the sessions slow cannot move the figure
    assert m.rounds == 4 and m.session_p50s == (1.4, 1.02, 1.0, 1.4)
    assert m.other_load_cores == 1.0 and m.loaded  # but their load is not forgotten
    assert m.to_json()["session_p50_ms"] == [1.4, 1.02, 1.0, 1.4]
    nested = Measurement.fastest_of([m, _m(latency=slow)])
    assert nested.session_p50s == (1.4, 1.02, 1.0, 1.4, 1.4) and nested.rounds == 5
    assert nested.p50_ms == pytest.approx(1.0)
    with pytest.raises(ValueError):
        Measurement.fastest_of([])


def test_the_fastest_session_stands_once_it_is_reproduced():
    assert not sessions_agree([]) and not sessions_agree([1.0])
    assert sessions_agree([1.4, 1.0, 1.019]) and sessions_agree([1.0, 1.0])
    # five slow sessions that agree loosely with each other are not a figure yet
    assert not sessions_agree([1.70, 1.78, 1.81, 1.90, 2.0])
    assert not sessions_agree([1.0, 1.03, 1.4], agree=0.02) and sessions_agree([1.0, 1.03], agree=0.05)

    def timed(p50):
        return _m(latency=Timing((p50,) * 30, 10, 0.02))

    single = timed(1.0)
    assert single.reproduced is None and not single.noisy  # one session: nothing to compare
    apart = Measurement.fastest_of([timed(1.0), timed(1.5), timed(1.7)])
    assert apart.reproduced is False and apart.noisy and apart.to_json()["reproduced"] is False
    again = Measurement.fastest_of([timed(1.5), timed(1.0), timed(1.01)])
    assert again.reproduced is True and not again.noisy and again.p50_ms == pytest.approx(1.0)


def test_peak_rss_resets_and_sees_a_new_allocation():
    if not reset_peak_rss():
        pytest.skip("this kernel does not allow resetting the RSS high-water mark")
    before = current_rss()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    del block
    assert peak_rss() - before >= 60 * 1024 * 1024
    reset_peak_rss()
    assert peak_rss() - current_rss() < 16 * 1024 * 1024  # the high-water mark came back down


def test_fingerprint_identifies_machine_and_versions():
    fp = fingerprint({"onnxruntime": "1.0"})
    assert fp["cores"] >= 1 and fp["versions"]["onnxruntime"] == "1.0" and len(fp["id"]) == 12
    assert fingerprint({"onnxruntime": "2.0"})["id"] != fp["id"]
    assert fingerprint_id(fp) == fp["id"]


def test_model_input_of_onnx_and_openvino_ir(tiny_onnx, tmp_path):
    spec = model_input(tiny_onnx.path)
    assert spec.shape == (None, 1, 8, 8) and spec.dtype == np.float32
    assert spec.example(3).shape == (3, 1, 8, 8)
    ov = pytest.importorskip("openvino")
    ov.save_model(ov.convert_model(str(tiny_onnx.path)), str(tmp_path / "tiny.xml"))
    ir = model_input(tmp_path / "tiny.xml")
    assert ir.shape == (None, 1, 8, 8) and ir.dtype == np.float32


def test_model_input_rejects_what_is_not_a_model(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    with pytest.raises(ConfigError, match="not an ONNX model"):
        model_input(junk)
    (tmp_path / "junk.xml").write_text("<net><layers/></net>")
    with pytest.raises(ConfigError, match="OpenVINO IR"):
        model_input(tmp_path / "junk.xml")
    with pytest.raises(ConfigError, match="batch dimension is fixed at 1"):
        InputSpec("x", (1, 1, 8, 8), np.dtype(np.float32)).check_batch(8)
