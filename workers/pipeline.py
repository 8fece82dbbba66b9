"""What the tasks do, as plain functions of a WorkerContext: submit, sweep, finalize, cancel.

Every step re-reads the record and acts only through compare-and-set updates, so a
duplicate, late or lost message is harmless. What a crash leaves behind:

- `submitting` with an expired lease: fal may or may not have the job, and fal has no
  idempotency key, so it is never submitted again (docs/api.md §8). With webhooks on, the job
  waits (`awaiting_callback`) for a callback carrying its id until its deadline;
  without, it fails with `Submission outcome unknown` and is refunded.
- `finalizing` with an expired lease: another finalize takes over and copies the video
  again from fal's URL to the same deterministic key (an overwrite, never a resubmit).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app import fal, jobs, lifecycle
from app.backoff import at_least, exponential, half_jitter, spread
from app.check_schedule import Due, is_tracked
from app.check_schedule import check_gap as schedule_gap
from app.fal import (
    FalNotFound,
    FalOutcomeUnknown,
    FalPermanent,
    FalRetryable,
    failure_reason,
)
from app.jobs import Job, Phase
from app.lifecycle import FINALIZE_GRACE_SECONDS
from app.posters import store_poster
from app.storage import LocalStorage, job_video_key
from app.store.jobs import OUTBOX_DISPATCH_GRACE_SECONDS, RESEND_PENDING_SECONDS
from workers import webhook_delivery
from workers.context import WorkerContext
from workers.transfer import (
    PermanentTransferError,
    RetryableTransferError,
    TransferLimits,
    download_to_storage,
    strip_query,
)

log = logging.getLogger(__name__)

LEASE_RENEW_SECONDS = 20  # well inside lifecycle.FINALIZE_LEASE_SECONDS
MAX_SUBMIT_ATTEMPTS = 8
MAX_TRANSFER_ATTEMPTS = 4
SWEEP_PERIOD_SECONDS = 1.0
SWEEP_BATCH = 2000
MAX_CHECKS_PER_SWEEP = 20_000
CHECK_BATCH = 100  # status checks per `videojobs.check` task
CHECK_SLICE = 4  # checks one pool thread does in turn (see run_checks)
# Deadlines, lost messages and expired leases are scanned this often, not every sweep:
# with 5,000 jobs in flight each scan held the (embedded) engine for 30-60 ms per second.
HOUSEKEEPING_SECONDS = 3.0
# Expired idempotency keys and temp files of crashed uploads are removed this often, by
# one worker at a time (a Redis key is the turn).
CLEANUP_SECONDS = 600.0
CLEANUP_TURN_KEY = "videojobs:cleanup-turn"
IDEMPOTENCY_KEEP_SECONDS = 24 * 3600
STALE_UPLOAD_SECONDS = 3600  # an upload's temp file untouched this long is abandoned
# A submit message is re-sent after RESEND_PENDING_SECONDS, then after twice as long, ...
RESEND_BACKOFF_CAP_SECONDS = 240.0


def _backoff(attempt: int, cap: float = 60.0) -> float:
    return half_jitter(exponential(attempt, base=1.0, cap=cap))


def check_gap(settings: Any) -> float:
    """Seconds between two scheduled status checks of a job (see app/check_schedule.py)."""
    return schedule_gap(settings.status_check_interval)


def webhook_url(ctx: WorkerContext, job_id: str) -> str | None:
    base = ctx.settings.public_base_url
    return f"{base}/api/webhooks/fal?jobId={job_id}" if base else None


def image_url(ctx: WorkerContext, key: str) -> str:
    """What fal can fetch: a presigned URL, or a `data:` URI for local storage."""
    storage = ctx.storage
    if isinstance(storage, LocalStorage):
        if ctx.settings.public_base_url:
            return ctx.settings.public_base_url + storage.download_url(key)
        info = storage.head(key)
        with storage.open_read(key) as fh:
            encoded = base64.b64encode(fh.read()).decode()
        return f"data:{info.content_type if info else 'image/png'};base64,{encoded}"
    return storage.download_url(key, expires_in=3600)


def build_input(ctx: WorkerContext, job: Job) -> dict[str, Any]:
    payload: dict[str, Any] = {"prompt": job["prompt"], "image_url": image_url(ctx,
                                                                              job["start_key"]),
                               "duration": job["duration"]}
    if job.get("negative_prompt"):
        payload["negative_prompt"] = job["negative_prompt"]
    return payload


# ---- submit ------------------------------------------------------------------------------

def submit_job(ctx: WorkerContext, job_id: str) -> None:
    """Claim a pending job, submit it to fal once, and save what fal answered."""
    store = ctx.store
    ctx.enqueuer.submit_taken(job_id)
    claimed = lifecycle.claim_submit(store, job_id, ctx.owner)
    if claimed is None:
        return
    try:
        payload = build_input(ctx, claimed)
    except Exception as exc:  # the start image vanished or storage is down
        log.warning("cannot read start image: %s", type(exc).__name__, extra={"job_id": job_id})
        lifecycle.fail(store, job_id, lifecycle.START_IMAGE_GONE)
        return
    try:
        submission = ctx.fal.submit(claimed["model"], payload, webhook_url(ctx, job_id))
    except FalRetryable as exc:
        if int(claimed.get("attempts") or 0) >= MAX_SUBMIT_ATTEMPTS:
            lifecycle.fail(store, job_id, f"Provider unavailable: {exc.message}")
            return
        delay = at_least(_backoff(int(claimed.get("attempts") or 1)), exc.retry_after)
        lifecycle.retry_submit(store, job_id, ctx.owner, delay)
        log.warning("submit failed, retrying in %.0f s: %s", delay, exc,
                    extra={"job_id": job_id})
        return
    except FalOutcomeUnknown:
        submission_outcome_unknown(ctx, claimed)
        return
    except FalPermanent as exc:
        lifecycle.fail(store, job_id, exc.message)
        return
    saved = lifecycle.record_submission(store, job_id, ctx.owner, submission,
                                        check_gap(ctx.settings))
    if saved is lifecycle.SubmitSaved.GONE:
        # Cancelled or timed out while fal was answering: stop it there too.
        _cancel_quietly(ctx, job_id, submission.cancel_url)


def submission_outcome_unknown(ctx: WorkerContext, job: Job) -> None:
    """fal may have the job: never resubmit; wait for its webhook (when fal can reach
    us) or fail and refund."""
    lifecycle.submission_outcome_unknown(ctx.store, job["id"],
                                         webhooks_on=bool(ctx.settings.public_base_url))


def _cancel_quietly(ctx: WorkerContext, job_id: str, cancel_url: str | None) -> bool:
    """Ask fal to stop; False if the call itself failed (worth retrying)."""
    if not cancel_url:
        return True
    try:
        outcome = ctx.fal.cancel(cancel_url)
        log.info("cancelled at fal: %s", outcome, extra={"job_id": job_id})
        return True
    except FalRetryable as exc:
        log.warning("cancel at fal failed, will retry: %s", exc, extra={"job_id": job_id})
        return False
    except Exception as exc:  # best effort: fal may still finish (and bill) it
        log.warning("cancel at fal failed: %s", type(exc).__name__, extra={"job_id": job_id})
        return True


# ---- tracking ----------------------------------------------------------------------------

def check_status(ctx: WorkerContext, job: Job) -> None:
    """One provider status check; writes the store only when the provider status changed.

    `job` needs only `id`, `fal_status_url`, `provider_status` and `queue_position` (what
    the check schedule keeps). Every write is a compare-and-set on the record: if it finds
    the job no longer at the provider (a webhook or a cancel got there first), the job is
    taken out of the schedule."""
    job_id = job["id"]
    try:
        status = ctx.fal.status(job.get("fal_status_url") or "")
    except FalNotFound:
        _still_tracked(ctx, job_id, lifecycle.fail(ctx.store, job_id,
                                             "Provider no longer knows this request"))
        return
    except FalRetryable as exc:
        log.info("status check failed, will retry: %s", exc, extra={"job_id": job_id})
        return
    except FalPermanent as exc:
        _still_tracked(ctx, job_id, lifecycle.fail(ctx.store, job_id, exc.message))
        return
    if status.status == fal.COMPLETED:
        if status.failed:
            _still_tracked(ctx, job_id, lifecycle.fail(ctx.store, job_id, failure_reason(status)))
        else:
            _still_tracked(ctx, job_id,
                           lifecycle.provider_completed(ctx.store, ctx.enqueuer, job))
        return
    if status.status in lifecycle.PHASE_FOR_STATUS:
        _still_tracked(ctx, job_id, lifecycle.record_provider_status(
            ctx.store, job, status.status, status.queue_position, check_gap(ctx.settings)))


def _still_tracked(ctx: WorkerContext, job_id: str, outcome: Any) -> None:
    """A compare-and-set that lost means the job left the provider phase: unschedule it."""
    if not outcome and ctx.schedule is not None:
        ctx.schedule.remove(job_id)


def check_due(ctx: WorkerContext, due: Due) -> None:
    """Check one claimed job; without what the schedule keeps, read it from the store."""
    job: Job | None = due.as_job()
    if not due.status_url:
        job = ctx.store.jobs.get(due.job_id)
        if job is None or not is_tracked(job):
            if ctx.schedule is not None:
                ctx.schedule.remove(due.job_id)
            return
    assert job is not None
    check_status(ctx, job)


def run_checks(ctx: WorkerContext, dues: list[Due],
               pool: ThreadPoolExecutor | None = None) -> list[str]:
    """Run claimed checks concurrently on the process's status pool; returns the errors.

    The batch is cut into slices of CHECK_SLICE checks, each checked in turn by one pool
    thread: a thread wake-up and a future per slice instead of per check saves CPU, and a
    batch of 100 still overlaps 25 provider round trips (fal answers in tens of ms)."""
    if not dues:
        return []
    pool = pool or ctx.status_pool()
    count = -(-len(dues) // CHECK_SLICE)
    slices = [dues[i::count] for i in range(count)]
    errors: list[str] = []
    for outcome in pool.map(lambda part: [_safe_due(ctx, d) for d in part], slices):
        errors.extend(e for e in outcome if e)
    return errors


def _safe_due(ctx: WorkerContext, due: Due) -> str | None:
    try:
        check_due(ctx, due)
        return None
    except Exception as exc:  # one bad job must not stop the batch
        log.exception("status check failed", extra={"job_id": due.job_id})
        return f"{due.job_id}: {type(exc).__name__}"


@dataclass
class SweepReport:
    resent: int = 0
    resend_waiting: int = 0  # due for a re-send, but their message is still queued
    checked: int = 0  # status checks claimed (handed out as tasks or run here)
    dispatched: int = 0  # of those, handed out to the workers as `videojobs.check` tasks
    rebuilt_seconds: float | None = None
    cleaned: dict[str, int] | None = None  # what the periodic cleanup removed, if it ran
    timed_out: int = 0
    unknown: int = 0
    finalize_resent: int = 0
    cancels: int = 0
    webhooks_sent: int = 0
    errors: list[str] = field(default_factory=list)


def sweep(ctx: WorkerContext, pool: ThreadPoolExecutor | None = None,
          dispatch: bool = True) -> SweepReport:
    """The periodic backstop: every job ends, and none waits on a lost message.

    Due status checks are handed out as `videojobs.check` tasks (`dispatch`), or run in
    this call (`dispatch=False`, and whenever the broker refuses a batch)."""
    report = SweepReport()
    if time.monotonic() - ctx.last_housekeeping >= HOUSEKEEPING_SECONDS:
        ctx.last_housekeeping = time.monotonic()
        _housekeeping(ctx, report)
    if time.monotonic() - ctx.last_cleanup >= CLEANUP_SECONDS:
        ctx.last_cleanup = time.monotonic()
        if _cleanup_turn(ctx):
            _safe_cleanup(ctx, report)
    _status_checks(ctx, report, pool, dispatch)
    # Every sweep (one indexed query): a retry is sent within about a second of its time.
    report.webhooks_sent = webhook_delivery.resend_due(ctx, OUTBOX_DISPATCH_GRACE_SECONDS)
    return report


def _cleanup_turn(ctx: WorkerContext) -> bool:
    """One worker per CLEANUP_SECONDS does the cleanup (no Redis: this process does)."""
    client = getattr(ctx.schedule, "redis", None)
    if client is None:
        return True
    try:
        return bool(client.set(CLEANUP_TURN_KEY, ctx.owner, nx=True,
                               ex=int(CLEANUP_SECONDS) - 5))
    except Exception:  # Redis away: skip this round
        return False


def _safe_cleanup(ctx: WorkerContext, report: SweepReport) -> None:
    try:
        report.cleaned = cleanup(ctx)
    except Exception as exc:  # the next round tries again
        log.warning("cleanup failed: %s", type(exc).__name__)


def cleanup(ctx: WorkerContext, *, idempotency_seconds: float = IDEMPOTENCY_KEEP_SECONDS,
            upload_seconds: float = STALE_UPLOAD_SECONDS) -> dict[str, int]:
    """Remove expired idempotency records (past their 24 h) and what uploads killed
    mid-way left in storage (temp files; S3 multipart uploads)."""
    keys = ctx.store.jobs.delete_expired_idempotency(int(idempotency_seconds))
    uploads = ctx.storage.remove_stale_uploads(upload_seconds)
    if keys or uploads:
        log.info("cleanup: %d expired idempotency keys, %d abandoned uploads removed",
                 keys, uploads)
    return {"idempotency_keys": keys, "stale_uploads": uploads}


def _housekeeping(ctx: WorkerContext, report: SweepReport) -> None:
    """Deadlines, lost submit messages, crashed submits and stalled finalizes."""
    store = ctx.store
    for job in store.jobs.past_deadline(SWEEP_BATCH):
        if lifecycle.time_out(store, job):
            report.timed_out += 1
    _resend_submits(ctx, report)
    for job in store.jobs.expired_leases(Phase.SUBMITTING, SWEEP_BATCH):
        report.unknown += 1
        submission_outcome_unknown(ctx, job)
    for job in store.jobs.resend_due_finalize(SWEEP_BATCH, FINALIZE_GRACE_SECONDS):
        ctx.enqueuer.finalize(job["id"])
        report.finalize_resent += 1
    owed = store.jobs.cancels_owed(SWEEP_BATCH)
    for job in owed:
        _safe(_cancel_owed, ctx, job)
    report.cancels = len(owed)


def _resend_submits(ctx: WorkerContext, report: SweepReport) -> None:
    """Re-send a pending job's submit message only when it may be lost, with backoff.

    A message still waiting in the broker queue (its marker exists and the queue is not
    empty) is left alone: behind a backlog, re-sending only adds duplicates. Otherwise
    (never sent, taken by a worker that died, lost with Redis) it is re-sent, each time
    after twice as long (RESEND_PENDING_SECONDS, doubling, capped)."""
    store = ctx.store
    due = store.jobs.due_resends(SWEEP_BATCH)
    if not due:
        return
    waiting = ctx.enqueuer.submits_waiting([j["id"] for j in due])
    report.resend_waiting = len(waiting)
    for job in due:
        if job["id"] in waiting:
            continue
        resends = int(job.get("resends") or 0)
        delay = exponential(resends + 1, base=RESEND_PENDING_SECONDS,
                            cap=RESEND_BACKOFF_CAP_SECONDS)
        if store.jobs.claim_resend(job["id"], spread(delay, 0.2)):
            ctx.enqueuer.submit(job["id"])
            report.resent += 1


def _status_checks(ctx: WorkerContext, report: SweepReport,
                   pool: ThreadPoolExecutor | None, dispatch: bool) -> None:
    """Claim the due status checks from the schedule; hand them out, or run them here."""
    schedule = ctx.schedule
    try:
        report.rebuilt_seconds = schedule.ensure_built(ctx.store)
    except Exception as exc:  # Redis or the store is away: the next sweep tries again
        log.warning("check schedule rebuild failed: %s", type(exc).__name__)
    due: list[Due] = []
    while len(due) < MAX_CHECKS_PER_SWEEP:
        claimed = schedule.claim(SWEEP_BATCH)
        due.extend(claimed)
        if len(claimed) < SWEEP_BATCH:
            break
    report.checked = len(due)
    inline: list[Due] = []
    if dispatch:
        # Batches go out as tasks on the `checks` queue, which every worker consumes, so
        # M workers share the checks (and the sweep itself stays short).
        for i in range(0, len(due), CHECK_BATCH):
            batch = due[i:i + CHECK_BATCH]
            if ctx.enqueuer.checks([d.to_message() for d in batch],
                                   expires=max(10.0, 2 * schedule.gap)):
                report.dispatched += len(batch)
            else:
                inline.extend(batch)
    else:
        inline = due
    report.errors.extend(run_checks(ctx, inline, pool))


def _cancel_owed(ctx: WorkerContext, job: Job) -> None:
    """Send an owed cancel once: the flag is taken by compare-and-set before the call."""
    claimed = ctx.store.jobs.claim_cancel_request(job["id"])
    if claimed is None:
        return
    if not _cancel_quietly(ctx, job["id"], claimed.get("fal_cancel_url")):
        ctx.store.jobs.restore_cancel_request(job["id"])


def _safe(func: Any, ctx: WorkerContext, job: Job) -> str | None:
    try:
        func(ctx, job)
        return None
    except Exception as exc:  # one bad job must not stop the sweep
        log.exception("sweep step failed", extra={"job_id": job.get("id")})
        return f"{job.get('id')}: {type(exc).__name__}"


def cancel_at_provider(ctx: WorkerContext, job_id: str) -> None:
    job = ctx.store.jobs.get(job_id)
    if job and job["status"] == jobs.FAILED and job.get("cancel_requested"):
        _cancel_owed(ctx, job)


# ---- finalize ----------------------------------------------------------------------------

def finalize_job(ctx: WorkerContext, job_id: str) -> None:
    """Fetch fal's result, stream the video into storage, record it, complete the job."""
    store = ctx.store
    claimed = lifecycle.claim_finalize(store, job_id, ctx.owner)
    if claimed is None:
        return
    url = claimed.get("video_url")
    if not url:
        try:
            url = ctx.fal.result(claimed.get("fal_response_url") or "").url
        except FalRetryable as exc:
            _retry_finalize(ctx, claimed, f"result not available: {exc.message}",
                            exc.retry_after)
            return
        except FalPermanent as exc:
            lifecycle.fail(store, job_id, exc.message)
            return
    log.info("[VIDEO JOB %s] Completed, downloading from %s", job_id, strip_query(url),
             extra={"job_id": job_id})
    key = job_video_key(claimed["user_id"], job_id)
    limits = TransferLimits(max_bytes=ctx.settings.max_video_bytes,
                            allow_private=ctx.settings.allow_private_downloads)
    try:
        with _lease_renewed(ctx, job_id):
            stored = download_to_storage(url, ctx.storage, key, limits)
    except RetryableTransferError as exc:
        _retry_finalize(ctx, claimed, exc.message, exc.retry_after)
        return
    except PermanentTransferError as exc:
        lifecycle.fail(store, job_id, exc.message)
        return
    template = store.templates.get(claimed["template_id"]) or {}
    store.library.add(key=key, user_id=claimed["user_id"], kind="video",
                      content_type=stored.content_type, size=stored.size, job_id=job_id,
                      template_slug=claimed["template_id"],
                      template_name=template.get("name"), duration=claimed.get("duration"),
                      start_key=claimed.get("start_key"))
    log.info("Stored library video metadata for %s", key,
             extra={"job_id": job_id, "size": stored.size})
    if lifecycle.complete(store, job_id, ctx.owner, key) is None:
        # Cancelled or timed out (and refunded) meanwhile: leave no orphan behind.
        store.library.delete(key)
        ctx.storage.delete(key)
        return
    _poster_pool().submit(_attach_poster, ctx, claimed["user_id"], job_id, key)


