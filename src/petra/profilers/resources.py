"""What the machine was doing while a measurement ran: resident memory and other processes' CPU.

The load average alone cannot say whether a figure was disturbed: it lags by a minute and counts
the measurement itself. ``CpuWatch`` instead reads, from ``/proc/stat``, the CPU time spent on
the cores this process may run on and subtracts this process's own CPU time: what is left is
other processes' load during exactly this interval, in cores.

Peak memory of one session: Linux lets a process reset its high-water mark (writing ``5`` to
``/proc/self/clear_refs``), so a long-lived worker can report each session's own peak instead of
the largest peak it has ever had.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
# /proc/stat columns after the name: user nice system idle iowait irq softirq steal guest guest_nice;
# guest time is already inside user, idle and iowait are not busy.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss() -> int | None:
    """Resident set size of this process now, in bytes."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss() -> int:
    """High-water mark of resident memory in bytes (since the last ``reset_peak_rss``)."""
    kib = _status_kib("VmHWM")
    if kib is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS; never reset
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if os.uname().sysname == "Darwin" else maxrss * 1024
    return kib * 1024


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def _busy_seconds(cpus: set[int]) -> float | None:
    """CPU seconds spent busy so far on the given cores, by every process."""
    total = 0.0
    found = False
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *cols = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                if int(name[3:]) in cpus:
                    total += sum(int(cols[i]) for i in _BUSY_COLUMNS if i < len(cols))
                    found = True
    except (OSError, ValueError):
        return None
    return total * _TICK_S if found else None


def _own_cpu_seconds() -> float:
    return time.process_time()  # every thread of this process, nanosecond clock


@dataclass
class CpuWatch:
    """Other processes' CPU use on this process's cores between ``start()`` and ``stop()``.

    ``/proc/stat`` counts in clock ticks (10 ms): over a 50 ms measurement of a fast model the
    error would be most of a core. ``stop()`` therefore keeps the window open (idle, so that
    only the neighbours are counted) until ``min_window_s`` has passed: +-0.1 core at 0.4 s.
    """

    min_window_s: float = 0.4
    cpus: frozenset[int] = frozenset()
    _wall: float = 0.0
    _busy: float | None = None
    _own: float = 0.0

    def start(self) -> CpuWatch:
        self.cpus = frozenset(os.sched_getaffinity(0))
        self._wall, self._own = time.monotonic(), _own_cpu_seconds()
        self._busy = _busy_seconds(set(self.cpus))
        return self

    def stop(self) -> float | None:
        """Mean number of cores kept busy by other processes (0 = idle, 1 = one core's worth)."""
        if self._busy is None:
            return None
        rest = self.min_window_s - (time.monotonic() - self._wall)
        if rest > 0:
            time.sleep(rest)
        busy = _busy_seconds(set(self.cpus))
        wall = time.monotonic() - self._wall
        if busy is None or wall <= 0:
            return None
        other = (busy - self._busy) - (_own_cpu_seconds() - self._own)
        return min(float(len(self.cpus)), max(0.0, other / wall))
