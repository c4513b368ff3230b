"""What a running study tells the outside world: a small event interface and its sinks.

The study emits events (trial started, stage reached, trial ended, generation ended, finished);
sinks decide what to do with them: a live rich status line for people, plain lines for logs and
tests, one JSON object per line for CI, or MLflow runs. Keeping them behind one interface means
the study never branches on how it is being watched.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any


class Progress:
    """No-op sink; subclasses override what they care about."""

    def run_start(self, info: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...

    def trial_start(self, number: int, generation: int, config: dict[str, Any]) -> None: ...

    def stage(self, name: str) -> None: ...

    def trial_end(self, entry: dict[str, Any]) -> None: ...

    def generation_end(self, summary: dict[str, Any]) -> None: ...

    def finish(self, results: dict[str, Any], out_dir: Any) -> None: ...

    def close(self) -> None: ...


class Fanout(Progress):
    """Several sinks at once (the terminal and MLflow, say)."""

    def __init__(self, *sinks: Progress) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def run_start(self, info):
        for s in self.sinks:
            s.run_start(info)

    def message(self, text):
        for s in self.sinks:
            s.message(text)

    def trial_start(self, number, generation, config):
        for s in self.sinks:
            s.trial_start(number, generation, config)

    def stage(self, name):
        for s in self.sinks:
            s.stage(name)

    def trial_end(self, entry):
        for s in self.sinks:
            s.trial_end(entry)

    def generation_end(self, summary):
        for s in self.sinks:
            s.generation_end(summary)

    def finish(self, results, out_dir):
        for s in self.sinks:
            s.finish(results, out_dir)

    def close(self):
        for s in self.sinks:
            s.close()


def trial_line(e: dict[str, Any]) -> str:
    c = e["config"]
    desc = (f"prune={c['prune_ratio']:.1f} ep={c['epochs']} reg={c['regularizer']} "
            f"{c['precision']} thr={c['threads']}")
    if c.get("runtime", "onnxruntime") != "onnxruntime":
        desc = f"ov {desc} {c.get('ov_precision', '')}"
    if e.get("latency_ms") is None:
        return f"  #{e['trial']:<3} {desc:<48} FAIL  {e.get('reason')}"
    m = e["metric"]
    return (f"  #{e['trial']:<3} {desc:<48} {e['state']:<10} {m['name']}={m['val']:.2f} "
            f"p50={e['latency_ms']['p50']:.4f}ms size={e['size_bytes'] / 1e3:.0f}kB "
            f"({e['elapsed_s']:.1f}s)")


def generation_line(s: dict[str, Any]) -> str:
    best = s.get("best")
    best_txt = (f", best feasible p50 {best['p50_ratio']:.3f}x size {best['size_ratio']:.3f}x "
                f"{best['metric']:.2f}" if best else ", no feasible candidate yet")
    return (f"generation {s['generation']}/{s['generations']}: {s['trials']} trials, "
            f"front {s['front_size']}{best_txt}, elapsed {s['elapsed_s']:.0f}s")


class PlainProgress(Progress):
    """One line per event through a ``log`` callable (print, a logger, a list's append)."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log

    def message(self, text: str) -> None:
        self.log(text)

    def trial_end(self, entry: dict[str, Any]) -> None:
        self.log(trial_line(entry))

    def generation_end(self, summary: dict[str, Any]) -> None:
        self.log(generation_line(summary))


class QuietProgress(Progress):
    """Nothing while running: CI logs get the final summary only."""


class JsonProgress(Progress):
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


class RichProgress(Progress):
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
        return Text(f"gen {st['generation']}/{self.info.get('generations', '?')} | trial {trial} "
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
