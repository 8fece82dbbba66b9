"""Starting, reading, listing and cancelling video jobs: plain functions the views call.

Check order is docs/api.md §3's: template, duration and variables, start image,
idempotency key, credits (credentials, media type and body shape run before, in the view).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app import jobs, lifecycle, outbound
from app.errors import ApiError, validation_error
from app.ids import is_valid_id, new_id
from app.jobs import Job
from app.metrics import CREDITS_CHARGED, JOBS_CREATED
from app.queue import Enqueuer
from app.storage import is_owned_key
from app.store import Store
from app.store.jobs import (
    IdempotencyKeyTaken,
    InsufficientCredits,
    NewJob,
    decode_cursor,
    encode_cursor,
)
from app.video_templates import VariableError, VideoTemplate, render_inputs, resolve_variables

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class Caller:
    user_id: str
    email: str


@dataclass(frozen=True)
class Started:
    job_id: str
    credits: int
    replayed: bool

    def body(self) -> dict[str, Any]:
        return {"jobId": self.job_id, "status": jobs.Status.PENDING, "credits": self.credits,
                "message": jobs.STARTED_MESSAGE}


def request_hash(body: Mapping[str, Any]) -> str:
    """Canonical hash of the validated body: same key + same hash = a retry."""
    fields: dict[str, Any] = {
        "templateSlug": body["templateSlug"], "startKey": body["startKey"],
        "duration": body["duration"], "variables": body.get("variables") or {}}
    for name in ("webhookUrl", "webhookEvents"):  # only when sent: older hashes stay valid
        if body.get(name) is not None:
            fields[name] = body[name]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.strip():
        raise validation_error({"Idempotency-Key": [
            f"Must be 1 to {MAX_IDEMPOTENCY_KEY} characters."]})
    return key


def _replay(store: Store, record: Mapping[str, Any] | None, digest: str) -> Started | None:
    """The first response for a retried request (None if the key is new); 409 if the key
    came with another body."""
    if record is None:
        return None
    if record["request_hash"] != digest:
        raise ApiError(409, "IDEMPOTENCY_KEY_REUSED")
    job = store.jobs.get(record["job_id"])
    if job is None:  # cannot happen: written in one transaction
        raise ApiError(409, "IDEMPOTENCY_KEY_REUSED")
    return Started(job["id"], int(job["credits"]), replayed=True)


def load_template(store: Store, slug: str) -> VideoTemplate:
    record = store.templates.get_cached(slug)
    if record is None or not record.get("active", True):
        raise ApiError(404, "Template not found")
    return VideoTemplate.from_record(record)


def start_video(store: Store, enqueuer: Enqueuer, caller: Caller, body: Mapping[str, Any],
                idempotency_key: str | None, timeout_seconds: int,
                allow_private_webhooks: bool = False) -> Started:
    """Validate, charge and record a job in one transaction, then enqueue its submit."""
    key = check_idempotency_key(idempotency_key)
    digest = request_hash(body)
    earlier = store.jobs.idempotency(caller.user_id, key) if key is not None else None
    if earlier is not None and earlier["request_hash"] == digest:
        replay = _replay(store, earlier, digest)
        assert replay is not None
        return replay

    template = load_template(store, body["templateSlug"])
    duration = body["duration"]
    details: dict[str, list[str]] = {}
    if duration not in template.durations:
        offered = ", ".join(sorted(template.durations, key=int))
        details["duration"] = [f"Must be one of: {offered}."]
    try:
        variables = resolve_variables(template, body.get("variables") or {})
    except VariableError as exc:
        details.update(exc.details)
        variables = {}
    webhook_url, webhook_events, webhook_details = outbound.job_target(
        store, caller.user_id, body, allow_private_webhooks)
    details.update(webhook_details)
    if details:
        raise validation_error(details)

    start_key = body["startKey"]
    item = store.library.get(start_key) if is_owned_key(caller.user_id, start_key) else None
    if item is None or item.get("user_id") != caller.user_id or item.get("kind") != "image":
        raise ApiError(404, "Start image not found")

    if earlier is not None:  # the same key came earlier with another body
        raise ApiError(409, "IDEMPOTENCY_KEY_REUSED")

    prompt, negative_prompt = render_inputs(template, variables)
    credits = int(template.durations[duration])
    job = NewJob(
        job_id=new_id(), user_id=caller.user_id, email=caller.email, template_id=template.slug,
        model=template.model, prompt=prompt, negative_prompt=negative_prompt,
        start_key=start_key, duration=duration, variables=variables, credits=credits,
        timeout_seconds=timeout_seconds, idempotency_key=key, request_hash=digest if key else None,
        webhook_url=webhook_url, webhook_events=webhook_events,
    )
    try:
        store.jobs.create_with_charge(job)
    except InsufficientCredits:
        raise ApiError(402, "INSUFFICIENT_CREDITS") from None
    except IdempotencyKeyTaken:
        assert key is not None
        # A concurrent twin won: answer as it did.
        replay = _replay(store, store.jobs.idempotency(caller.user_id, key), digest)
        if replay is None:
            raise ApiError(409, "IDEMPOTENCY_KEY_REUSED") from None
        return replay

    JOBS_CREATED.labels(template=template.slug).inc()
    CREDITS_CHARGED.inc(credits)
    enqueuer.submit(job.job_id)
    log.info("[VIDEO JOB] Queued job %s for user %s", job.job_id, caller.email,
             extra={"job_id": job.job_id, "template": template.slug, "credits": credits})
    return Started(job.job_id, credits, replayed=False)


def owned_job(store: Store, caller: Caller, job_id: str | None,
              status_only: bool = False) -> Job:
    """The caller's job; another user's job is as missing as an unknown one."""
    if not job_id:
        raise ApiError(400, "jobId is required")
    read = store.jobs.get_status_fields if status_only else store.jobs.get
    job = read(job_id) if is_valid_id(job_id) else None
    if job is None or job.get("user_id") != caller.user_id:
        raise ApiError(404, "Job not found")
    return job


def job_status(store: Store, caller: Caller, job_id: str | None,
               download_url: Callable[[str], str], cache: Any = None) -> dict[str, Any]:
    """The status body; most polls are answered from the status cache (see
    app/status_cache.py), the rest read the store and fill the cache."""
    if not job_id:
        raise ApiError(400, "jobId is required")
    row: Job | None = cache.get(job_id) if cache is not None and is_valid_id(job_id) else None
    if row is None:
        row = owned_job(store, caller, job_id, status_only=True)
        if cache is not None:
            cache.put(row)
    elif row.get("user_id") != caller.user_id:
        raise ApiError(404, "Job not found")
    return jobs.status_body(row, download_url)


def list_jobs(store: Store, caller: Caller, limit: int, cursor: str | None) -> dict[str, Any]:
    position = None
    if cursor:
        position = decode_cursor(cursor)
        if position is None:
            raise validation_error({"cursor": ["Not a cursor this service returned."]})
    found = store.jobs.list_for_user(caller.email, limit, position)
    page, more = found[:limit], len(found) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    return {"jobs": [jobs.list_item(j) for j in page], "nextCursor": next_cursor}


def cancel_job(store: Store, enqueuer: Enqueuer, caller: Caller, job_id: str | None,
               download_url: Callable[[str], str]) -> dict[str, Any]:
    """Fail with `Cancelled` and refund now; a job fal accepted is also cancelled there."""
    job = owned_job(store, caller, job_id)
    updated = lifecycle.cancel(store, job)
    if updated is None:  # it had finished, or it finished while we looked
        raise ApiError(409, "JOB_FINISHED")
    if lifecycle.provider_may_have(job):
        enqueuer.cancel(job["id"])
    return jobs.status_body(updated, download_url)
