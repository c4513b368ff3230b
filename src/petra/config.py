"""The run configuration, validated before any work starts.

Every rule fails with one line naming the key, the rule and the value, so that a typo costs
seconds, not a crashed search an hour in.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from petra.errors import ConfigError
from petra.optimizer.records import Prefer


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = "digits"
    runtime: str = "onnxruntime"
    device: str = "cpu"
    generations: int = Field(8, gt=0)
    population: int = Field(8, ge=2)
    time_budget: float = Field(180.0, gt=0, description="seconds for the search loop")
    max_drop: float = Field(1.0, ge=0, le=100)
    prefer: Prefer = Prefer.LATENCY
    batch: int = Field(32, gt=0, description="batch size for the throughput figure")
    max_threads: int | None = Field(None, gt=0)
    seed: int = 0
    output: Path | None = None

    @field_validator("device")
    @classmethod
    def _cpu_only(cls, v: str) -> str:
        if v != "cpu":
            raise ValueError(f"only 'cpu' is supported by this build, got {v!r}")
        return v

    def output_dir(self) -> Path:
        if self.output is not None:
            return Path(self.output)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{self.task.replace(':', '_')}-{stamp}"


def load_config(**values) -> RunConfig:
    """Build a RunConfig; pydantic's multi-line report becomes one ConfigError line."""
    try:
        return RunConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{key}: {msg}, got {err.get('input')!r}") from None


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
