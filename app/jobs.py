"""A job's vocabulary and shape (Status, Phase, Job) and how it reads to its owner.

    pending ──► processing ──► completed
       │             │
       └─────────────┴──────► failed   (refunded once; terminal states never change)

The moves between them, and what each move does, are app/lifecycle.py's; no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any, Required, TypedDict


class Status(StrEnum):
    """The four statuses a job's owner sees (docs/api.md §4). Members are `str`, equal to
    their values, so they compare, hash and serialise as the plain strings."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class Phase(StrEnum):
    """Where an active job is inside its status (the `phase` field; None once terminal).

    pending:    QUEUED (waiting for a worker) → SUBMITTING (a worker holds the submit lease)
    processing: IN_QUEUE / IN_PROGRESS (fal has it; its status is checked), AWAITING_CALLBACK
                (fal may have it: only its webhook tells), FINALIZING (copying the video)
    """

    QUEUED = "queued"
    SUBMITTING = "submitting"
    AWAITING_CALLBACK = "awaiting_callback"
    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"


# The plain values, for the store's queries and the workers.
PENDING = Status.PENDING.value
PROCESSING = Status.PROCESSING.value
COMPLETED = Status.COMPLETED.value
FAILED = Status.FAILED.value
STATUSES = tuple(s.value for s in Status)
TERMINAL = (COMPLETED, FAILED)
ACTIVE = (PENDING, PROCESSING)
# The status changes an outbound webhook can announce, and those sent when none are chosen.
EVENTS = (PROCESSING, COMPLETED, FAILED)
DEFAULT_EVENTS = (COMPLETED, FAILED)
# Phases in which fal has (or may have) the job and a webhook or status check moves it on.
AT_PROVIDER = (Phase.IN_QUEUE, Phase.IN_PROGRESS, Phase.AWAITING_CALLBACK)
# Phases whose provider status the sweeper checks (the check schedule's jobs).
TRACKED = (Phase.IN_QUEUE, Phase.IN_PROGRESS)


class Job(TypedDict, total=False):
    """A `video_job` record as the store returns it (app/store/schema.py defines the table).

    Reads that need only a few fields (status polls, the check schedule) return just those,
    so only `id` is always there. Times are aware datetimes; `status` holds a Status value
    and `phase` a Phase value (plain strings, equal to the members)."""

    id: Required[str]
    # what was asked, fixed at creation
    user_id: str
    email: str
    template_id: str
    model: str
    prompt: str
    negative_prompt: str | None
    start_key: str
    duration: str
    variables: dict[str, str]
    credits: int
    idempotency_key: str | None
    webhook_url: str | None
    webhook_events: list[str] | None
    # where it is
    status: str
    phase: str | None
    provider_status: str | None  # fal's last status (app.fal IN_QUEUE / IN_PROGRESS / ...)
    queue_position: int | None
    progress: str | None
    # how it ended
    error: str | None
    refunded: bool
    result_key: str | None
    completed_at: datetime | None
    # fal's request, saved before anything else once fal accepted it
    fal_request_id: str | None
    fal_status_url: str | None
    fal_response_url: str | None
    fal_cancel_url: str | None
    video_url: str | None  # the finished video, when fal's webhook carried it
    # workers' bookkeeping
    lease_owner: str | None
    lease_until: datetime | None
    next_check_at: datetime | None
    attempts: int
    transfer_attempts: int
    resends: int
    cancel_requested: bool
    deadline_at: datetime
    created_at: datetime
    updated_at: datetime


PENDING_MESSAGE = "Waiting for a worker..."
PROCESSING_MESSAGE = "Generating video..."
STARTED_MESSAGE = "Video generation started. Check status at /api/templates/video/status"
CANCELLED = "Cancelled"
TIMED_OUT = "Timed out"


def iso(value: Any) -> str | None:
    """Datetimes as ISO 8601 with a `Z`, as clients expect."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return None if value is None else str(value)


def status_body(job: Job, download_url: Callable[[str], str]) -> dict[str, Any]:
    """The status body for one job (docs/api.md §4); `download_url` is called only when
    completed."""
    status = job["status"]
    extra: dict[str, Any] = {"jobId": job["id"], "createdAt": iso(job.get("created_at"))}
    if job.get("phase"):
        extra["phase"] = job["phase"]
    if status == PENDING:
        return {"status": PENDING, "message": PENDING_MESSAGE, **extra}
    if status == PROCESSING:
        body: dict[str, Any] = {"status": PROCESSING, "message": PROCESSING_MESSAGE, **extra}
        if job.get("queue_position") is not None:
            body["queuePosition"] = job["queue_position"]
        if job.get("progress"):
            body["progress"] = job["progress"]
        return body
    if status == COMPLETED:
        key = job.get("result_key") or ""
        return {"status": COMPLETED, "url": download_url(key), "key": key,
                "credits": job["credits"], "completedAt": iso(job.get("completed_at")),
                **extra}
    return {"status": FAILED, "error": job.get("error") or "Failed",
            "refunded": bool(job.get("refunded")), "credits": job["credits"],
            "completedAt": iso(job.get("completed_at")), **extra}


def list_item(job: Job) -> dict[str, Any]:
    """A row of `GET /api/templates/video/jobs`."""
    item: dict[str, Any] = {
        "jobId": job["id"], "status": job["status"], "templateSlug": job["template_id"],
        "duration": job["duration"], "credits": job["credits"],
        "createdAt": iso(job.get("created_at"))}
    if job.get("start_key"):
        item["startKey"] = job["start_key"]
    if job["status"] == FAILED:
        item["error"] = job.get("error") or "Failed"
        item["refunded"] = bool(job.get("refunded"))
        item["completedAt"] = iso(job.get("completed_at"))
    elif job["status"] == COMPLETED and job.get("result_key"):
        item["key"] = job["result_key"]
        item["completedAt"] = iso(job.get("completed_at"))
    elif job.get("phase"):
        item["phase"] = job["phase"]
    return item
