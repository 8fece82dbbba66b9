"""Sign-in: session cookie for browsers, bearer tokens for programs, and the CSRF guard."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, request, session

from app.api.base import Blueprint, Principal, principal, require_auth, require_json, services
from app.api.errors import ApiError
from app.api.schemas import AccountSchema, LoginSchema
from app.passwords import verify_password

bp = Blueprint("auth", __name__, url_prefix="/api", description="Sign in and the caller's account")

_TOKEN_TTL = 30.0
_token_cache: dict[str, tuple[float, Principal | None]] = {}
_token_lock = threading.Lock()


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _principal_for_token(token: str) -> Principal | None:
    """Token lookups are cached briefly: dashboards and scripts poll every few seconds."""
    now = time.monotonic()
    with _token_lock:
        hit = _token_cache.get(token)
        if hit and hit[0] > now:
            return hit[1]
    row = services().store.tokens.find(token)
    who = Principal(row["user_id"], row["email"], "token") if row else None
    with _token_lock:
        if len(_token_cache) > 10_000:
            _token_cache.clear()
        _token_cache[token] = (now + _TOKEN_TTL, who)
    return who


def resolve_principal() -> Principal | None:
    """Bearer token first (programs), then the signed session cookie (browsers)."""
    token = _bearer_token()
    if token is not None:
        return _principal_for_token(token)
    uid, email, version = session.get("uid"), session.get("email"), session.get("sv", 0)
    if not (isinstance(uid, str) and isinstance(email, str) and isinstance(version, int)):
        return None
    if services().sessions.current(uid) != version:  # logged out, new password, or gone
        return None
    return Principal(uid, email, "session")


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def register_csrf_guard(app: Flask, public_base_url: str | None) -> None:
    """Cookie-carrying writes must come from our own origin (Origin, else Referer).

    Bearer requests and the signed fal webhook are exempt; requests with neither header
    (curl, server-to-server) pass, since browsers always send Origin on cross-site POSTs.
    """
    trusted = {_origin_of(public_base_url)} if public_base_url else set()

    @app.before_request
    def _csrf() -> None:
        if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
            return
        if _bearer_token() is not None or request.path.startswith("/api/webhooks/"):
            return
        claimed = request.headers.get("Origin")
        if claimed is None or claimed == "null":
            referer = request.headers.get("Referer")
            claimed = _origin_of(referer) if referer else claimed
        if claimed is None:
            return
        own = _origin_of(request.host_url)
        if claimed.lower() != own and claimed.lower() not in trusted:
            raise ApiError(403, "CSRF_REJECTED")


def _account(user_id: str) -> dict[str, Any]:
    user = services().store.users.get_by_id(user_id)
    if user is None:
        raise ApiError(401, "UNAUTHORIZED")
    return {"email": user["email"], "credits": user["credits"]}


@bp.route("/auth/login", methods=["POST"])
@require_json
@bp.arguments(LoginSchema)
@bp.response(200, AccountSchema)
@bp.errors(400, 401, 403, 415, 429, 503, _401="INVALID_CREDENTIALS")
def login(body: dict[str, str]) -> dict[str, Any]:
    """Sign in; sets the HttpOnly session cookie. Attempts are throttled per account and
    per client address (429 RATE_LIMITED with Retry-After)."""
    email = body["email"].strip().lower()
    verdict = services().login_limiter.hit(email, request.remote_addr)
    if not verdict.allowed:
        raise ApiError(429, "RATE_LIMITED", headers={"Retry-After": str(verdict.retry_after)})
    user = services().store.users.get_by_email(email)
    if not verify_password(user["password_hash"] if user else None, body["password"]):
        raise ApiError(401, "INVALID_CREDENTIALS")
    assert user is not None
    session.clear()
    session.permanent = True
    session["uid"] = user["id"]
    session["email"] = user["email"]
    session["sv"] = int(user.get("session_version") or 0)
    return {"email": user["email"], "credits": user["credits"]}


@bp.route("/auth/logout", methods=["POST"])
@bp.response(204)
@bp.errors(403, 503)
def logout() -> Response:
    """End the session: this cookie and every copy of it (all of the user's sessions)."""
    who = resolve_principal() if _bearer_token() is None else None
    if who is not None:
        services().sessions.end_all(who.user_id)
    session.clear()
    return Response(status=204)


@bp.route("/me", methods=["GET"])
@require_auth
@bp.response(200, AccountSchema)
@bp.errors(401, 503)
def me() -> dict[str, Any]:
    """The caller's email and credit balance."""
    return _account(principal().user_id)
