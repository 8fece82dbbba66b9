"""videojobs: asynchronous AI video generation (Flask API, Celery workers, SurrealDB, fal.ai).

`create_app(settings)` wires the web side as a list of named `register_*` steps.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from flask import Flask, g, request
from flask.sessions import SecureCookieSessionInterface

from app.config import Settings

__all__ = ["create_app"]


class _SessionInterface(SecureCookieSessionInterface):
    """Mark the cookie Secure exactly when the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure) if request else False


def create_app(settings: Settings | None = None, *, store: Any = None, storage: Any = None,
               celery: Any = None, redis_client: Any = None) -> Flask:
    """The Flask app; collaborators may be passed in (one-process mode, tests)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    register_config(app, settings)
    register_services(app, settings, store, storage, celery, redis_client)
    register_api(app, settings)
    register_metrics(app)
    return app


def register_config(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=settings.secret_key or secrets.token_urlsafe(32),
        SESSION_COOKIE_NAME="videojobs_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=14 * 24 * 3600,
        # Re-signing the cookie on every poll costs ~15 % of a status request; the
        # session lasts 14 days from login instead of from the last request.
        SESSION_REFRESH_EACH_REQUEST=False,
        # Werkzeug refuses bigger bodies before reading them (413 FILE_TOO_LARGE); the
        # exact cap on the file itself is enforced while streaming it to storage.
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + 64 * 1024,
        JSON_SORT_KEYS=False,
        API_TITLE="videojobs",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.session_interface = _SessionInterface()
    from app.api.security import register_security

    register_security(app, settings)


def register_services(app: Flask, settings: Settings, store: Any, storage: Any, celery: Any,
                      redis_client: Any) -> None:
    from app.api.base import Services
    from app.queue import Enqueuer, make_producer
    from app.ratelimit import LoginThrottle, RateLimiter
    from app.storage import build_storage
    from app.store import DatabaseConfig, Store

    if store is None:
        store = Store.open(DatabaseConfig(
            settings.surrealdb_url, settings.surrealdb_namespace, settings.surrealdb_database,
            settings.surrealdb_user, settings.surrealdb_pass))
    if storage is None:
        storage = build_storage(settings.replace(secret_key=app.config["SECRET_KEY"]))
    if celery is None:
        celery = make_producer(settings.redis_url)
    if redis_client is False:  # explicitly none: count in-process (one-process mode)
        redis_client = None
    elif redis_client is None and settings.redis_url.startswith(("redis://", "rediss://")):
        import redis

        redis_client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=0.5,
                                            socket_timeout=0.5)
    from app.sessions import SessionVersions
    from app.status_cache import StatusCache
    from app.webhook_secrets import SecretBox

    status_cache = store.use_status_cache(StatusCache(redis_client))
    if redis_client is not None:
        from app.check_schedule import CheckSchedule, check_gap

        # Webhook writes take finished jobs out of the workers' status-check schedule.
        store.use_check_schedule(CheckSchedule(redis_client,
                                               check_gap(settings.status_check_interval)))
    enqueuer = Enqueuer(celery, redis_client)
    store.on_new_delivery(enqueuer.deliver)  # failures and cancels end in the API too
    app.extensions["videojobs"] = Services(
        settings=settings, store=store, storage=storage, enqueuer=enqueuer,
        limiter=RateLimiter(settings.rate_limit_per_minute, redis_client),
        status_cache=status_cache, sessions=SessionVersions(store, redis_client),
        login_limiter=LoginThrottle(settings.login_limit_per_account,
                                    settings.login_limit_per_address, redis_client),
        secret_box=SecretBox(app.config["SECRET_KEY"]))
    app.extensions["videojobs.storage"] = storage


def register_api(app: Flask, settings: Settings) -> None:
    from flask_smorest import Api

    from app import dashboard
    from app.api import auth, docs, files, health, library, outbound, templates, video, webhooks
    from app.api.base import SECURITY_SCHEMES
    from app.api.errors import register_error_handlers
    from app.api.schemas import ApiErrorSchema

    class _Api(Api):  # type: ignore[misc]
        # Errors documented per operation in our one shape, no catch-all "default".
        ERROR_SCHEMA = ApiErrorSchema
        DEFAULT_ERROR_RESPONSE_NAME = None

    api = _Api(app)
    for name, scheme in SECURITY_SCHEMES.items():
        api.spec.components.security_scheme(name, scheme)
    from app.api.schemas import DurationField

    api.register_field(DurationField, None, None)  # documented as string-or-integer
    for blueprint in (auth.bp, templates.bp, video.bp, library.bp, outbound.bp):
        api.register_blueprint(blueprint)
    app.register_blueprint(health.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(dashboard.bp)
    register_error_handlers(app)
    auth.register_csrf_guard(app, settings.public_base_url)


def register_metrics(app: Flask) -> None:
    from app.metrics import LATENCY, REQUESTS

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Any) -> Any:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        LATENCY.labels(request.method, route).observe(elapsed)
        return response
