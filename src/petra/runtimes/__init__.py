"""Runtime backends, one class each, all behind the ``Runtime`` contract."""

from petra.errors import ConfigError
from petra.runtimes.base import RUNTIME, THREADS, Runtime, Session
from petra.runtimes.inputs import InputSpec, model_input
from petra.runtimes.onnxruntime import GraphOpt, OnnxRuntime
from petra.runtimes.openvino import Hint, InferencePrecision, OpenVinoRuntime

RUNTIMES: dict[str, type[Runtime]] = {OnnxRuntime.name: OnnxRuntime, OpenVinoRuntime.name: OpenVinoRuntime}

#: the runtime name that makes the runtime itself a gene of the search
AUTO = "auto"


def backend(name: str) -> type[Runtime]:
    """The backend class of a runtime gene's value (no runtime needs to be installed for it)."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ConfigError(f"unknown runtime {name!r}; choose one of {', '.join(sorted(RUNTIMES))}") from None


#: every gene a backend declares, the common ones first (the order of genes in a genome)
RUNTIME_GENES = (RUNTIME, THREADS) + tuple(g for cls in RUNTIMES.values() for g in cls.genes)


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


__all__ = ["AUTO", "RUNTIMES", "RUNTIME_GENES", "GraphOpt", "Hint", "InferencePrecision", "InputSpec",
           "OnnxRuntime", "OpenVinoRuntime", "Runtime", "Session", "backend", "get_runtime", "get_runtimes",
           "model_input"]
