"""The hand-off: USAGE.md's snippet must load and run the exported model exactly as written."""

import json
import re
import subprocess
import sys

from tests.test_cli import _one_line_error, petra


def _run_usage_snippet(folder):
    code = re.search(r"```python\n(.*?)```", (folder / "USAGE.md").read_text(), re.S).group(1)
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True,
                          timeout=60)


def test_best_folder_is_deployable(tiny_run):
    out, results, _ = tiny_run
    best = out / "best"
    assert {p.name for p in best.iterdir()} >= {"model.onnx", "manifest.json", "USAGE.md"}
    manifest = json.loads((best / "manifest.json").read_text())
    assert {"ci95_low", "ci95_high"} <= set(manifest["figures"]["latency_ms"])
    assert manifest["versions"]["onnxruntime"] and manifest["machine"]["cores"] >= 1
    proc = _run_usage_snippet(best)
    assert proc.returncode == 0, proc.stderr
    assert "(1, 10)" in proc.stdout


def test_export_any_front_trial(tiny_run, tmp_path):
    out, results, _ = tiny_run
    number = results["pareto"][-1]["trial"]
    proc = petra("export", str(out), "--trial", str(number), "--output", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["trial"] == number
    assert _run_usage_snippet(tmp_path / "x").returncode == 0
    off_front = {t["trial"] for t in results["all_trials"]} - {e["trial"] for e in results["pareto"]}
    off_front -= {results["baseline"]["trial"]}
    if off_front:
        _one_line_error(petra("export", str(out), "--trial", str(min(off_front))), "not on the Pareto front")
