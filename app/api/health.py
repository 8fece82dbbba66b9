"""Liveness and readiness (no auth; no secrets), and Prometheus metrics behind METRICS_TOKEN."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.base import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up (no dependencies checked)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """The job store and the broker answer; 503 names what does not."""
    svc = services()
    checks: dict[str, str] = {}
    for name, probe in (("store", svc.store.db.ping), ("broker", svc.enqueuer.ping)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # report, never raise: this endpoint must answer
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    resp = jsonify({"status": "ok" if ready else "unavailable", "checks": checks})
    resp.status_code = 200 if ready else 503
    return resp


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text, only with `Authorization: Bearer <METRICS_TOKEN>`; without the
    setting the endpoint does not exist (404), so nothing is ever open by default."""
    token = services().settings.metrics_token
    if not token:
        return _json_error(404, "Not found")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        resp = _json_error(401, "UNAUTHORIZED")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return resp
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def _json_error(status: int, error: str) -> Response:
    resp = jsonify({"error": error})
    resp.status_code = status
    return resp
