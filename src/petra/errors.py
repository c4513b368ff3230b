"""Error hierarchy.

The split matters for control flow, not for taste: a ``ConfigError`` is the user's fault and
stops the run at once with one line and exit code 2, while a ``CandidateError`` belongs to one
candidate only, is recorded with its reason, and the search goes on.
"""

from __future__ import annotations

import threading


class PetraError(Exception):
    """Base of every error petra raises on purpose."""


class ConfigError(PetraError):
    """Bad user input: the message names the fix; the CLI prints it as one line, exit 2."""


class CandidateError(PetraError):
    """One candidate could not be built or measured; the search records it and goes on."""

    stage = "candidate"


class PruneError(CandidateError):
    stage = "prune"


class TrainError(CandidateError):
    stage = "train"


class ExportError(CandidateError):
    stage = "export"


class QuantizeError(CandidateError):
    stage = "quantize"


class CompileError(CandidateError):
    stage = "compile"


class MeasureError(CandidateError):
    stage = "measure"


_STOP = threading.Event()


def request_stop() -> None:
    """Ctrl-C or SIGTERM arrived. Kept as a flag besides the KeyboardInterrupt the signal
    handler raises: Python drops an exception raised while a finalizer or ``__del__`` runs
    ("Exception ignored in ..."), and a search must still stop at its next check."""
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()
