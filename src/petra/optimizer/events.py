"""What a running study tells the outside world: the events it emits, and the smallest sinks.

The study never prints: it calls these methods on one sink. The sinks that people and CI
watch (a live status line, plain lines, JSON lines, MLflow) live outside the optimizer
(``petra.progress``, ``petra.tracking``) and subclass ``Events``; the study's own default is
``LogEvents`` on the ``petra`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from petra.candidate import describe


class Events:
    """The event protocol, every method a no-op: a sink overrides what it cares about."""

    def run_start(self, info: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...

    def genes_removed(self, removed: list[tuple[str, str]]) -> None:
        """(gene, reason) of each gene taken out of the run's space before the baseline."""

    def trial_start(self, number: int, generation: int, config: dict[str, Any]) -> None: ...

    def stage(self, name: str) -> None: ...

    def trial_end(self, entry: dict[str, Any]) -> None: ...

    def generation_end(self, summary: dict[str, Any]) -> None: ...

    def finish(self, results: dict[str, Any], out_dir: Any) -> None: ...

    def close(self) -> None: ...


class Fanout(Events):
    """Several sinks at once (the terminal and MLflow, say)."""

    def __init__(self, *sinks: Events) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def _all(self, name: str, *args) -> None:
        for s in self.sinks:
            getattr(s, name)(*args)

    def run_start(self, info):
        self._all("run_start", info)

    def message(self, text):
        self._all("message", text)

    def genes_removed(self, removed):
        self._all("genes_removed", removed)

    def trial_start(self, number, generation, config):
        self._all("trial_start", number, generation, config)

    def stage(self, name):
        self._all("stage", name)

    def trial_end(self, entry):
        self._all("trial_end", entry)

    def generation_end(self, summary):
        self._all("generation_end", summary)

    def finish(self, results, out_dir):
        self._all("finish", results, out_dir)

    def close(self):
        self._all("close")


def trial_line(e: dict[str, Any]) -> str:
    desc = describe(e["config"])
    if e.get("latency_ms") is None:
        return f"  #{e['trial']:<3} {desc:<60} FAIL  {e.get('reason')}"
    m = e["metric"]
    return (f"  #{e['trial']:<3} {desc:<60} {e['state']:<10} {m['name']}={m['val']:.2f} "
            f"p50={e['latency_ms']['p50']:.4f}ms size={e['size_bytes'] / 1e3:.0f}kB "
            f"({e['elapsed_s']:.1f}s)")


def generation_line(s: dict[str, Any]) -> str:
    best = s.get("best")
    best_txt = (f", best feasible p50 {best['p50_ratio']:.3f}x size {best['size_ratio']:.3f}x "
                f"{best['metric']:.2f}" if best else ", no feasible candidate yet")
    cap = f"/{s['generations']}" if s.get("generations") else ""
    return (f"generation {s['generation']}{cap}: {s['trials']} trials, "
            f"front {s['front_size']}{best_txt}, elapsed {s['elapsed_s']:.0f}s")


def removed_line(removed: list[tuple[str, str]]) -> str:
    return "genes removed: " + "; ".join(f"{gene} ({reason})" for gene, reason in removed)


class LogEvents(Events):
    """One line per message, trial and generation through ``log`` (by default the ``petra``
    logger at INFO, which prints nothing unless the application configured logging)."""

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self.log = log or logging.getLogger("petra").info

    def message(self, text: str) -> None:
        self.log(text)

    def genes_removed(self, removed: list[tuple[str, str]]) -> None:
        if removed:
            self.log(removed_line(removed))

    def trial_end(self, entry: dict[str, Any]) -> None:
        self.log(trial_line(entry))

    def generation_end(self, summary: dict[str, Any]) -> None:
        self.log(generation_line(summary))
