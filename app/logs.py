"""Logging for operators: the exact lines of docs/api.md §7 on stderr, with structured
context appended."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class ContextFormatter(logging.Formatter):
    """`<time> <level> <logger>: <message> key=value ...` (extras as context)."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return base


# Where Celery writes one line per task run: a worker's "received" and "succeeded", beat's
# "Sending due task <entry> (<task>)".
_PER_RUN_LOGGERS = ("celery.worker.strategy", "celery.app.trace", "celery.beat")


class QuietHeartbeat(logging.Filter):
    """Drop Celery's per-run INFO lines for the heartbeat tasks (`HEARTBEAT_TASKS`).

    The sweep runs every second, so a worker logged it twice a second (~170,000 lines a
    day) and beat once more, burying the job lines. Warnings and errors about those
    tasks (a failure, a retry) still pass, and so does every other task's line.
    """

    def __init__(self, tasks: frozenset[str]) -> None:
        super().__init__()
        self.tasks = tasks

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        args = record.args
        if isinstance(args, Mapping):  # the worker's lines: a context dict with "name"
            return args.get("name") not in self.tasks
        if isinstance(args, tuple) and len(args) == 2:  # beat's (entry name, task name)
            return args[1] not in self.tasks
        return True


def quiet_heartbeat_logs() -> None:
    """Install QuietHeartbeat on the loggers that write Celery's per-run lines."""
    from app.queue import HEARTBEAT_TASKS

    for name in _PER_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietHeartbeat) for f in logger.filters):
            logger.addFilter(QuietHeartbeat(HEARTBEAT_TASKS))


def configure_logging(level: str = "INFO") -> None:
    """Idempotent: entry points (CLI, gunicorn, Celery) call it once."""
    quiet_heartbeat_logs()
    root = logging.getLogger()
    if any(getattr(h, "_videojobs", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._videojobs = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3's DEBUG lines carry full URLs, presigned signatures included: never below INFO.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, root.level))


def strip_query(url: str) -> str:
    """The URL without credentials, query or fragment: presigned signatures, keys and
    passwords stay out of logs. Never raises (it runs on error paths)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
