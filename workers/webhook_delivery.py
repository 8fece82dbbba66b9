"""Outbound webhook delivery: one signed attempt per task, scheduled by its outbox row.

An attempt claims the `webhook_delivery` row (compare-and-set, a 30 s lease), checks the
target address with the guard the video downloads use and connects only to the checked
address, POSTs the event signed the Standard Webhooks way (the reference `standardwebhooks`
package), never follows a redirect, reads at most MAX_RESPONSE_BYTES of the answer, and
writes the outcome: `delivered` on a 2xx, else the next attempt's time from
WEBHOOK_RETRY_DELAYS (the sweeper sends it then: no countdown, no sleeping), or `failed`
once the schedule is used up. The job itself never changes. Every attempt is logged with
the delivery id, the URL without its query, and the outcome; never the secret.

Exactly once per event, at least once per delivery: the row exists once (created with the
status change, app/store/jobs.py); every lost message, crash or retry is re-sent by the
sweeper from the row; the receiver drops repeats by `webhook-id`, the same on every attempt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from datetime import UTC, datetime
from math import floor
from typing import Any, cast

import requests
from standardwebhooks.webhooks import Webhook

from app import jobs, outbound
from app.jobs import Job
from app.netguard import AddressGuard, GuardedAdapter, TransferError, check_url_with
from app.storage import LocalStorage
from app.webhook_secrets import SecretBox, SecretUnreadable
from workers.context import WorkerContext
from workers.transfer import strip_query

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
ATTEMPT_LEASE_SECONDS = 30.0  # > connect + read timeouts: a crashed attempt is re-sent after
MAX_RESPONSE_BYTES = 4096
SWEEP_BATCH = 500
USER_AGENT = "videojobs-webhooks/1"


def event_body(ctx: WorkerContext, row: dict[str, Any]) -> dict[str, Any]:
    """`{"type", "timestamp", "data": {"jobId", ...status body at the event}}`; a completed
    job's `url` is made fresh for each attempt (the link expires)."""
    snapshot = cast(Job, {**(row.get("job") or {}), "id": row["job_id"]})
    data = jobs.status_body(snapshot, lambda key: _download_url(ctx, key))
    return {"type": row["type"], "timestamp": jobs.iso(row.get("created_at")),
            "data": {"jobId": row["job_id"], **data}}


def _download_url(ctx: WorkerContext, key: str) -> str:
    url = ctx.storage.download_url(key, expires_in=24 * 3600)
    if isinstance(ctx.storage, LocalStorage) and url.startswith("/") \
            and ctx.settings.public_base_url:
        url = ctx.settings.public_base_url + url
    return url