_POSTERS: ThreadPoolExecutor | None = None
_POSTERS_LOCK = threading.Lock()


def _poster_pool() -> ThreadPoolExecutor:
    """One thread per process takes poster frames, so ffmpeg never delays the finalize of
    the next job (a burst of completions stays as fast as without posters)."""
    global _POSTERS
    with _POSTERS_LOCK:
        if _POSTERS is None:
            _POSTERS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poster")
        return _POSTERS


def _attach_poster(ctx: WorkerContext, user_id: str, job_id: str, key: str) -> None:
    """The card's poster frame, taken after the job is completed. A poster is a nicety:
    one lost to a crash before this ran is simply missing."""
    poster = store_poster(ctx.storage, user_id, job_id, key)
    try:
        if poster is not None and not ctx.store.library.set_poster(key, poster):
            ctx.storage.delete(poster)  # the video was deleted meanwhile: no orphan poster
    except Exception:  # the store or storage blipped (or is shutting down): no poster
        log.warning("recording the poster frame failed", exc_info=True,
                    extra={"job_id": job_id})


@contextmanager
def _lease_renewed(ctx: WorkerContext, job_id: str) -> Iterator[None]:
    """Keep our finalize lease alive while a long copy runs (a heartbeat thread)."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_RENEW_SECONDS):
            try:
                kept = lifecycle.renew_finalize_lease(ctx.store, job_id, ctx.owner)
            except Exception:  # the store blipped: try again at the next beat
                log.warning("lease renewal failed", extra={"job_id": job_id})
                continue
            if not kept:
                return  # no longer ours (cancelled, timed out, taken over)

    beat = threading.Thread(target=renew, name=f"lease-{job_id[:8]}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)


def _retry_finalize(ctx: WorkerContext, job: Job, why: str,
                    retry_after: float | None = None) -> None:
    attempts = int(job.get("transfer_attempts") or 1)
    if attempts >= MAX_TRANSFER_ATTEMPTS:
        lifecycle.fail(ctx.store, job["id"], f"Could not copy the video: {why}")
        return
    # The sweeper re-sends finalize once the lease runs out: not before the host's Retry-After.
    delay = at_least(_backoff(attempts, cap=30), retry_after)
    lifecycle.release_finalize(ctx.store, job["id"], ctx.owner, delay)
    log.warning("transfer failed (attempt %d), retrying in %.0f s: %s", attempts, delay, why,
                extra={"job_id": job["id"]})


__all__ = ["cancel_at_provider", "check_status", "finalize_job", "submit_job",
           "sweep"]
