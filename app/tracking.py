"""Provider-driven job transitions shared by the webhook receiver (web) and the sweeper
(workers): every change is a compare-and-set on the record, so duplicates are harmless."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from app import jobs
from app.ids import is_valid_id
from app.metrics import JOBS_FINISHED
from app.store import Store
from app.store.jobs import NONE, now_plus

log = logging.getLogger(__name__)

AT_PROVIDER = ("in_queue", "in_progress", "awaiting_callback")
PHASE_FOR_STATUS = {"IN_QUEUE": "in_queue", "IN_PROGRESS": "in_progress"}
# A finalize message lost after fal completed is re-sent by the sweeper after this.
FINALIZE_GRACE = 30


class FinalizeQueue(Protocol):
    def finalize(self, job_id: str) -> bool: ...


def fail_job(store: Store, job_id: str, reason: str, *, cancel_at_provider: bool = False
             ) -> dict[str, Any] | None:
    """The one failure path: record the reason, mark failed, refund once, log it."""
    job = store.jobs.fail_and_refund(job_id, reason, cancel_at_provider=cancel_at_provider)
    if job is not None:
        JOBS_FINISHED.labels(status=jobs.FAILED).inc()
        log.info("[VIDEO JOB %s] Failed: %s", job_id, reason,
                 extra={"job_id": job_id, "refunded": True, "credits": job.get("credits")})
    return job


def record_status(store: Store, job: dict[str, Any], status: str,
                  queue_position: int | None, gap_seconds: float) -> dict[str, Any] | None:
    """Save a changed IN_QUEUE / IN_PROGRESS status (and the line operators grep for)."""
    phase = PHASE_FOR_STATUS[status]
    changes: dict[str, Any] = {"provider_status": status, "phase": phase,
                               "queue_position": queue_position if status == "IN_QUEUE"
                               else NONE, "next_check_at": now_plus(gap_seconds)}
    if job.get("provider_status") == status and job.get("queue_position") == queue_position:
        return job
    updated = store.jobs.update_if(job["id"], (jobs.PROCESSING,), changes, phases=AT_PROVIDER)
    if updated is not None and job.get("provider_status") != status:
        log.info("[VIDEO JOB %s] Status: %s", job["id"], status,
                 extra={"job_id": job["id"], "queue_position": queue_position})
    return updated


def provider_completed(store: Store, queue: FinalizeQueue, job: dict[str, Any],
                       video_url: str | None = None) -> bool:
    """fal finished successfully: hand the job to finalize (once)."""
    changes: dict[str, Any] = {"provider_status": "COMPLETED", "phase": "finalizing",
                               "queue_position": NONE, "next_check_at": NONE,
                               "lease_owner": NONE, "lease_until": now_plus(FINALIZE_GRACE)}
    if video_url:
        changes["video_url"] = video_url
    updated = store.jobs.update_if(job["id"], (jobs.PROCESSING,), changes, phases=AT_PROVIDER)
    if updated is None:
        return False
    log.info("[VIDEO JOB %s] Status: COMPLETED", job["id"], extra={"job_id": job["id"]})
    queue.finalize(job["id"])
    return True


def apply_webhook(store: Store, queue: FinalizeQueue, job_hint: str | None,
                  request_id: str, ok: bool, video_url: str | None, reason: str | None) -> str:
    """Act on a verified fal callback once; returns what happened (for logs and tests).

    The job id in the webhook URL is only trusted for a job that has no request id yet
    (its submit's outcome was unknown, or fal accepted it and saving the answer failed);
    otherwise the signed request id decides.
    """
    job = store.jobs.get(job_hint) if job_hint and is_valid_id(job_hint) else None
    if job is not None and job.get("fal_request_id") not in (None, request_id):
        job = None
    if job is None:
        job = store.jobs.find_by_request_id(request_id)
    if job is None:
        return "unknown"
    if job.get("phase") == "submitting" and not job.get("fal_request_id"):
        job = adopt_submission(store, job, request_id)
    if job["status"] in jobs.TERMINAL or job.get("phase") not in AT_PROVIDER:
        return "duplicate"
    if not job.get("fal_request_id"):
        # fal's signed callback proves it accepted the job: the `processing` event.
        job = store.jobs.update_if(job["id"], (jobs.PROCESSING,),
                                   {"fal_request_id": request_id}, phases=AT_PROVIDER,
                                   event=jobs.PROCESSING) or job
    if ok and (video_url or job.get("fal_response_url")):
        return "completed" if provider_completed(store, queue, job, video_url) else "duplicate"
    if ok:
        reason = "Provider returned no video"
    return "failed" if fail_job(store, job["id"], reason or "Provider error") else "duplicate"


def adopt_submission(store: Store, job: dict[str, Any], request_id: str) -> dict[str, Any]:
    """A genuine webhook for a job still in `submitting`: fal accepted it, but saving
    fal's answer failed (a store outage) or has not happened yet. The callback is the
    proof fal has it, so the job moves on to `processing` with the signed request id
    instead of waiting for its deadline (it is never submitted again either way)."""
    if store.jobs.find_by_request_id(request_id) is not None:
        return job  # that request belongs to another job: never adopt it twice
    adopted = store.jobs.update_if(job["id"], (jobs.PENDING,), {
        "status": jobs.PROCESSING, "phase": "awaiting_callback",
        "fal_request_id": request_id, "lease_owner": NONE, "lease_until": NONE,
        "next_check_at": NONE}, phases=("submitting",))
    if adopted is None:
        return store.jobs.get(job["id"]) or job  # the worker saved it meanwhile
    log.info("[VIDEO JOB %s] Submitted to fal as %s", job["id"], request_id,
             extra={"job_id": job["id"], "adopted_by": "webhook"})
    return adopted
