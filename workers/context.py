"""The collaborators a worker's pipeline needs, built once per process (after fork)."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.config import Settings
from app.queue import Enqueuer
from app.storage import Storage
from app.store import Store

if TYPE_CHECKING:
    from celery import Celery

    from app.check_schedule import CheckSchedule
    from app.fal import FalClient
    from app.webhook_secrets import SecretBox


@dataclass
class WorkerContext:
    settings: Settings
    store: Store
    storage: Storage
    fal: FalClient
    enqueuer: Enqueuer
    owner: str  # this process's lease-owner name
    schedule: CheckSchedule
    secret_box: SecretBox | None = None  # None without SECRET_KEY
    last_housekeeping: float = 0.0  # monotonic time of the sweep's last full scan
    last_cleanup: float = 0.0  # monotonic time of the last expired-records cleanup
    pid: int = field(default_factory=os.getpid)  # the process it was built in
    _status_pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def status_pool(self) -> ThreadPoolExecutor:
        """The process's pool for concurrent provider status checks (made on first use)."""
        with _lock:
            if self._status_pool is None:
                self._status_pool = ThreadPoolExecutor(STATUS_THREADS,
                                                       thread_name_prefix="status")
            return self._status_pool

    def close(self) -> None:
        with _lock:
            pool, self._status_pool = self._status_pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        self.store.close()


STATUS_THREADS = 32  # concurrent provider status checks per worker process
_context: WorkerContext | None = None
_lock = threading.Lock()


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def build_context(settings: Settings, celery: Celery, *, store: Store | None = None,
                  storage: Storage | None = None) -> WorkerContext:
    """The collaborators from `settings` (app/wiring.py); `store` and `storage` passed in
    are used as they are (one-process mode, tests)."""
    from app.wiring import worker_context

    return worker_context(settings, celery, store=store, storage=storage)


def set_context(context: WorkerContext | None) -> None:
    """Install collaborators explicitly (one-process mode, tests)."""
    global _context
    with _lock:
        _context = context


def get_context() -> WorkerContext:
    """The process's context, built from the environment on first use (after fork)."""
    global _context
    if _context is None or _context.pid != os.getpid():
        with _lock:
            if _context is None or _context.pid != os.getpid():
                from workers.celery_app import get_celery

                _context = build_context(Settings.from_env(), get_celery())
    return _context
