"""The run configuration, validated before any work starts.

Every rule fails with one line naming the key, the rule and the value, so that a typo costs
seconds, not a crashed search an hour in.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from petra.errors import ConfigError
from petra.optimizer.prefer import Prefer


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = "digits"
    runtime: str = "onnxruntime"
    device: str = "cpu"
    generations: int | None = Field(None, gt=0, description="a cap on NSGA-II generations; by default "
                                    "the time budget decides")
    stagnation: int = Field(4, ge=1, description="stop early after this many generations without a "
                            "better front (validation hypervolume)")
    population: int = Field(8, ge=2)
    time_budget: float = Field(180.0, gt=0, description="wall seconds of the search and the final "
                               "re-measurement (its time is kept from the search); training a baseline "
                               "is reported apart")
    max_drop: float = Field(1.0, ge=0, le=100)
    prefer: Prefer = Prefer.LATENCY
    batch: int = Field(32, gt=0, description="batch size for the throughput figure")
    max_threads: int | None = Field(None, gt=0)
    seed: int = 0
    output: Path | None = None
    multi_fidelity: bool = True
    #: each artifact is screened briefly at every runtime setting that can matter here (threads,
    #: graph level, hint, streams, precision) and measured at the fastest, instead of those
    #: settings being genes that cost a trial each; False: settings are genes again
    screen_settings: bool = True
    stage_cache: bool = True
    progress: Literal["rich", "quiet", "json"] = "rich"
    mlflow_uri: str | None = None
    #: where candidates train and are measured: this machine, or a Ray cluster
    executor: Literal["local", "ray"] = "local"
    #: local training processes (measurements stay one at a time, training paused meanwhile)
    workers: int = Field(1, ge=1, le=64)
    #: wall seconds one candidate's build (train, export, quantize) may take; then it is FAIL
    trial_timeout: float | None = Field(None, gt=0)
    #: resident memory one candidate's build may use, in MB; then it is FAIL
    trial_memory_mb: int | None = Field(None, gt=0)
    #: Ray cluster address (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None starts a local one
    ray_address: str | None = None
    #: measurements run only on nodes that carry the resource ``petra-target:<ray_target>``
    ray_target: str = "default"
    #: where fine-tuning runs ("cuda": Ray asks for a GPU per training task)
    train_device: Literal["cpu", "cuda"] = "cpu"
    #: fine-tuning arithmetic: "auto" is bf16 autocast where the hardware has bf16 matrix units
    #: (x86 AMX, a bf16 GPU), FP32 elsewhere; the baseline always trains in FP32
    train_precision: Literal["auto", "fp32", "bf16"] = "auto"
    #: the end of a search re-measures the front and the baseline in interleaved rounds, one
    #: fresh session each; a figure is its fastest session's, and rounds go on, up to
    #: ``final_max_sessions``, while that fastest one is not reproduced within 2% by another
    final_sessions: int = Field(5, ge=1, le=50)
    final_max_sessions: int = Field(10, ge=1, le=100)
    #: a search-time figure is the fastest p50 of this many fresh sessions (the default is what
    #: kept rankings at Kendall tau >= 0.9 on a noisy 2-vCPU VM, see ``optimizer.estimators``; 1
    #: halves the search's timing on a quiet machine, 3 steadies a drifting one)
    search_sessions: int = Field(3, ge=1, le=10)

    @model_validator(mode="after")
    def _sessions_order(self) -> RunConfig:
        if self.final_max_sessions < self.final_sessions:
            raise ValueError(f"final_max_sessions must be >= final_sessions ({self.final_sessions}), "
                             f"got {self.final_max_sessions}")
        return self

    @field_validator("ray_target")
    @classmethod
    def _resource_name(cls, v: str) -> str:
        if not v or not all(ch.isalnum() or ch in "_.-" for ch in v):
            raise ValueError("must be a name of letters, digits, '_', '.' or '-' (it becomes the Ray "
                             "resource petra-target:NAME)")
        return v

    @field_validator("device")
    @classmethod
    def _cpu_only(cls, v: str) -> str:
        if v != "cpu":
            raise ValueError("must be 'cpu' (GPU targets are not part of this build)")
        return v

    def output_dir(self) -> Path:
        if self.output is not None:
            return Path(self.output)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{self.task.replace(':', '_')}-{stamp}"


def _rule(key: str, err: dict) -> str:
    """Turn one pydantic error into "must be ..." wording that names the rule."""
    kind = err["type"]
    field = RunConfig.model_fields.get(key)
    if kind == "extra_forbidden":
        return f"is not a known key; valid keys: {', '.join(RunConfig.model_fields)}"
    if field is not None and kind in ("greater_than", "greater_than_equal", "less_than",
                                      "less_than_equal"):
        bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field.metadata}
        lo = ("[", bounds["Ge"]) if "Ge" in bounds else ("(", bounds["Gt"]) if "Gt" in bounds else None
        hi = ("]", bounds["Le"]) if "Le" in bounds else (")", bounds["Lt"]) if "Lt" in bounds else None
        if lo and hi:
            return f"must be in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
        if lo:
            return f"must be {'>=' if lo[0] == '[' else '>'} {lo[1]}"
        return f"must be {'<=' if hi[0] == ']' else '<'} {hi[1]}"
    if kind.startswith("int_"):
        return "must be an integer"
    if kind.startswith("float_"):
        return "must be a number"
    if kind == "enum" or kind == "literal_error":
        return f"must be one of {err.get('ctx', {}).get('expected', '')}"
    msg = err["msg"].removeprefix("Value error, ")
    return msg if msg.startswith("must") else "is invalid: " + msg


def load_config(config_file: Path | str | None = None, **values) -> RunConfig:
    """Defaults <- YAML file <- explicit values (``None`` means "not given").

    pydantic's multi-line report becomes one ConfigError line: the key, the rule, the value.
    """
    merged: dict = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(path)!r} ({exc.strerror}); "
                              "check the path or run `petra init` to write one") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}; fix the syntax") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values")
        merged.update({str(k).replace("-", "_"): v for k, v in data.items()})
    merged.update({k: v for k, v in values.items() if v is not None})
    try:
        return RunConfig(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule across keys: its message names them and the values
            raise ConfigError(err["msg"].removeprefix("Value error, ")) from None
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{key} {_rule(key, err)}, got {err.get('input')!r}") from None


STARTER_CONFIG = """\
# petra run configuration. Every key is also a flag of `petra optimize` (flags win).
# Run with:  petra optimize --config petra.yaml

