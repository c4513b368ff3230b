"""Measurement in a separate worker process, one at a time.

Why a process: a runtime keeps state across sessions in one process (allocator arenas, thread
pools, JIT caches, OpenVINO's plugin), so the candidate measured second is measured on a
different process than the one measured first; and a runtime that segfaults on a bad graph
must cost one candidate, not the search. Sessions cannot be pickled, so the worker compiles
the artifact itself from its path, the runtime's name and the settings, and sends back plain
data (a ``Measurement``).

Why one worker for many measurements: spawning costs ~0.3 s of interpreter and library start-up
per candidate. The worker is reused (each request compiles a fresh session and drops it), and
is replaced after it crashed, timed out, or served ``max_uses`` requests.

Why a lock: two measurements at once on the same cores measure each other. A thread lock
serializes this process; an advisory file lock per user serializes concurrent petra runs
on the machine (a second run waits for the first one's current measurement to end).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import importlib
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
import types
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from petra import errors
from petra.errors import MeasureError, PetraError
from petra.profilers.fingerprint import fingerprint
from petra.profilers.measure import Measurement, batch_of, measure, screen, sessions_agree
from petra.profilers.resources import current_rss, peak_rss, reset_peak_rss
from petra.profilers.timing import TimingPolicy
from petra.runtimes.base import Runtime

#: environment the worker starts with: helper libraries must not add threads beside the runtime's
_PINNED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


#: runtimes that already compiled once in this (worker) process
_WARMED: set[str] = set()
#: a screened setting's brief timing: it has to rank settings 10%+ apart (ORT BASIC vs ALL on INT8
#: 4-7x, thread counts on a small model 1.2-2x), not to give a figure; ~0.1-0.2 s per setting
SCREEN_POLICY = TimingPolicy(rel_ci=0.05, min_runs=10, max_time_s=0.1, warmup_max_s=0.05)


def runtime_ref(runtime: Runtime | type[Runtime]) -> str:
    cls = runtime if isinstance(runtime, type) else type(runtime)
    return f"{cls.__module__}:{cls.__qualname__}"


@dataclass(frozen=True)
class MeasureRequest:
    """Everything a worker needs, as plain picklable data."""

    artifact: Path
    #: a name in ``petra.runtimes.RUNTIMES``, or ``module:Class`` of any ``Runtime`` subclass
    runtime: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: real inputs, batch first; None: random inputs of the shape the model file declares
    sample: np.ndarray | None = None
    batches: tuple[int, ...] = (1, 32)
    policy: TimingPolicy = TimingPolicy()
    size_bytes: int | None = None
    #: a hard limit for compile + timing; the worker is killed past it
    timeout_s: float = 600.0
    #: .npy files of inputs to run through the same session before timing; their outputs come
    #: back in ``Measurement.extra["outputs"]``, so the task metric is computed on the runtime
    #: without the parent process ever loading it (a runtime crash stays in the worker)
    eval_inputs: tuple[Path, ...] = ()
    #: independent sessions (a fresh compile each); the figure is the fastest one's
    sessions: int = 1
    #: more sessions, up to this many, until the fastest p50 is reproduced (``sessions_agree``)
    max_sessions: int = 0
    #: settings to screen first (one session each, batch 1, ``screen_policy``); the artifact is
    #: then measured at the fastest of them and ``settings`` is not used. Empty: no screen
    screen: tuple[dict[str, Any], ...] = ()
    screen_policy: TimingPolicy = SCREEN_POLICY


def load_runtime(ref: str) -> Runtime:
    from petra.runtimes import RUNTIMES, get_runtime

    if ref in RUNTIMES or ":" not in ref:
        return get_runtime(ref)
    module, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    ok, why = obj.available()
    if not ok:
        raise errors.ConfigError(f"runtime {ref!r} is not usable: {why}")
    return obj()


def _release_memory() -> None:
    """Give freed heap back to the OS, so the next session's RSS starts from the worker's own
    (glibc keeps freed memory otherwise, and a reused worker would hide the next session's)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _screened(runtime: Runtime, req: MeasureRequest, sample: np.ndarray) -> tuple[list[dict], float]:
    """The screen's entries (each setting's batch-1 p50) and its wall seconds."""
    t0 = time.perf_counter()
    entries = screen(lambda s: runtime.compile(Path(req.artifact), **s), req.screen,
                     batch_of(sample, 1), req.screen_policy)
    _release_memory()
    return entries, time.perf_counter() - t0


def _eval_outputs(runtime: Runtime, req: MeasureRequest, settings: dict) -> tuple[list, float]:
    """The runtime's outputs on ``req.eval_inputs`` and the seconds they took, from a session of
    their own at ``settings`` but on every core this worker may use. Why apart from the timed
    sessions: nothing times this inference, yet in the first timed session it ran at that
    session's thread count (one, for most INT8 artifacts), and its batch-256 buffers counted in
    the session's memory. Only the thread count changes: the outputs are the artifact's on this
    runtime (docs/measurement.md has the saving)."""
    if not req.eval_inputs:
        return [], 0.0
    t0 = time.perf_counter()
    cores = len(os.sched_getaffinity(0))
    wide = settings | {"threads": cores} if 0 < settings.get("threads", cores) < cores else settings
    session = runtime.compile(Path(req.artifact), **wide)
    try:  # writeable arrays: OpenVINO shares input memory
        outputs = [session.run_batched(np.load(p)) for p in req.eval_inputs]
    finally:
        del session
        _release_memory()
    return outputs, time.perf_counter() - t0


def _timed_sessions(runtime: Runtime, req: MeasureRequest, settings: dict, sample: np.ndarray,
                    ) -> list[Measurement]:
    """The measurement's sessions at ``settings``, each a fresh compile."""
    size = req.size_bytes if req.size_bytes is not None else Path(req.artifact).stat().st_size
    timed: list[Measurement] = []
    for i in range(max(1, req.sessions, req.max_sessions)):
        if i >= max(1, req.sessions) and sessions_agree([m.p50_ms for m in timed]):
            break
        session = runtime.compile(Path(req.artifact), **settings)
        try:
            timed.append(measure(session, sample, size_bytes=size, batches=req.batches, policy=req.policy))
        finally:
            del session
            _release_memory()
    return timed


def measure_artifact(req: MeasureRequest) -> Measurement:
    """Compile and time one artifact in this process; what the worker runs for each request:
    the screen first when the request has one, then the measurement at its fastest setting."""
    runtime = load_runtime(req.runtime)
    settings = dict(req.screen[0] if req.screen else req.settings)
    if req.runtime not in _WARMED:
        # A runtime's first session in a process also pays its one-time library set-up (~20 MB for
        # ORT); compiling once beforehand keeps that out of every candidate's session memory.
        runtime.compile(Path(req.artifact), **settings)
        _release_memory()
        _WARMED.add(req.runtime)
    if req.sample is not None:
        sample = req.sample
    else:
        from petra.runtimes.inputs import model_input

        sample = model_input(Path(req.artifact)).example(max(req.batches))
    screened, screen_s = _screened(runtime, req, sample) if req.screen else ([], 0.0)
    if screened:
        settings = min(screened, key=lambda e: e["p50_ms"])["settings"]
    outputs, eval_s = _eval_outputs(runtime, req, settings)
    reset = reset_peak_rss()  # after the screen and the metric: the memory is the measured session's
    rss0 = current_rss()
    timed = _timed_sessions(runtime, req, settings, sample)
    m = Measurement.fastest_of(timed) if len(timed) > 1 else timed[0]
    m.screened, m.screen_s = screened, screen_s
    peak = peak_rss()
    m.peak_rss_bytes = peak
    m.session_rss_bytes = max(0, peak - rss0) if reset and rss0 is not None else None
    m.threads = m.threads | {
        "affinity": sorted(os.sched_getaffinity(0)),
        **{k.lower(): os.environ.get(k) for k in _PINNED_ENV},
    }
    m.fingerprint = fingerprint(runtime.versions())
    if outputs:  # the metric's inference: kept apart from the timing (see CandidateBuilder.scored)
        m.extra["outputs"], m.extra["eval_s"] = outputs, eval_s
    return m


def _serve(conn) -> None:
    """Worker loop: one request at a time until the parent sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        try:
            reply: tuple = ("ok", measure_artifact(req))
        except PetraError as exc:
            reply = (type(exc).__name__, str(exc))
        except Exception as exc:  # a library error is this candidate's failure, not the worker's
            reply = ("MeasureError", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        sig = signal.Signals(-code)
        return f"killed by {sig.name} ({signal.strsignal(sig) or 'signal'})"
    return f"exited with code {code}"


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / f"petra-measure-{os.getuid()}.lock"
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _worker_start_state() -> Iterator[None]:
    """What a spawned worker inherits, set only while it starts.

    - Helper libraries' thread pools pinned to 1 (spawn copies the environment at start).
    - No ``__main__``: spawn re-imports the parent's main module in the child; for ``petra`` that
      is the CLI and, through it, torch (~3 s, ~200 MB) in a process that only times a runtime.
      Runtimes are found by registry name or import path, never in ``__main__``.
    """
    env = {k: os.environ.get(k) for k in _PINNED_ENV}
    main = sys.modules.get("__main__")
    os.environ.update({k: "1" for k in _PINNED_ENV})
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stop(proc, conn) -> None:
    """Ask the worker to leave, then make sure it has (used by close() and at garbage collection)."""
    with contextlib.suppress(OSError, ValueError):
        conn.send(None)
    proc.join(2)
    if proc.is_alive():
        proc.kill()
        proc.join(2)
    conn.close()


class WorkerLost(MeasureError):
    """The worker crashed or hung while measuring: it was stopped, the next request starts one."""


class IsolatedMeasurer:
    """Measures artifacts in a worker process, strictly one measurement at a time."""

    def __init__(self, *, max_uses: int = 50, machine_lock: bool = True) -> None:
        if max_uses < 1:
            raise errors.ConfigError(f"max_uses must be >= 1, got {max_uses}")
        self.max_uses, self.machine_lock = max_uses, machine_lock
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._proc = self._conn = None
        self._uses = 0
        self._finalizer: weakref.finalize | None = None
        #: how many worker processes were started (start-up is the cost reuse avoids)
        self.started = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        with _worker_start_state():
            proc = self._ctx.Process(target=_serve, args=(child,), daemon=True, name="petra-measure")
            proc.start()
        child.close()
        self._proc, self._conn, self._uses = proc, parent, 0
        self._finalizer = weakref.finalize(self, _stop, proc, parent)
        self.started += 1

    def _discard(self, kill: bool = False) -> None:
        """Stop the worker: politely when idle, at once (``kill``) when it is busy or hung."""
        if kill and self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._finalizer is not None:
            self._finalizer()
        self._proc = self._conn = self._finalizer = None

    def close(self) -> None:
        with self._lock:
            self._discard()

    def __enter__(self) -> IsolatedMeasurer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def measure(self, req: MeasureRequest) -> Measurement:
        """One measurement; a crash or hang of the worker comes back as ``MeasureError``. A
        screened request that lost its worker is measured again without the screen, at its own
        settings: a setting the runtime crashes on then costs that setting, not the artifact
        (nor the FP32 baseline, and with it the run)."""
        try:
            return self._measure(req)
        except WorkerLost as exc:
            if not req.screen:
                raise
            m = self._measure(replace(req, screen=()))
            m.extra["screen_failed"] = str(exc)
            return m

    def _measure(self, req: MeasureRequest) -> Measurement:
        what = f"{Path(req.artifact).name} on {req.runtime}"
        with self._lock, (_machine_lock() if self.machine_lock else contextlib.nullcontext()):
            if self._proc is None or not self._proc.is_alive() or self._uses >= self.max_uses:
                self._discard()
                self._start()
            self._uses += 1
            proc, conn = self._proc, self._conn
            try:
                conn.send(req)
                if not conn.poll(req.timeout_s):
                    self._discard(kill=True)
                    raise WorkerLost(f"measuring {what} took longer than {req.timeout_s:.0f}s; "
                                     "the worker was stopped")
                kind, payload = conn.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
                proc.join(5)
                code = proc.exitcode
                self._discard()
                raise WorkerLost(f"the measurement worker crashed while measuring {what}: "
                                 f"{_describe_exit(code)}") from exc
            except BaseException:  # Ctrl-C mid-measurement: a late reply must not answer the next request
                self._discard(kill=True)
                raise
        if kind == "ok":
            return payload
        cls = getattr(errors, kind, None)
        if not (isinstance(cls, type) and issubclass(cls, PetraError)):
            cls = MeasureError
        raise cls(payload)


def measure_isolated(
    artifact: Path,
    runtime: str,
    settings: dict[str, Any] | None = None,
    *,
    batches: Sequence[int] = (1,),
    policy: TimingPolicy = TimingPolicy(),
    sample: np.ndarray | None = None,
    sessions: int = 1,
    max_sessions: int = 0,
) -> Measurement:
    """One-off isolated measurement (a worker started and stopped for it)."""
    with IsolatedMeasurer() as m:
        return m.measure(MeasureRequest(Path(artifact), runtime, dict(settings or {}), sample,
                                        tuple(batches), policy, sessions=sessions,
                                        max_sessions=max_sessions))
