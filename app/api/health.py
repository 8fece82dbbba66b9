"""Liveness, readiness and Prometheus metrics for operators (no auth; no secrets)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
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
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
