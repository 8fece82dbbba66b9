"""`POST /api/webhooks/fal`: fal's completion callback, accepted only when fal signed it."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from app import lifecycle
from app.api.base import services
from app.fal_webhooks import (
    JwksUnavailable,
    WebhookRejected,
    WebhookVerifier,
    event_reason,
    parse_webhook,
)

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)


def _verifier() -> WebhookVerifier:
    verifier = current_app.extensions.get("videojobs.webhook_verifier")
    if verifier is None:
        verifier = WebhookVerifier(services().settings.fal_jwks_url)
        current_app.extensions["videojobs.webhook_verifier"] = verifier
    return verifier


@bp.post("/api/webhooks/fal")
def fal_webhook() -> Response:
    """Verify, then finish or fail the job; duplicates answer 200 and change nothing."""
    raw = request.get_data(cache=False)
    try:
        request_id = _verifier().verify(request.headers, raw)
        event = parse_webhook(raw)
        if event.request_id != request_id:
            raise WebhookRejected("request id does not match the signed header")
    except WebhookRejected as exc:
        log.warning("rejected fal webhook: %s", exc)
        resp = jsonify({"error": "UNAUTHORIZED"})
        resp.status_code = 401
        return resp
    except JwksUnavailable as exc:
        # Cannot tell forged from genuine right now; fal retries non-2xx deliveries.
        log.warning("fal webhook not verifiable now: %s", exc)
        resp = jsonify({"error": "SERVICE_UNAVAILABLE"})
        resp.status_code = 503
        resp.headers["Retry-After"] = "30"
        return resp
    video = (event.payload or {}).get("video") if event.ok else None
    video_url = video.get("url") if isinstance(video, dict) else None
    svc = services()
    outcome = lifecycle.apply_webhook(
        svc.store, svc.enqueuer, request.args.get("jobId"), event.request_id, event.ok,
        video_url, None if event.ok else event_reason(event))
    log.info("fal webhook for %s: %s", event.request_id, outcome,
             extra={"fal_request_id": event.request_id})
    return jsonify({"status": outcome})
