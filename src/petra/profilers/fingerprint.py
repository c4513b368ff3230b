"""Hardware + library fingerprint: a latency figure means nothing without the machine."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from importlib import metadata

_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "avx_vnni", "neon")
_LIBS = ("petra", "torch", "onnx", "onnxruntime", "onnxscript", "torch-pruning", "pygad", "numpy")


@lru_cache(maxsize=1)
def machine() -> dict:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and cpu in ("", platform.machine(), platform.processor()):
                    cpu = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "logical_cpus": os.cpu_count(),
        "flags": sorted(f for f in _FLAGS if f in flags),
        "arch": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out = {}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None
