"""YAML config: every flag settable, every bad value one line naming key, rule and value."""

import pytest

from petra.config import STARTER_CONFIG, load_config
from petra.errors import ConfigError
from tests.test_cli import _one_line_error, petra


def test_starter_config_loads_and_flags_win(tmp_path):
    path = tmp_path / "petra.yaml"
    path.write_text(STARTER_CONFIG)
    cfg = load_config(path)
    assert cfg.task == "digits" and cfg.generations is None and cfg.stagnation == 4 and cfg.max_drop == 1.0
    assert load_config(path, generations=2, max_drop=0.5).generations == 2
    path.write_text("generations: 3\nmax-drop: 0.2\n")  # dashes, as the flags spell them
    cfg = load_config(path)
    assert cfg.generations == 3 and cfg.max_drop == 0.2


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("max_drop: -1\n", "max_drop must be in [0, 100], got -1"),
        ("max_drop: 250\n", "max_drop must be in [0, 100], got 250"),
        ("generations: 0\n", "generations must be > 0, got 0"),
        ("population: 1\n", "population must be >= 2, got 1"),
        ("population: 2.5\n", "population must be an integer, got 2.5"),
        ("time_budget: soon\n", "time_budget must be a number, got 'soon'"),
        ("prefer: fast\n", "prefer must be one of 'latency', 'size' or 'throughput', got 'fast'"),
        ("progress: loud\n", "progress must be one of"),
        ("generatoins: 3\n", "generatoins is not a known key; valid keys: task, runtime"),
        ("- a\n- b\n", "must hold a mapping"),
        ("task: [unclosed\n", "is not valid YAML at line"),
        ("final_sessions: 0\n", "final_sessions must be in [1, 50], got 0"),
        ("search_sessions: 0\n", "search_sessions must be in [1, 10], got 0"),
        ("final_sessions: 6\nfinal_max_sessions: 3\n",
         "final_max_sessions must be >= final_sessions (6), got 3"),
    ],
)
def test_bad_config_values(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="petra init"):
        load_config(tmp_path / "nope.yaml")


def test_cli_bad_config_is_one_line_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("max_drop: -1\n")
    proc = petra("optimize", "--config", str(path))
    _one_line_error(proc, "max_drop must be in [0, 100], got -1")


def test_init_writes_then_refuses_to_overwrite(tmp_path):
    path = tmp_path / "petra.yaml"
    assert petra("init", str(path)).returncode == 0
    assert load_config(path).task == "digits"
    assert "#" in path.read_text()  # commented
    _one_line_error(petra("init", str(path)), "--force")
    assert petra("init", str(path), "--force").returncode == 0
