"""Logging for operators: the exact lines of docs/api.md §7 on stderr, with structured
context appended."""

from __future__ import annotations

import logging
import sys

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class ContextFormatter(logging.Formatter):
    """`<time> <level> <logger>: <message> key=value ...` (extras as context)."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return base


def configure_logging(level: str = "INFO") -> None:
    """Idempotent: entry points (CLI, gunicorn, Celery) call it once."""
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
