"""The job store: SurrealDB connection, schema and one repository per table."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.store.connection import Database, DatabaseConfig
from app.store.jobs import JobRepository
from app.store.library import LibraryRepository
from app.store.schema import migrate
from app.store.templates import TemplateRepository
from app.store.tokens import TokenRepository
from app.store.users import LedgerRepository, UserRepository
from app.store.webhooks import WebhookRepository

if TYPE_CHECKING:
    from app.check_schedule import CheckSchedule
    from app.status_cache import StatusCache


class Store:
    """All repositories over one Database; build once per process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.users = UserRepository(db)
        self.ledger = LedgerRepository(db)
        self.jobs = JobRepository(db)
        self.templates = TemplateRepository(db)
        self.library = LibraryRepository(db)
        self.tokens = TokenRepository(db)
        self.webhooks = WebhookRepository(db)
        self.status_cache: StatusCache | None = None
        self.check_schedule: CheckSchedule | None = None

    def use_status_cache(self, cache: StatusCache) -> StatusCache:
        """Attach a status cache once per store (every job write feeds it); returns the
        one in use, so the web app and an in-process worker share it."""
        if self.status_cache is None:
            self.status_cache = cache
            self.jobs.listeners.append(cache.put)
        return self.status_cache

    def on_new_delivery(self, enqueue: Callable[[str], Any]) -> None:
        """Send each new webhook delivery to a worker right after its commit (once per
        store: the web app and an in-process worker share one)."""
        if not self.jobs.delivery_listeners:
            self.jobs.delivery_listeners.append(enqueue)

    def use_check_schedule(self, schedule: CheckSchedule) -> CheckSchedule:
        """Attach the status-check schedule once per store (every job write keeps it in
        step with the record); returns the one in use."""
        if self.check_schedule is None:
            self.check_schedule = schedule
            self.jobs.listeners.append(schedule.track)
        return self.check_schedule

    @classmethod
    def open(cls, config: DatabaseConfig, *, run_migrations: bool = True) -> Store:
        db = Database(config)
        db.connect()
        if run_migrations:
            migrate(db)
        return cls(db)

    def close(self) -> None:
        self.db.close()


__all__ = ["Database", "DatabaseConfig", "Store", "migrate"]
