"""The sinks people and CI watch a study through.

The study emits events through the protocol of ``petra.optimizer.events`` (trial started,
stage reached, trial ended, generation ended, finished); the sinks here decide what to do with
them: a live rich status line for people, plain lines for logs and tests, one JSON object per
line for CI (MLflow is ``petra.tracking``). The study never branches on how it is watched.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from petra.optimizer.events import Events, Fanout, LogEvents, generation_line, removed_line, trial_line

__all__ = ["Events", "Fanout", "JsonProgress", "PlainProgress", "Progress", "QuietProgress", "RichProgress",
           "generation_line", "trial_line"]

#: the sinks' base class under its older name
Progress = Events


class PlainProgress(LogEvents):
    """One line per event through a ``log`` callable (print, a logger, a list's append)."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        super().__init__(log)


class QuietProgress(Events):
    """Nothing while running: CI logs get the final summary only."""


class JsonProgress(Events):
    """One JSON object per event on a stream: machine-readable CI logs."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout

    def _emit(self, event: str, **data: Any) -> None:
        self.stream.write(json.dumps({"event": event, "t": time.time(), **data}, default=str) + "\n")
        self.stream.flush()

    def run_start(self, info):
        self._emit("run_start", **info)

    def message(self, text):
        self._emit("message", text=text)

    def genes_removed(self, removed):
        self._emit("genes_removed", removed=[{"gene": g, "reason": r} for g, r in removed])

    def trial_start(self, number, generation, config):
        self._emit("trial_start", trial=number, generation=generation, config=config)

    def stage(self, name):
        self._emit("stage", stage=name)

    def trial_end(self, entry):
        self._emit("trial_end", **{k: entry.get(k) for k in (
            "trial", "generation", "state", "reason", "key", "config", "metric", "latency_ms",
            "throughput_sps", "size_bytes", "elapsed_s")})

    def generation_end(self, summary):
        self._emit("generation_end", **summary)

    def finish(self, results, out_dir):
        self._emit("finish", output=str(out_dir), status=results.get("status"),
                   best=results.get("best", {}).get("ratios_to_baseline"))


class RichProgress(Events):
    """A live status line (generation, candidate, stage, ETA, front, best) above which trial
    lines scroll; the ETA is the smaller of the budget left and the pace of the generations."""

    def __init__(self, console) -> None:
        from rich.live import Live

        self.console = console
        self.info: dict[str, Any] = {}
        self.state = {"generation": 0, "trial": None, "stage": "starting", "front": 0, "best": None}
        self.start = time.monotonic()
        self.gen_times: list[float] = []
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)
        self.live.start()

    def _eta(self) -> str:
        budget = self.info.get("time_budget_s")
        elapsed = time.monotonic() - self.start
        left = [budget - elapsed] if budget else []
        gens_total = self.info.get("generations")
        if self.gen_times and gens_total:
            pace = (self.gen_times[-1] - self.gen_times[0]) / max(1, len(self.gen_times) - 1) \
                if len(self.gen_times) > 1 else self.gen_times[0]
            left.append(pace * (gens_total + 1 - len(self.gen_times)))
        if not left:
            return "?"
        s = max(0, int(min(left)))
        return f"{s // 60}:{s % 60:02d}"

    def _render(self):
        from rich.text import Text

        st = self.state
        best = st["best"]
        best_txt = (f"best p50 {best['p50_ratio']:.3f}x size {best['size_ratio']:.3f}x "
                    f"metric {best['metric']:.2f}" if best else "no feasible yet")
        trial = f"#{st['trial']}" if st["trial"] is not None else "-"
        return Text(f"gen {st['generation']}/{self.info.get('generations') or '∞'} | trial {trial} "
                    f"[{st['stage']}] | front {st['front']} | {best_txt} | ETA {self._eta()}",
                    style="bold cyan")

    def _refresh(self) -> None:
        self.live.update(self._render())

    def run_start(self, info):
        self.info = info
        self.start = time.monotonic()
        self._refresh()

    def message(self, text):
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        self._refresh()

    def genes_removed(self, removed):
        if removed:
            self.message(removed_line(removed))

    def trial_start(self, number, generation, config):
        self.state.update(trial=number, stage="build")
        self._refresh()

    def stage(self, name):
        self.state["stage"] = name
        self._refresh()

    def trial_end(self, entry):
        self.console.print(trial_line(entry), markup=False, highlight=False, soft_wrap=True)
        self.state["stage"] = "done"
        self._refresh()

    def generation_end(self, summary):
        self.gen_times.append(time.monotonic() - self.start)
        self.state.update(generation=summary["generation"], front=summary["front_size"],
                          best=summary.get("best"))
        self.console.print(generation_line(summary), markup=False, highlight=False, soft_wrap=True)
        self._refresh()

    def close(self) -> None:
        self.live.stop()
