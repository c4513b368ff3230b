"""The deployable hand-off: model file + manifest + USAGE.md with code that loads it as measured.

Built from a results.json entry alone, so ``petra export`` can hand off any trial of a finished
(or interrupted) run without recomputing anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from petra.errors import ConfigError
from petra.exporters.artifact import Artifact
from petra.runtimes import backend, model_input


def write_handoff(dst: Path, run_dir: Path, entry: dict[str, Any], results: dict[str, Any]) -> Path:
    """Copy the entry's artifact to ``dst`` with manifest.json and USAGE.md; returns ``dst``."""
    src = Path(run_dir) / entry["artifact"]
    if not src.is_file():
        raise ConfigError(f"artifact {entry['artifact']!r} of trial {entry.get('trial')} is missing "
                          f"from {str(run_dir)!r}; was the run folder moved or pruned?")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    model_file = "model" + src.suffix
    for f in Artifact.of(src).files:  # an OpenVINO IR is .xml + .bin
        if f.resolve() != (dst / ("model" + f.suffix)).resolve():
            shutil.copyfile(f, dst / ("model" + f.suffix))
    baseline = results.get("baseline") or {}
    manifest = {
        "petra_version": results.get("petra_version"),
        "task": results.get("task"),
        "runtime": results.get("runtime"),
        "trial": entry.get("trial"),
        "config_key": entry.get("key"),
        "config": entry.get("config"),
        "runtime_settings": entry.get("runtime_settings"),
        "metric": entry.get("metric"),
        "figures": {k: entry.get(k) for k in ("latency_ms", "latency_runs", "throughput_sps",
                                              "throughput_batch", "size_bytes", "compile_s")},
        "ratios_to_baseline": entry.get("ratios_to_baseline"),
        "baseline": {k: baseline.get(k) for k in ("metric", "latency_ms", "throughput_sps",
                                                  "size_bytes")},
        "machine": results.get("machine"),
        "versions": results.get("versions"),
    }
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    spec = model_input(dst / model_file)
    runtime = backend((entry.get("config") or {}).get("runtime") or results.get("runtime"))
    settings = entry.get("runtime_settings") or {}
    lat = entry.get("latency_ms") or {}
    metric = entry.get("metric") or {}
    r = entry.get("ratios_to_baseline") or {}
    ratio_txt = (f" ({r['p50_latency']:.3f}x the FP32 baseline's p50, {r['size']:.3f}x its size)"
                 if r else "")
    usage = f"""# petra artifact: {results.get('task')}, trial {entry.get('trial')}

Measured on {results.get('runtime')} ({(results.get('machine') or {}).get('cpu')}, \
{(results.get('machine') or {}).get('cores')} cores) with the settings below:
p50 {lat.get('p50', float('nan')):.4f} ms (95% CI {lat.get('ci95_low', float('nan')):.4f}-\
{lat.get('ci95_high', float('nan')):.4f}), p99 {lat.get('p99', float('nan')):.4f} ms, \
{entry.get('throughput_sps', 0):.0f} samples/s at batch {entry.get('throughput_batch')}, \
{entry.get('size_bytes', 0) / 1e3:.0f} kB{ratio_txt}.
{metric.get('name')}: validation {metric.get('val', float('nan')):.2f}, \
test {metric.get('test', float('nan')):.2f}.

Load and run it exactly as it was measured:

{runtime.usage(model_file, settings, spec)}

`manifest.json` holds the full config, the figures with their confidence intervals, the
library versions and the hardware fingerprint.
"""
    (dst / "USAGE.md").write_text(usage)
    return dst


def load_results(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise ConfigError(f"{str(run_dir)!r} holds no results.json; pass the folder a "
                          "`petra optimize` run wrote (its --output)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{str(path)!r} is not valid JSON; was the run interrupted while "
                          "writing it? re-run or restore it") from None


def find_trial(results: dict[str, Any], number: int) -> dict[str, Any]:
    """A trial of the front, or the baseline, by its number."""
    candidates = list(results.get("pareto") or [])
    if results.get("baseline"):
        candidates.append(results["baseline"])
    for e in candidates:
        if e.get("trial") == number:
            return e
    valid = sorted({e["trial"] for e in candidates})
    raise ConfigError(f"trial {number} is not on the Pareto front of this run; choose one of {valid}")
