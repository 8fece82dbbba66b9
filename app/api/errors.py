"""One error shape for the whole API: `{"error": ..., "details"?: {field: [messages]}}`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.errors import ApiError, validation_error
from app.store.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

__all__ = ["ApiError", "flatten_messages", "register_error_handlers", "validation_error"]


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested message dicts as `{"a.b": ["..."]}`."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten_messages(value, name))
    elif isinstance(messages, list | tuple):
        flat = [m for m in messages if isinstance(m, str)]
        for m in messages:
            if isinstance(m, Mapping):
                out.update(flatten_messages(m, prefix))
        if flat:
            out.setdefault(prefix or "_schema", []).extend(flat)
    else:
        out.setdefault(prefix or "_schema", []).append(str(messages))
    return out


def _render(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
            ) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def register_error_handlers(app: Flask) -> None:
    """Every error, ours or Flask's, leaves as JSON in that one shape
    (docs/api.md §3)."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        body: dict[str, Any] = {"error": exc.error}
        if exc.details:
            body["details"] = exc.details
        return _render(exc.status, body, exc.headers)

    @app.errorhandler(StoreUnavailable)
    def _store_down(exc: StoreUnavailable) -> Response:
        log.error("job store unreachable: %s", exc)
        return _render(503, {"error": "SERVICE_UNAVAILABLE"}, {"Retry-After": "5"})

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        return _render(413, {"error": "FILE_TOO_LARGE"})

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        names = {404: "Not found", 405: "METHOD_NOT_ALLOWED", 400: "BAD_REQUEST"}
        body = {"error": names.get(exc.code or 500, exc.name)}
        # Keep what the exception says about itself (405 carries Allow).
        extra = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return _render(exc.code or 500, body, extra)

    @app.errorhandler(StoreError)
    def _store_error(exc: StoreError) -> Response:
        log.exception("store error on %s %s", request.method, request.path)
        return _render(500, {"error": "INTERNAL_ERROR"})