def sign(secret: str, message_id: str, payload: str, now: datetime | None = None
         ) -> dict[str, str]:
    """The three Standard Webhooks headers for `payload`, from the reference library."""
    now = now or datetime.now(UTC)
    return {"webhook-id": message_id, "webhook-timestamp": str(floor(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, now, payload)}


def retry_delay(settings: Any, attempts_done: int) -> float | None:
    """Seconds until the next attempt after `attempts_done` failed ones; None: give up."""
    delays = tuple(settings.webhook_retry_delays)
    return float(delays[attempts_done - 1]) if attempts_done <= len(delays) else None


def _secret(ctx: WorkerContext, user_id: str) -> str | None:
    box: SecretBox | None = ctx.secret_box
    if box is None:
        raise SecretUnreadable("SECRET_KEY is not set")
    return outbound.signing_secret(ctx.store, box, user_id)


def _shutdown(sock: Any) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _post(url: str, payload: bytes, headers: dict[str, str], guard: AddressGuard
          ) -> tuple[int | None, str | None]:
    """(status, error): one POST through the pinned adapter, no redirects, capped read.

    The answer's status must come within TIMEOUT_SECONDS of the start; reading (at most
    MAX_RESPONSE_BYTES of) its body is cut off at that deadline by a watchdog.
    """
    check_url_with(url, guard)
    adapter = GuardedAdapter(guard)
    started = time.monotonic()
    try:
        request = requests.Request("POST", url, data=payload, headers=headers).prepare()
        resp = adapter.send(request, stream=True, timeout=(CONNECT_TIMEOUT_SECONDS,
                                                           TIMEOUT_SECONDS), proxies=None)
        left = TIMEOUT_SECONDS - (time.monotonic() - started)
        sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
        watchdog = threading.Timer(max(0.0, left), _shutdown, (sock,)) \
            if isinstance(sock, socket.socket) else None
        try:
            if left <= 0:
                return None, f"No answer within {TIMEOUT_SECONDS:g} s"
            if watchdog is not None:
                watchdog.daemon = True
                watchdog.start()
            with contextlib.suppress(Exception):  # its status matters, not its body
                resp.raw.read(MAX_RESPONSE_BYTES, decode_content=False)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            resp.close()
    except requests.exceptions.ConnectTimeout:
        return None, "Connection timed out"
    except requests.exceptions.ReadTimeout:
        return None, f"No answer within {TIMEOUT_SECONDS:g} s"
    except requests.exceptions.ConnectionError:
        return None, "Could not connect"
    except requests.RequestException as exc:
        return None, f"Request failed ({type(exc).__name__})"
    finally:
        adapter.close()
    if 300 <= resp.status_code < 400:
        return resp.status_code, f"Redirect ({resp.status_code}) not followed"
    if not 200 <= resp.status_code < 300:
        return resp.status_code, f"Answered {resp.status_code}"
    return resp.status_code, None


def deliver(ctx: WorkerContext, delivery_id: str) -> str:
    """One attempt of one delivery, if it is due and nobody else is on it; the outcome."""
    store = ctx.store
    row = store.webhooks.claim(delivery_id, ctx.owner, ATTEMPT_LEASE_SECONDS)
    if row is None:
        return "skipped"
    attempt = int(row.get("attempts") or 0) + 1
    url = row["url"]
    status: int | None = None
    error: str | None
    secret: str | None
    started = time.monotonic()
    try:
        secret = _secret(ctx, row["user_id"])
    except SecretUnreadable as exc:
        secret, error = None, f"Cannot sign: {exc}"
    else:
        error = None if secret else outbound.NOT_SET
    if secret is not None:
        payload = json.dumps(event_body(ctx, row), separators=(",", ":"), ensure_ascii=False)
        headers = {**sign(secret, delivery_id, payload), "Content-Type": "application/json",
                   "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        guard = AddressGuard(ctx.settings.allow_private_webhooks, subject="Webhook")
        try:
            status, error = _post(url, payload.encode(), headers, guard)
        except TransferError as exc:  # the guard refused the address (or DNS failed)
            error = exc.message
    delivered = error is None
    # No endpoint any more (deleted): nothing to sign with, so give up at once.
    retry_in = None if delivered or error == outbound.NOT_SET \
        else retry_delay(ctx.settings, attempt)
    store.webhooks.finish_attempt(delivery_id, ctx.owner, delivered=delivered, status=status,
                                  error=error, retry_in=retry_in)
    outcome = "delivered" if delivered else ("retry" if retry_in is not None else "failed")
    log.info("[WEBHOOK %s] %s attempt %d to %s: %s%s", delivery_id, row["type"], attempt,
             strip_query(url), outcome, f" ({error})" if error else "",
             extra={"job_id": row["job_id"], "delivery_id": delivery_id, "status": status,
                    "attempt": attempt, "retry_in": retry_in,
                    "elapsed_ms": round((time.monotonic() - started) * 1000)})
    return outcome


def resend_due(ctx: WorkerContext, grace_seconds: float) -> int:
    """The sweeper's part: enqueue every due delivery nobody is sending (lost messages,
    crashed attempts, retries whose time has come)."""
    due = ctx.store.webhooks.claim_due(SWEEP_BATCH, grace_seconds)
    for delivery_id in due:
        ctx.enqueuer.deliver(delivery_id)
    return len(due)
