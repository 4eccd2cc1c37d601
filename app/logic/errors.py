"""What the user reads when something fails.

A user error (`service.USER_ERRORS`: every `EntroDropError`, including the dashboard's own
`ExportPathError` and `UploadError`, and missing or unreadable files) or running out of
memory gets its one-paragraph message. Anything else is a bug: its traceback goes to a log
file and the user gets one line saying where.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path

from analysis.paths import cache_dir
from entrodrop import service

log = logging.getLogger("entrodrop.app")

OUT_OF_MEMORY = ("Out of memory. Lower the batch size, N or T, choose a smaller model, or use "
                 "float16/bfloat16; then try again.")
LOG_NAME = "app-errors.log"
_LOG_LOCK = threading.Lock()


def describe_error(exc: BaseException) -> str | None:
    """A one-paragraph message for an error the user can act on; None for a bug."""
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    ):
        return OUT_OF_MEMORY
    if isinstance(exc, service.USER_ERRORS):
        text = " ".join(str(exc).split())
        return text or type(exc).__name__
    return None


def error_log_path() -> Path:
    """Where internal errors' tracebacks go: `<cache>/logs/app-errors.log`."""
    return cache_dir() / "logs" / LOG_NAME


def _one_line(exc: BaseException, limit: int = 200) -> str:
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    text = text.rstrip(". ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record_internal_error(what: str, exc: BaseException) -> str:
    """Append `exc`'s traceback to the error log and return the one line the user sees:
    `Internal error: <what failed, and the exception>. The full traceback is in <path>`."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    path = error_log_path()
    try:
        with _LOG_LOCK:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as out:
                out.write(f"--- {stamp} pid {os.getpid()}: {what} failed\n{trace}\n")
        where = f"`{path}`"
    except OSError:
        where = "the server log"
    log.error("%s failed; traceback also in %s", what, where, exc_info=exc)
    return (f"Internal error: {what} failed with {_one_line(exc)}. "
            f"The full traceback is in {where}")
