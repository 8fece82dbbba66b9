"""Shared API plumbing: a flask-smorest Blueprint whose validation errors use our shape,
the services a view needs (from `current_app.extensions`), and request guards."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from flask import current_app, g, request
from flask_smorest import Blueprint as SmorestBlueprint
from webargs import core as webargs_core
from webargs.flaskparser import FlaskParser, is_json_request

from app.api.bodies import MAX_JSON_BYTES, parse_json
from app.api.errors import ApiError, flatten_messages, validation_error

if TYPE_CHECKING:
    from app.config import Settings
    from app.queue import Enqueuer
    from app.ratelimit import LoginThrottle, RateLimiter
    from app.sessions import SessionVersions
    from app.status_cache import StatusCache
    from app.storage import Storage
    from app.store import Store
    from app.webhook_secrets import SecretBox

F = TypeVar("F", bound=Callable[..., Any])


class _Parser(FlaskParser):
    """webargs parser answering 400 VALIDATION_ERROR with per-field details."""

    def handle_error(self, error: Any, req: Any, schema: Any, *, error_status_code: Any,
                     error_headers: Any) -> NoReturn:
        messages = error.messages
        if isinstance(messages, dict) and len(messages) == 1:
            (location, inner), = messages.items()
            if location in ("json", "query", "form", "files", "headers"):
                messages = inner
        raise ApiError(400, "VALIDATION_ERROR", flatten_messages(messages))

    def _raw_load_json(self, req: Any) -> Any:
        """Bodies go through `parse_json` (size, depth, string limits), never bare json."""
        if not is_json_request(req):
            return webargs_core.missing
        if (req.content_length or 0) > MAX_JSON_BYTES:
            raise validation_error({"_body": [f"Body is larger than {MAX_JSON_BYTES} bytes."]})
        raw = req.get_data(cache=True)
        return parse_json(raw) if raw else webargs_core.missing

    def _handle_invalid_json_error(self, error: Any, req: Any, *args: Any,
                                   **kwargs: Any) -> NoReturn:
        raise ApiError(400, "VALIDATION_ERROR", {"_body": ["Invalid JSON."]})


_ERRORS = {
    400: "VALIDATION_ERROR (details per field)",
    401: "UNAUTHORIZED (or INVALID_CREDENTIALS at login)",
    402: "INSUFFICIENT_CREDITS",
    403: "CSRF_REJECTED: a cookie-authenticated write from another origin",
    404: "Not found",
    409: "Conflict",
    413: "FILE_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE: the job store is unreachable",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying",
                                "schema": {"type": "integer"}}}


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = _Parser()
    ARGUMENTS_PARSER.DEFAULT_VALIDATION_STATUS = 400

    def errors(self, *statuses: int, **descriptions: str) -> Callable[[F], F]:
        """Declare the error answers an operation can give, all in the one error shape
        (`{"error", "details"?, "message"?}`); `descriptions` override by `_<status>`."""
        from app.api.schemas import ApiErrorSchema

        def decorator(view: F) -> F:
            for status in statuses:
                text = descriptions.get(f"_{status}", _ERRORS[status])
                view = self.alt_response(
                    status, schema=ApiErrorSchema, description=text,
                    headers=_RETRY_AFTER if status in (429, 503) else None)(view)
            return view

        return decorator


@dataclass(frozen=True)
class Services:
    """What views need, wired once by create_app (app/wiring.py)."""

    settings: Settings
    store: Store
    storage: Storage
    enqueuer: Enqueuer
    limiter: RateLimiter
    status_cache: StatusCache
    sessions: SessionVersions
    login_limiter: LoginThrottle
    secret_box: SecretBox


def services() -> Services:
    return cast(Services, current_app.extensions["videojobs"])


@dataclass(frozen=True)
class Principal:
    """Who is calling: from the session cookie or a bearer token."""

    user_id: str
    email: str
    via: str  # "session" | "token"


def principal() -> Principal:
    """The caller (only valid inside `require_auth` views)."""
    return cast(Principal, g.principal)


# OpenAPI security schemes (registered by create_app): a protected operation accepts
# either, so Swagger UI's "Authorize" can send a token, and a signed-in browser its cookie.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "vj_ API token",
                   "description": "An API token from `videojobs tokens create EMAIL`."},
    "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "videojobs_session",
                   "description": "The session cookie set by POST /api/auth/login."},
}
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"cookieAuth": []}]


def require_auth(view: F) -> F:
    """401 UNAUTHORIZED without valid credentials; always the first check. The operation
    is documented as needing one of SECURITY_SCHEMES."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from app.api.auth import resolve_principal

        who = resolve_principal()
        if who is None:
            raise ApiError(401, "UNAUTHORIZED")
        g.principal = who
        return view(*args, **kwargs)

    apidoc = copy.deepcopy(getattr(wrapper, "_apidoc", {}))
    apidoc.setdefault("manual_doc", {})["security"] = SECURITY
    wrapper._apidoc = apidoc  # type: ignore[attr-defined]  # read by flask-smorest
    return cast(F, wrapper)


def require_json(view: F) -> F:
    """415 unless the Content-Type header says JSON: the header decides, not the body."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.mimetype != "application/json":
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE")
        return view(*args, **kwargs)

    return cast(F, wrapper)


def rate_limited(view: F) -> F:
    """429 RATE_LIMITED with Retry-After beyond RATE_LIMIT_PER_MINUTE (per user)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verdict = services().limiter.hit(principal().user_id)
        if not verdict.allowed:
            raise ApiError(429, "RATE_LIMITED", headers={"Retry-After": str(verdict.retry_after)})
        return view(*args, **kwargs)

    return cast(F, wrapper)


def absolute_url(url: str) -> str:
    """Links from PUBLIC_BASE_URL (or relative), never from the request's Host header."""
    from app.api.security import public_url

    return public_url(services().settings, url)
