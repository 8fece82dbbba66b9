"""The job state machine and how a job reads to its owner; plain functions, no I/O.

    pending ──► processing ──► completed
       │             │
       └─────────────┴──────► failed   (refunded once; terminal states never change)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """The four statuses a job's owner sees (docs/api.md §4). Members are `str`, equal to
    their values, so they compare, hash and serialise as the plain strings."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


# The plain values, for the store's queries and the workers.
PENDING = Status.PENDING.value
PROCESSING = Status.PROCESSING.value
COMPLETED = Status.COMPLETED.value
FAILED = Status.FAILED.value
STATUSES = tuple(s.value for s in Status)
TERMINAL = (COMPLETED, FAILED)
ACTIVE = (PENDING, PROCESSING)

TRANSITIONS: dict[str, tuple[str, ...]] = {
    PENDING: (PROCESSING, FAILED),
    PROCESSING: (COMPLETED, FAILED),
    COMPLETED: (),
    FAILED: (),
}

PENDING_MESSAGE = "Waiting for a worker..."
PROCESSING_MESSAGE = "Generating video..."
STARTED_MESSAGE = "Video generation started. Check status at /api/templates/video/status"
CANCELLED = "Cancelled"
TIMED_OUT = "Timed out"


def can_move(current: str, target: str) -> bool:
    """Whether `current → target` is allowed; terminal states allow nothing."""
    return target in TRANSITIONS.get(current, ())


def sources_for(target: str) -> tuple[str, ...]:
    """Statuses a compare-and-set to `target` may start from."""
    return tuple(s for s, targets in TRANSITIONS.items() if target in targets)


def iso(value: Any) -> str | None:
    """Datetimes as ISO 8601 with a `Z`, as clients expect."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return None if value is None else str(value)


def status_body(job: Mapping[str, Any], download_url: Callable[[str], str]) -> dict[str, Any]:
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
        key = job["result_key"]
        return {"status": COMPLETED, "url": download_url(key), "key": key,
                "credits": job["credits"], "completedAt": iso(job.get("completed_at")),
                **extra}
    return {"status": FAILED, "error": job.get("error") or "Failed",
            "refunded": bool(job.get("refunded")), "credits": job["credits"],
            "completedAt": iso(job.get("completed_at")), **extra}


def list_item(job: Mapping[str, Any]) -> dict[str, Any]:
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
