"""`/api/webhook`: the caller's outbound webhook endpoint and its signing secret."""

from __future__ import annotations

from typing import Any

from flask import Response

from app import outbound
from app.api.base import Blueprint, principal, require_auth, require_json, services
from app.api.schemas import WebhookEndpointSchema, WebhookUrlSchema

bp = Blueprint("outbound", __name__, url_prefix="/api/webhook",
               description="Where we tell your program about your jobs (Standard Webhooks)")


@bp.route("", methods=["PUT"])
@require_auth
@require_json
@bp.arguments(WebhookUrlSchema)
@bp.response(200, WebhookEndpointSchema)
@bp.errors(400, 401, 403, 415, 503)
def put_endpoint(body: dict[str, Any]) -> outbound.Endpoint:
    """Set the URL; answers with the signing secret (made on the first PUT, then kept)."""
    svc, who = services(), principal()
    return outbound.set_endpoint(svc.store, svc.secret_box, who.user_id, who.email,
                                 body["url"], svc.settings.allow_private_webhooks)


@bp.route("", methods=["GET"])
@require_auth
@bp.response(200, WebhookEndpointSchema)
@bp.errors(401, 404, 503, _404="Webhook not set")
def get_endpoint() -> dict[str, str]:
    """The URL (never the secret)."""
    return outbound.get_endpoint(services().store, principal().user_id)


@bp.route("", methods=["DELETE"])
@require_auth
@bp.response(204)
@bp.errors(401, 403, 503)
def delete_endpoint() -> Response:
    """Forget the URL and the secret; deliveries not yet made then give up."""
    outbound.delete_endpoint(services().store, principal().user_id)
    return Response(status=204)


@bp.route("/rotate", methods=["POST"])
@require_auth
@bp.response(200, WebhookEndpointSchema)
@bp.errors(401, 403, 404, 503, _404="Webhook not set")
def rotate() -> outbound.Endpoint:
    """A new secret, used from the next attempt on (retries of older events included)."""
    svc = services()
    return outbound.rotate_secret(svc.store, svc.secret_box, principal().user_id)
