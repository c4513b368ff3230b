"""Runtime backends, one class each, all behind the ``Runtime`` contract."""

from petra.errors import ConfigError
from petra.runtimes.base import Runtime, Session
from petra.runtimes.onnxruntime import GraphOpt, OnnxRuntime

RUNTIMES: dict[str, type[Runtime]] = {OnnxRuntime.name: OnnxRuntime}


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; choose one of {', '.join(sorted(RUNTIMES))}")
    ok, why = RUNTIMES[name].available()
    if not ok:
        raise ConfigError(f"runtime {name!r} is not usable: {why}")
    return RUNTIMES[name]()


__all__ = ["RUNTIMES", "GraphOpt", "OnnxRuntime", "Runtime", "Session", "get_runtime"]
