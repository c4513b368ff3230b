"""``petra bench``: any model file, measured by the same isolated loop the search uses.

Every check of the user's input runs before a worker starts, so a typo costs one line and
exit code 2. The report never presents a noisy figure as tight: a missed interval or other
processes on the measured cores are stated in the verdict and flagged in the JSON.
"""

from __future__ import annotations

from pathlib import Path

from petra.errors import ConfigError
from petra.profilers.isolated import measure_isolated
from petra.profilers.measure import LOADED_CORES, SESSION_AGREEMENT
from petra.profilers.timing import TimingPolicy
from petra.runtimes.inputs import model_input


def parse_batches(batch: str) -> list[int]:
    try:
        sizes = [int(b) for b in batch.split(",")]
    except ValueError:
        raise ConfigError(f"--batch takes comma-separated integers like 1,8,32, got {batch!r}") from None
    if any(b <= 0 for b in sizes):
        raise ConfigError(f"batch sizes must be positive, got {batch!r}")
    return sorted(set(sizes))


def run_bench(
    artifact: Path,
    *,
    runtime: str = "onnxruntime",
    batch: str = "1",
    threads: int = 1,
    spinning: bool | None = None,
    rel_ci: float = 0.02,
    max_time: float = 2.0,
    sessions: int = 5,
    max_sessions: int = 12,
) -> dict:
    from petra.runtimes import get_runtime

    artifact = Path(artifact)
    if not artifact.is_file():
        raise ConfigError(f"no such model file {str(artifact)!r}; pass the path of an .onnx or .xml file")
    get_runtime(runtime)  # unknown or unusable runtime: one line, before any work
    sizes = parse_batches(batch)
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if sessions < 1:
        raise ConfigError(f"--sessions must be >= 1, got {sessions}")
    if max_sessions < sessions:
        raise ConfigError(f"--max-sessions must be >= --sessions ({sessions}), got {max_sessions}")
    spec = model_input(artifact)
    for b in sizes:
        spec.check_batch(b)
    policy = TimingPolicy(rel_ci=rel_ci, max_time_s=max_time)
    settings: dict = {"threads": threads}
    if spinning is not None:
        settings["spinning"] = spinning
    m = measure_isolated(artifact, runtime, settings, batches=sizes, policy=policy, sessions=sessions,
                         max_sessions=max_sessions)
    report = {"artifact": str(artifact), "runtime": runtime, "threads": threads,
              "sessions": len(m.session_p50s) or 1, "max_sessions": max_sessions,
              "agreement": SESSION_AGREEMENT,
              "policy": {"rel_ci": rel_ci, "max_time_s": max_time}, **m.to_json(with_fingerprint=True)}
    report["results"] = [{"batch": int(b), **r} for b, r in report.pop("by_batch").items()]
    return report


def _load(report: dict) -> str:
    la = report["load_avg_before"], report["load_avg_after"]
    avg = "n/a" if None in la else f"{la[0][0]:.2f} -> {la[1][0]:.2f}"
    other = report["other_load_cores"]
    return (f"other processes kept {other:.2f} cores busy on the measured cores" if other is not None
            else "other processes' load unknown") + f"; 1-min load average {avg}"


def verdict(report: dict) -> str:
    """What a reader must know about how far to trust the table, in plain words."""
    target = report["policy"]["rel_ci"]
    missed = [str(r["batch"]) for r in report["results"] if not r["interval_met"]]
    lines = []
    if report["loaded"]:
        met = "" if missed else "the interval was met, but "
        lines.append(f"WARNING: machine loaded ({_load(report)}; threshold {LOADED_CORES} cores): "
                     f"{met}latencies may be inflated; rerun on an idle machine")
    if missed:
        lines.append(f"WARNING: noisy: the median's 95% interval did not reach +-{50 * target:.1f}% within "
                     f"{report['policy']['max_time_s']:g}s at batch {', '.join(missed)}; "
                     "rerun on an idle machine or raise --max-time")
    if report["reproduced"] is False:
        p50s = ", ".join(f"{p:.4g}" for p in sorted(report["session_p50_ms"])[:4])
        lines.append(f"WARNING: noisy: no second session came within {report['agreement']:.0%} of the "
                     f"fastest in {report['sessions']} sessions (fastest p50s {p50s} ms): the machine's "
                     "speed varied between sessions; rerun on an idle machine or raise --max-sessions")
    if not lines:
        again = (f"; the fastest of {report['sessions']} sessions reproduced within "
                 f"{report['agreement']:.0%}" if report["reproduced"] else "")
        lines.append(f"interval met at every batch size (+-{50 * target:.1f}%){again}; "
                     f"machine quiet ({_load(report)})")
    mib = 1024 * 1024
    peak, sess = report["peak_rss_bytes"], report["session_rss_bytes"]
    lines.append(
        f"compile {report['compile_s'] * 1e3:.1f} ms, file {report['size_bytes'] / 1e3:.0f} kB, "
        f"peak RSS {peak / mib:.0f} MiB" + (f" (session {sess / mib:.1f} MiB)" if sess is not None else "")
        + f", settings {report['runtime_settings']}, fingerprint {report['fingerprint_id']}")
    return "\n".join(lines)
