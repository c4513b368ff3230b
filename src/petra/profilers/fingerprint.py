"""Hardware + library fingerprint: a latency figure means nothing without the machine.

Two figures are comparable only when their fingerprints match: the same CPU model and
instruction set (VNNI/AMX decide what INT8 gains), the same core count, caches, and the same
runtime versions. ``fingerprint_id`` is a short hash of exactly those fields, so a reader can
spot at a glance that two results came from different machines or library versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from petra.profilers.resources import load_average

_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
          "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
          "hypervisor", "neon", "asimd", "asimddp", "sve", "i8mm", "bf16")
_LIBS = ("petra", "torch", "onnx", "onnxruntime", "onnxscript", "openvino", "nncf", "torch-pruning",
         "pygad", "numpy")
#: machine fields that change what a latency figure means (not the OS patch level, not Python)
_IDENTITY = ("cpu", "arch", "cores", "flags", "caches_kib", "smt")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _caches() -> dict[str, int]:
    """Sizes of the caches core 0 sees, e.g. {"L1d": 32, "L2": 1024, "L3": 32768} in KiB."""
    out: dict[str, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")) if base.is_dir() else []:
        level, kind, size = (_read(str(idx / n)) for n in ("level", "type", "size"))
        if not (level and kind and size):
            continue
        name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
        mult = {"K": 1, "M": 1024, "G": 1024 * 1024}.get(size[-1], 0)
        out[name] = int(size[:-1]) * mult if mult else int(size) // 1024
    return out


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
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "logical_cpus": os.cpu_count(),
        "flags": sorted(f for f in _FLAGS if f in flags),
        "caches_kib": _caches(),
        "smt": _read("/sys/devices/system/cpu/smt/active"),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "memory_bytes": mem,
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


def fingerprint(runtime_versions: dict[str, str] | None = None) -> dict:
    """Machine + library versions (+ the runtime's own report), and the short id of both."""
    fp = machine() | {"versions": versions() | (runtime_versions or {})}
    return fp | {"id": fingerprint_id(fp)}


def fingerprint_id(fp: dict) -> str:
    ident = {k: fp.get(k) for k in _IDENTITY} | {"versions": fp.get("versions", {})}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


__all__ = ["fingerprint", "fingerprint_id", "load_average", "machine", "versions"]
