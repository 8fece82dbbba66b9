"""`/api/templates/video...`: start, follow, list and cancel video jobs (docs/api.md §3-5)."""

from __future__ import annotations

from typing import Any

from flask import request

from app import outbound, videos
from app.api.base import (
    Blueprint,
    absolute_url,
    principal,
    rate_limited,
    require_auth,
    require_json,
    services,
)
from app.api.schemas import (
    JobIdBodySchema,
    JobListQuerySchema,
    JobListSchema,
    JobStatusSchema,
    VideoRequestSchema,
    VideoStartedSchema,
    WebhookDeliveryListSchema,
)

bp = Blueprint("video", __name__, url_prefix="/api/templates/video",
               description="Video jobs: start one, follow it, list, cancel")


def _caller() -> videos.Caller:
    who = principal()
    return videos.Caller(who.user_id, who.email)


def _download_url(key: str) -> str:
    return absolute_url(services().storage.download_url(key))


@bp.route("", methods=["POST"])
@require_auth
@rate_limited
@require_json
@bp.arguments(VideoRequestSchema)
@bp.response(200, VideoStartedSchema)
@bp.doc(parameters=[{"in": "header", "name": "Idempotency-Key", "required": False,
                     "description": "A retry with the same key and body returns the first "
                                    "response and charges nothing more (24 h).",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                "pattern": "\\S"}}])
@bp.errors(400, 401, 402, 403, 404, 409, 415, 429, 503,
           _404="Template not found / Start image not found", _409="IDEMPOTENCY_KEY_REUSED")
def start(body: dict[str, Any]) -> dict[str, Any]:
    """Charge the template's credits, record a pending job and queue it; answers at once."""
    svc = services()
    started = videos.start_video(svc.store, svc.enqueuer, _caller(), body,
                                 request.headers.get("Idempotency-Key"),
                                 svc.settings.job_timeout_seconds,
                                 svc.settings.allow_private_webhooks)
    return started.body()


@bp.route("/status", methods=["GET"])
@require_auth
@bp.doc(parameters=[{"in": "query", "name": "jobId", "required": True,
                     "schema": {"type": "string", "minLength": 1}}])
@bp.response(200, JobStatusSchema)
@bp.errors(400, 401, 404, 503, _400="jobId is required", _404="Job not found")
def status() -> tuple[dict[str, Any], dict[str, str]]:
    """The job's status; cheap enough to poll every 3 s, never waits on the provider."""
    # The query string is read directly (no schema pass): this is the hottest endpoint.
    svc = services()
    body = videos.job_status(svc.store, _caller(), request.args.get("jobId"), _download_url,
                             svc.status_cache)
    return body, {"Cache-Control": "no-store"}


@bp.route("/jobs", methods=["GET"])
@require_auth
@bp.arguments(JobListQuerySchema, location="query")
@bp.response(200, JobListSchema)
@bp.errors(400, 401, 503)
def job_list(query: dict[str, Any]) -> dict[str, Any]:
    """The caller's jobs, newest first, with a cursor for the next page."""
    return videos.list_jobs(services().store, _caller(), query["limit"], query.get("cursor"))


@bp.route("/cancel", methods=["POST"])
@require_auth
@require_json
@bp.arguments(JobIdBodySchema)
@bp.response(200, JobStatusSchema)
@bp.errors(400, 401, 403, 404, 409, 415, 503, _404="Job not found",
           _409="JOB_FINISHED")
def cancel(body: dict[str, Any]) -> dict[str, Any]:
    """Stop a job that has not finished: failed with `Cancelled`, credits refunded."""
    svc = services()
    return videos.cancel_job(svc.store, svc.enqueuer, _caller(), body["jobId"],
                             _download_url)


@bp.route("/webhooks", methods=["GET"])
@require_auth
@bp.doc(parameters=[{"in": "query", "name": "jobId", "required": True,
                     "schema": {"type": "string", "minLength": 1}}])
@bp.response(200, WebhookDeliveryListSchema)
@bp.errors(400, 401, 404, 503, _400="jobId is required", _404="Job not found")
def webhook_deliveries() -> dict[str, Any]:
    """The job's outbound webhook deliveries: attempts, state, last answer, next try."""
    svc = services()
    job = videos.owned_job(svc.store, _caller(), request.args.get("jobId"), status_only=True)
    return outbound.job_deliveries(svc.store, job["id"])