# What to compress: a built-in task (`petra tasks` lists them) or "package.module:make_task".
task: digits
# Where it will run: the fitness of every candidate is measured on this runtime.
runtime: onnxruntime
device: cpu

# Search budget: NSGA-II generations of `population` candidates until time_budget (wall
# seconds of the search and the final re-measurement, whose expected time is kept from the
# search; training a baseline is reported apart) is spent, or until the front has not improved
# for `stagnation` generations. `generations: N` caps the count.
generations: null
stagnation: 4
population: 8
time_budget: 180

# Constraint: largest allowed drop of the validation metric against the FP32 baseline, in the
# metric's points (accuracy in %). Must be in [0, 100].
max_drop: 1.0

# Which objective picks `best` among feasible candidates: latency | size | throughput.
prefer: latency
# Batch size of the throughput figure.
batch: 32
# Cap on intra-op threads (default: all cores of this process).
# max_threads: 2
# Runtime settings (threads, graph level, OpenVINO hint/streams/precision) are screened briefly
# for each built artifact, which is then measured at the fastest; false makes them genes again.
screen_settings: true
seed: 0
# Output folder (default: runs/<task>-<timestamp>).
# output: runs/my-run

# Terminal output: rich (live progress) | quiet | json (one JSON event per line, for CI).
progress: rich
# Log the study to MLflow (one run per study, nested runs per trial), e.g. file:./mlruns
# mlflow_uri: file:./mlruns

# Where candidates train and are measured: local (this machine) | ray (a Ray cluster).
executor: local
# Local training processes; measurements stay one at a time (training is paused meanwhile).
workers: 1
# Limits of one candidate's build (it runs in a training process; past a limit it is FAIL).
# trial_timeout: 600
# trial_memory_mb: 4096
# With executor: ray -- the cluster, and the label of the nodes that are the target hardware
# (started with: ray start --address HEAD:6379 --num-cpus 0 --resources '{"petra-target:edge-a": 1}')
# ray_address: auto
# ray_target: edge-a
# Where fine-tuning runs: cpu | cuda (with ray, each training task asks for one GPU).
train_device: cpu
# Fine-tuning arithmetic: auto (bf16 autocast where the CPU has AMX or the GPU bf16) | fp32 | bf16.
train_precision: auto

# The end of a search re-measures the front and the baseline in interleaved rounds, a fresh
# session each; a figure is its fastest session's, and rounds go on, up to final_max_sessions,
# while no second session comes within 2% of that fastest one. Fewer: a quicker end on a quiet
# machine; more: on a machine whose speed drifts.
final_sessions: 5
final_max_sessions: 10
# A search-time figure is the fastest of this many fresh sessions: 1 on a quiet machine, 3 on
# one whose speed drifts.
search_sessions: 3
"""


def ensure_writable(path: Path) -> Path:
    """Create the output folder now, so an unwritable path fails before the search, not after."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".petra-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write to output folder {str(path)!r} ({exc.strerror or exc}); "
            "pass --output with a writable folder"
        ) from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"output folder {str(path)!r} is not writable; pass --output elsewhere")
    return path
