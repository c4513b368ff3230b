"""Runtime backends, one class each, all behind the ``Runtime`` contract."""

from petra.errors import ConfigError
from petra.runtimes.base import Runtime, Session
from petra.runtimes.onnxruntime import GraphOpt, OnnxRuntime
from petra.runtimes.openvino import Hint, InferencePrecision, OpenVinoRuntime

RUNTIMES: dict[str, type[Runtime]] = {OnnxRuntime.name: OnnxRuntime, OpenVinoRuntime.name: OpenVinoRuntime}

#: the runtime name that makes the runtime itself a gene of the search
AUTO = "auto"


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; choose one of {', '.join(sorted(RUNTIMES))}")
    ok, why = RUNTIMES[name].available()
    if not ok:
        raise ConfigError(f"runtime {name!r} is not usable: {why}")
    return RUNTIMES[name]()


def get_runtimes(name: str) -> dict[str, Runtime]:
    """The runtimes a search targets: one by name, or with ``auto`` every usable one."""
    if name != AUTO:
        if name not in RUNTIMES:
            names = ", ".join(sorted(RUNTIMES))
            raise ConfigError(f"unknown runtime {name!r}; choose one of {names} or {AUTO}")
        return {name: get_runtime(name)}
    usable = {n: cls() for n, cls in RUNTIMES.items() if cls.available()[0]}
    if not usable:
        raise ConfigError("no runtime is usable; pip install onnxruntime or openvino")
    return usable


__all__ = ["AUTO", "RUNTIMES", "GraphOpt", "Hint", "InferencePrecision", "OnnxRuntime", "OpenVinoRuntime",
           "Runtime", "Session", "get_runtime", "get_runtimes"]
