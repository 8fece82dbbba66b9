"""Every change of a job's status or phase, and what goes with it, in one place.

    pending/queued ──claim──► pending/submitting ──submitted──► processing/in_queue
         ▲                         │    │                          │  ▲ provider status
         └───────retry submit──────┘    └─outcome unknown/adopted─► processing/awaiting_callback
    processing/{in_queue, in_progress, awaiting_callback} ──provider completed──►
    processing/finalizing ──complete──► completed          any active ──fail──► failed

`MOVES` is that picture as data: each move names the (status, phase) it may start from
and where it ends, and each function below performs one move as a compare-and-set on the
record (`JobRepository.update_if`). A duplicate, late or racing writer (a second worker, a
webhook racing the sweeper, a cancel) finds the record moved on and changes nothing.
Failing refunds in the same transaction (app/store/jobs.py), so money moves exactly once.

Views (start, cancel), the fal webhook and the worker tasks call these functions; nothing
else in the product writes a job's status, phase or lease (tests/test_lifecycle.py checks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from app import fal
from app.ids import is_valid_id
from app.jobs import (
    ACTIVE,
    AT_PROVIDER,
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    TIMED_OUT,
    Job,
    Phase,
    Status,
)
from app.metrics import JOBS_FINISHED
from app.store import Store
from app.store.jobs import NONE, NOW, Expr, now_plus

log = logging.getLogger(__name__)

# The status changes a job can make; terminal statuses allow nothing.
TRANSITIONS: dict[Status, tuple[Status, ...]] = {
    Status.PENDING: (Status.PROCESSING, Status.FAILED),
    Status.PROCESSING: (Status.COMPLETED, Status.FAILED),
    Status.COMPLETED: (),
    Status.FAILED: (),
}

# A submit lease outlives any fal submit call; a crash leaves `submitting` until it ends.
SUBMIT_LEASE_SECONDS = 600
# A finalize lease is short and renewed while the copy runs, so a worker that dies
# mid-transfer is taken over within about FINALIZE_LEASE_SECONDS, not at the deadline.
FINALIZE_LEASE_SECONDS = 90
# A finalize message lost after fal completed is re-sent by the sweeper after this.
FINALIZE_GRACE_SECONDS = 30
SUBMISSION_UNKNOWN = "Submission outcome unknown"
START_IMAGE_GONE = "Start image is no longer available"


@dataclass(frozen=True)
class Move:
    """One edge of the lifecycle: from which statuses (and phases; None: any) to where."""

    name: str
    from_statuses: tuple[Status, ...]
    from_phases: tuple[Phase, ...] | None
    to_status: Status
    to_phases: tuple[Phase | None, ...]

    def changes(self, phase: Phase | None = None) -> dict[str, Any]:
        """The status and phase fields of this move (`phase` picks one of several ends)."""
        target = phase if phase is not None else self.to_phases[0]
        if target not in self.to_phases:
            raise ValueError(f"{self.name} cannot end in phase {target}")
        fields: dict[str, Any] = {"phase": NONE if target is None else target.value}
        if self.to_status not in self.from_statuses:
            fields["status"] = self.to_status.value
        return fields


CLAIM_SUBMIT = Move("claim submit", (Status.PENDING,), (Phase.QUEUED,),
                    Status.PENDING, (Phase.SUBMITTING,))
RETRY_SUBMIT = Move("retry submit", (Status.PENDING,), (Phase.SUBMITTING,),
                    Status.PENDING, (Phase.QUEUED,))
SUBMITTED = Move("submitted", (Status.PENDING,), (Phase.SUBMITTING,),
                 Status.PROCESSING, (Phase.IN_QUEUE,))
# fal may have the job (the submit's answer was lost), or its webhook proved it has it.
AWAIT_CALLBACK = Move("await callback", (Status.PENDING,), (Phase.SUBMITTING,),
                      Status.PROCESSING, (Phase.AWAITING_CALLBACK,))
PROVIDER_STATUS = Move("provider status", (Status.PROCESSING,), AT_PROVIDER,
                       Status.PROCESSING, (Phase.IN_QUEUE, Phase.IN_PROGRESS))
PROVIDER_COMPLETED = Move("provider completed", (Status.PROCESSING,), AT_PROVIDER,
                          Status.PROCESSING, (Phase.FINALIZING,))
COMPLETE = Move("complete", (Status.PROCESSING,), (Phase.FINALIZING,),
                Status.COMPLETED, (None,))
FAIL = Move("fail", (Status.PENDING, Status.PROCESSING), None, Status.FAILED, (None,))
MOVES = (CLAIM_SUBMIT, RETRY_SUBMIT, SUBMITTED, AWAIT_CALLBACK, PROVIDER_STATUS,
         PROVIDER_COMPLETED, COMPLETE, FAIL)

PHASE_FOR_STATUS = {fal.IN_QUEUE: Phase.IN_QUEUE, fal.IN_PROGRESS: Phase.IN_PROGRESS}


class FinalizeQueue(Protocol):
    def finalize(self, job_id: str) -> bool: ...


def _move(store: Store, job_id: str, move: Move, extra: dict[str, Any], *,
          phase: Phase | None = None, owner: str | None = None, lease_free: bool = False,
          event: str | None = None) -> Job | None:
    """Perform `move` (plus `extra` fields) if the record is still where the move starts."""
    return store.jobs.update_if(job_id, move.from_statuses, {**move.changes(phase), **extra},
                                phases=move.from_phases, owner=owner, lease_free=lease_free,
                                event=event)


def _hold(store: Store, job_id: str, status: Status, phases: tuple[Phase, ...] | None,
          extra: dict[str, Any], *, owner: str | None = None, lease_free: bool = False,
          event: str | None = None) -> Job | None:
    """A write that keeps the job where it is (a lease, fal's ids): same compare-and-set."""
    return store.jobs.update_if(job_id, (status,), extra, phases=phases, owner=owner,
                                lease_free=lease_free, event=event)


# ---- submit ------------------------------------------------------------------------------

def claim_submit(store: Store, job_id: str, owner: str) -> Job | None:
    """Take a queued job's submit lease (once: a second worker gets None)."""
    job = store.jobs.get(job_id)
    if job is None or job["status"] != PENDING or job.get("phase") != Phase.QUEUED:
        return None
    return _move(store, job_id, CLAIM_SUBMIT, {
        "lease_owner": owner, "lease_until": now_plus(SUBMIT_LEASE_SECONDS),
        "attempts": Expr("attempts + 1")}, lease_free=True)


def retry_submit(store: Store, job_id: str, owner: str, delay: float) -> Job | None:
    """fal refused for now: give the job back to the queue; the sweeper re-sends it."""
    return _move(store, job_id, RETRY_SUBMIT, {
        "lease_owner": NONE, "lease_until": NONE, "next_check_at": now_plus(delay)},
        owner=owner)


class SubmitSaved(StrEnum):
    SAVED = "saved"  # fal's answer is recorded: the job is in fal's queue
    ADOPTED = "adopted"  # fal's webhook got here first and moved the job on: URLs added
    GONE = "gone"  # cancelled or timed out while fal answered: cancel it at fal


def record_submission(store: Store, job_id: str, owner: str, submission: fal.Submission,
                      check_gap: float) -> SubmitSaved:
    """Save what fal answered to an accepted submit (the `processing` event)."""
    saved = _move(store, job_id, SUBMITTED, {
        "provider_status": fal.IN_QUEUE, "fal_request_id": submission.request_id,
        "fal_status_url": submission.status_url, "fal_response_url": submission.response_url,
        "fal_cancel_url": submission.cancel_url, "queue_position": submission.queue_position,
        "lease_owner": NONE, "lease_until": NONE, "next_check_at": now_plus(check_gap)},
        owner=owner, event=PROCESSING)
    if saved is None:
        current = store.jobs.get(job_id)
        if current is not None and current.get("fal_request_id") == submission.request_id:
            _hold(store, job_id, Status.PROCESSING, None, {
                "fal_status_url": submission.status_url,
                "fal_response_url": submission.response_url,
                "fal_cancel_url": submission.cancel_url})
            return SubmitSaved.ADOPTED
        return SubmitSaved.GONE
    log.info("[VIDEO JOB %s] Submitted to fal as %s", job_id, submission.request_id,
             extra={"job_id": job_id, "model": saved.get("model")})
    log.info("[VIDEO JOB %s] Status: %s", job_id, fal.IN_QUEUE,
             extra={"job_id": job_id, "queue_position": submission.queue_position})
    return SubmitSaved.SAVED


def submission_outcome_unknown(store: Store, job_id: str, *, webhooks_on: bool) -> None:
    """fal may have the job: never resubmit; wait for its webhook or fail and refund."""
    if webhooks_on:
        _move(store, job_id, AWAIT_CALLBACK, {
            "lease_owner": NONE, "lease_until": NONE, "next_check_at": NONE})
        log.warning("submit outcome unknown; waiting for fal's webhook until the deadline",
                    extra={"job_id": job_id})
    else:
        fail(store, job_id, SUBMISSION_UNKNOWN)


def adopt_submission(store: Store, job: Job, request_id: str) -> Job:
    """A genuine webhook for a job still in `submitting`: fal accepted it, but saving
    fal's answer failed (a store outage) or has not happened yet. The callback is the
    proof fal has it, so the job moves on to `processing` with the signed request id
    instead of waiting for its deadline (it is never submitted again either way)."""
    if store.jobs.find_by_request_id(request_id) is not None:
        return job  # that request belongs to another job: never adopt it twice
    adopted = _move(store, job["id"], AWAIT_CALLBACK, {
        "fal_request_id": request_id, "lease_owner": NONE, "lease_until": NONE,
        "next_check_at": NONE})
    if adopted is None:
        return store.jobs.get(job["id"]) or job  # the worker saved it meanwhile
    log.info("[VIDEO JOB %s] Submitted to fal as %s", job["id"], request_id,
             extra={"job_id": job["id"], "adopted_by": "webhook"})
    return adopted


# ---- at the provider ---------------------------------------------------------------------

def record_provider_status(store: Store, job: Job, status: str, queue_position: int | None,
                           gap_seconds: float) -> Job | None:
    """Save a changed IN_QUEUE / IN_PROGRESS status (and the line operators grep for)."""
    if job.get("provider_status") == status and job.get("queue_position") == queue_position:
        return job
    updated = _move(store, job["id"], PROVIDER_STATUS, {
        "provider_status": status,
        "queue_position": queue_position if status == fal.IN_QUEUE else NONE,
        "next_check_at": now_plus(gap_seconds)}, phase=PHASE_FOR_STATUS[status])
    if updated is not None and job.get("provider_status") != status:
        log.info("[VIDEO JOB %s] Status: %s", job["id"], status,
                 extra={"job_id": job["id"], "queue_position": queue_position})
    return updated


def provider_completed(store: Store, queue: FinalizeQueue, job: Job,
                       video_url: str | None = None) -> bool:
    """fal finished successfully: hand the job to finalize (once)."""
    extra: dict[str, Any] = {"provider_status": fal.COMPLETED, "queue_position": NONE,
                             "next_check_at": NONE, "lease_owner": NONE,
                             "lease_until": now_plus(FINALIZE_GRACE_SECONDS)}
    if video_url:
        extra["video_url"] = video_url
    if _move(store, job["id"], PROVIDER_COMPLETED, extra) is None:
        return False
    log.info("[VIDEO JOB %s] Status: %s", job["id"], fal.COMPLETED, extra={"job_id": job["id"]})
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
    if job.get("phase") == Phase.SUBMITTING and not job.get("fal_request_id"):
        job = adopt_submission(store, job, request_id)
    if job["status"] in (COMPLETED, FAILED) or job.get("phase") not in AT_PROVIDER:
        return "duplicate"
    if not job.get("fal_request_id"):
        # fal's signed callback proves it accepted the job: the `processing` event.
        job = _hold(store, job["id"], Status.PROCESSING, AT_PROVIDER,
                    {"fal_request_id": request_id}, event=PROCESSING) or job
    if ok and (video_url or job.get("fal_response_url")):
        return "completed" if provider_completed(store, queue, job, video_url) else "duplicate"
    if ok:
        reason = "Provider returned no video"
    return "failed" if fail(store, job["id"], reason or "Provider error") else "duplicate"


# ---- finalize ----------------------------------------------------------------------------

def claim_finalize(store: Store, job_id: str, owner: str) -> Job | None:
    """Take the finalize lease (free, or expired: a crashed worker's job is taken over)."""
    return _hold(store, job_id, Status.PROCESSING, (Phase.FINALIZING,), {
        "lease_owner": owner, "lease_until": now_plus(FINALIZE_LEASE_SECONDS),
        "transfer_attempts": Expr("transfer_attempts + 1")}, lease_free=True)


def renew_finalize_lease(store: Store, job_id: str, owner: str) -> bool:
    """Keep our lease while the copy runs; False once the job is no longer ours."""
    return _hold(store, job_id, Status.PROCESSING, (Phase.FINALIZING,),
                 {"lease_until": now_plus(FINALIZE_LEASE_SECONDS)}, owner=owner) is not None


def release_finalize(store: Store, job_id: str, owner: str, delay: float) -> None:
    """Give the lease back with a short expiry: the sweeper re-sends finalize after it."""
    _hold(store, job_id, Status.PROCESSING, (Phase.FINALIZING,), {
        "lease_owner": NONE, "lease_until": now_plus(delay)}, owner=owner)


def complete(store: Store, job_id: str, owner: str, result_key: str) -> Job | None:
    """The video is stored: the job is completed (the `completed` event); None if it was
    cancelled or timed out meanwhile (the caller removes the copy)."""
    done = _move(store, job_id, COMPLETE, {
        "result_key": result_key, "completed_at": NOW, "lease_owner": NONE,
        "lease_until": NONE, "next_check_at": NONE}, owner=owner, event=COMPLETED)
    if done is not None:
        JOBS_FINISHED.labels(status=COMPLETED).inc()
    return done


# ---- failure, cancel, timeout ------------------------------------------------------------

def fail(store: Store, job_id: str, reason: str, *, cancel_at_provider: bool = False
         ) -> Job | None:
    """The one failure path: record the reason, mark failed, refund once, log it."""
    job = store.jobs.fail_and_refund(job_id, reason, from_statuses=FAIL.from_statuses,
                                     cancel_at_provider=cancel_at_provider)
    if job is not None:
        JOBS_FINISHED.labels(status=FAILED).inc()
        log.info("[VIDEO JOB %s] Failed: %s", job_id, reason,
                 extra={"job_id": job_id, "refunded": True, "credits": job.get("credits")})
    return job


def provider_may_have(job: Job) -> bool:
    """fal has the job, or may have it (a submit is under way): a cancel must reach it."""
    return bool(job.get("fal_request_id")) or job.get("phase") == Phase.SUBMITTING


def cancel(store: Store, job: Job) -> Job | None:
    """The owner cancels: failed with `Cancelled`, refunded now; None if it already ended.
    The cancel at fal is owed (`cancel_requested`) and sent by a worker."""
    if job["status"] not in ACTIVE:
        return None
    return fail(store, job["id"], CANCELLED, cancel_at_provider=provider_may_have(job))


def time_out(store: Store, job: Job) -> bool:
    """Past its deadline: failed with `Timed out` and refunded; fal is told to stop."""
    return fail(store, job["id"], TIMED_OUT,
                cancel_at_provider=bool(job.get("fal_request_id"))) is not None
