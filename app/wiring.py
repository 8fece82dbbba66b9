"""Every collaborator built from `Settings` in one place: the store, Redis, the web's Celery
producer, the fal client and the listeners a store feeds (status cache, check schedule,
webhook deliveries), and the two bundles made of them with storage
(`app.storage.build_storage`), the web app's `Services` and a worker's `WorkerContext`.

The web app (`create_app`), the workers (`build_context`), the CLI and `videojobs up` all
build through here, so a setting means the same thing in each of them. Where the two
sides differ on purpose (Redis timeouts, an in-process check schedule) it says so below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from app.config import Settings

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from app.api.base import Services
    from app.check_schedule import CheckSchedule
    from app.fal import FalClient
    from app.queue import Enqueuer
    from app.status_cache import StatusCache
    from app.storage import Storage
    from app.store import DatabaseConfig, Store
    from app.webhook_secrets import SecretBox
    from workers.context import WorkerContext

__all__ = ["WEB_REDIS", "WORKER_REDIS", "RedisTimeouts", "attach_check_schedule",
           "attach_enqueuer", "attach_status_cache", "celery_producer",
           "database_config", "fal_client", "open_store", "redis_client", "secret_box",
           "web_services", "worker_context"]


@dataclass(frozen=True)
class RedisTimeouts:
    """Seconds to wait for a Redis connection and for one reply."""

    connect: float
    read: float


# The web answers polls: its status cache, rate limits and session versions each fall
# back without Redis, so a slow Redis must cost a request little.
WEB_REDIS = RedisTimeouts(connect=0.5, read=0.5)
# A worker's calls include the check schedule's batch claims and rebuilds, which may take
# longer than a web request's single-key reads.
WORKER_REDIS = RedisTimeouts(connect=0.5, read=1.0)


def database_config(settings: Settings) -> DatabaseConfig:
    """Where the store lives and how to sign in (the credentials apply to network URLs)."""
    from app.store import DatabaseConfig

    return DatabaseConfig(settings.surrealdb_url, settings.surrealdb_namespace,
                          settings.surrealdb_database, settings.surrealdb_user,
                          settings.surrealdb_pass)


def open_store(settings: Settings) -> Store:
    """The store the settings name, connected and migrated."""
    from app.store import Store

    return Store.open(database_config(settings))


def redis_client(url: str, timeouts: RedisTimeouts) -> redis.Redis | None:
    """A client for `url` when it is a Redis URL, else None (an in-process broker such
    as `memory://`: everything that would use Redis then works in-process)."""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=timeouts.connect,
                                socket_timeout=timeouts.read)


def celery_producer(settings: Settings) -> Celery:
    """The web's send-only Celery app on REDIS_URL (the workers' is workers.celery_app)."""
    from app.queue import make_producer

    return make_producer(settings.redis_url)


def fal_client(settings: Settings, pool_maxsize: int) -> FalClient:
    """The fal queue client; without FAL_KEY (the sandbox provider) a placeholder key."""
    from app.fal import FalClient

    return FalClient(settings.fal_queue_url, settings.fal_key or "sandbox:sandbox",
                     pool_maxsize=pool_maxsize)


def secret_box(settings: Settings) -> SecretBox | None:
    """The box sealing webhook secrets, or None without SECRET_KEY."""
    from app.webhook_secrets import SecretBox

    return SecretBox(settings.secret_key) if settings.secret_key else None


# A store feeds its listeners on every job write and every new webhook delivery. Each is
# attached once per store and the one in use is returned, so the web app and an
# in-process worker on one store share them.

def attach_status_cache(store: Store, client: redis.Redis | None) -> StatusCache:
    """The status answers' write-through cache (in Redis, else in this process)."""
    from app.status_cache import StatusCache

    return store.use_status_cache(StatusCache(client))


def attach_check_schedule(store: Store, settings: Settings,
                          client: redis.Redis | None) -> CheckSchedule:
    """The workers' status-check schedule (in Redis, else in this process), kept in step
    by every job write: webhook writes take finished jobs out of it."""
    from app.check_schedule import CheckSchedule, check_gap

    return store.use_check_schedule(
        CheckSchedule(client, check_gap(settings.status_check_interval)))


def attach_enqueuer(store: Store, celery: Celery, client: redis.Redis | None) -> Enqueuer:
    """The job-hint sender; each new webhook delivery goes to a worker right after its
    commit (failures and cancels end in the API too)."""
    from app.queue import Enqueuer

    enqueuer = Enqueuer(celery, client)
    store.on_new_delivery(enqueuer.deliver)
    return enqueuer


def web_services(settings: Settings, secret_key: str, *, store: Store | None = None,
                 storage: Storage | None = None, celery: Celery | None = None,
                 given_redis: redis.Redis | Literal[False] | None = None) -> Services:
    """What the web app's views need. Collaborators passed in are used as they are;
    `given_redis=False` means no Redis at all (count and cache in-process: one-process
    mode with an in-process broker); None, the one at REDIS_URL."""
    from app.api.base import Services
    from app.ratelimit import LoginThrottle, RateLimiter
    from app.sessions import SessionVersions
    from app.storage import build_storage
    from app.webhook_secrets import SecretBox

    if store is None:
        store = open_store(settings)
    if storage is None:
        storage = build_storage(settings.replace(secret_key=secret_key))
    if celery is None:
        celery = celery_producer(settings)
    client: redis.Redis | None
    if given_redis is False:
        client = None
    elif given_redis is None:
        client = redis_client(settings.redis_url, WEB_REDIS)
    else:
        client = given_redis
    status_cache = attach_status_cache(store, client)
    if client is not None:  # an in-process schedule here would have no reader
        attach_check_schedule(store, settings, client)
    enqueuer = attach_enqueuer(store, celery, client)
    return Services(
        settings=settings, store=store, storage=storage, enqueuer=enqueuer,
        limiter=RateLimiter(settings.rate_limit_per_minute, client),
        status_cache=status_cache, sessions=SessionVersions(store, client),
        login_limiter=LoginThrottle(settings.login_limit_per_account,
                                    settings.login_limit_per_address, client),
        secret_box=SecretBox(secret_key))


def worker_context(settings: Settings, celery: Celery, *, store: Store | None = None,
                   storage: Storage | None = None) -> WorkerContext:
    """What a worker's tasks need. The broker's Redis also holds the status cache, the
    check schedule and the submit-message markers (none of them the truth: the store is).
    `workers/` is imported here only, when called: the web side never loads it."""
    from app.storage import build_storage
    from workers.context import STATUS_THREADS, WorkerContext, worker_name

    if store is None:
        store = open_store(settings)
    client = redis_client(str(celery.conf.broker_url or ""), WORKER_REDIS)
    attach_status_cache(store, client)
    schedule = attach_check_schedule(store, settings, client)
    enqueuer = attach_enqueuer(store, celery, client)
    return WorkerContext(
        settings=settings, store=store, storage=storage or build_storage(settings),
        fal=fal_client(settings, pool_maxsize=STATUS_THREADS + 16),  # + the submit threads
        enqueuer=enqueuer, owner=worker_name(), schedule=schedule,
        secret_box=secret_box(settings))
