"""The collaborators a worker's pipeline needs, built once per process (after fork)."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.queue import Enqueuer
from app.storage import Storage
from app.store import Store


@dataclass
class WorkerContext:
    settings: Settings
    store: Store
    storage: Storage
    fal: Any  # app.fal.FalClient
    enqueuer: Enqueuer
    owner: str  # this process's lease-owner name
    secret_box: Any = None  # app.webhook_secrets.SecretBox (None without SECRET_KEY)
    schedule: Any = None  # app.check_schedule.CheckSchedule
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


def build_context(settings: Settings, celery: Any, *, store: Store | None = None,
                  storage: Storage | None = None) -> WorkerContext:
    from app.fal import FalClient
    from app.storage import build_storage
    from app.store import DatabaseConfig

    if store is None:
        store = Store.open(DatabaseConfig(
            settings.surrealdb_url, settings.surrealdb_namespace, settings.surrealdb_database,
            settings.surrealdb_user, settings.surrealdb_pass))
    from app.check_schedule import CheckSchedule, check_gap
    from app.status_cache import StatusCache

    broker = str(celery.conf.broker_url or "")
    redis_client = None
    if broker.startswith(("redis://", "rediss://")):
        import redis

        # The broker's Redis also holds the status cache, the check schedule and the
        # submit-message markers (none of them the truth: the store is).
        redis_client = redis.Redis.from_url(broker, socket_connect_timeout=0.5,
                                            socket_timeout=1.0)
    store.use_status_cache(StatusCache(redis_client))
    schedule = store.use_check_schedule(
        CheckSchedule(redis_client, check_gap(settings.status_check_interval)))
    from app.webhook_secrets import SecretBox

    enqueuer = Enqueuer(celery, redis_client)
    store.on_new_delivery(enqueuer.deliver)
    return WorkerContext(
        settings=settings, store=store, storage=storage or build_storage(settings),
        fal=FalClient(settings.fal_queue_url, settings.fal_key or "sandbox:sandbox",
                      pool_maxsize=STATUS_THREADS + 16),  # + the pool's submit threads
        enqueuer=enqueuer, owner=worker_name(), schedule=schedule,
        secret_box=SecretBox(settings.secret_key) if settings.secret_key else None)


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
