"""videojobs: asynchronous AI video generation (Flask API, Celery workers, SurrealDB, fal.ai).

`create_app(settings)` wires the web side as a list of named `register_*` steps.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, Literal

from flask import Flask, g, request
from flask.sessions import SecureCookieSessionInterface

from app.config import Settings

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from app.storage import Storage
    from app.store import Store

__all__ = ["create_app"]


class _SessionInterface(SecureCookieSessionInterface):
    """Mark the cookie Secure exactly when the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure) if request else False


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               storage: Storage | None = None, celery: Celery | None = None,
               redis_client: redis.Redis | Literal[False] | None = None) -> Flask:
    """The Flask app; collaborators may be passed in (one-process mode, tests), and
    `redis_client=False` means no Redis at all (app/wiring.py builds the rest)."""
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


def register_services(app: Flask, settings: Settings, store: Store | None,
                      storage: Storage | None, celery: Celery | None,
                      redis_client: redis.Redis | Literal[False] | None) -> None:
    from app.wiring import web_services

    services = web_services(settings, app.config["SECRET_KEY"], store=store,
                            storage=storage, celery=celery, given_redis=redis_client)
    app.extensions["videojobs"] = services
    app.extensions["videojobs.storage"] = services.storage


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
