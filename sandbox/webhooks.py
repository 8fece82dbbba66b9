"""Completion webhooks as fal sends them: its payloads, signed, retried with doubling backoff."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import requests

from sandbox.files import Files
from sandbox.jobs import REQUEST_TIMEOUT, Job
from sandbox.observations import Observations
from sandbox.scheduler import Scheduler
from sandbox.state import State

log = logging.getLogger(__name__)

_PAYLOAD_ERROR = ("Response payload is not JSON serializable. Either return a JSON serializable "
                  "object or use the queue endpoint to retrieve the response.")

# (request_id, raw body) -> the X-Fal-Webhook-* headers for it
Signer = Callable[[str, bytes], dict[str, str]]


@dataclass(slots=True)
class _Delivery:
    request_id: str
    url: str
    body: bytes
    generation: int
    copy: int = 1
    attempt: int = 0


class Webhooks:
    """Sends completion webhooks from a 4-thread pool; retries wait in the scheduler."""

    def __init__(self, state: State, scheduler: Scheduler, files: Files,
                 observed: Observations, sign: Signer) -> None:
        self._state = state
        self._scheduler = scheduler
        self._files = files
        self._observed = observed
        self._sign = sign
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()

    def start(self) -> None:
        """Make the sending pool."""
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="sandbox-webhook")

    def stop(self) -> None:
        """Drop deliveries not yet sent."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def send(self, job: Job) -> None:
        """The job's outcome to its webhook URL, if any (twice with `duplicate_webhooks`)."""
        url = job.webhook
        if not url or job.has("no_webhook"):
            return
        body = json.dumps(self.payload(job)).encode()
        copies = 2 if job.has("duplicate_webhooks") else 1
        for copy in range(1, copies + 1):
            delivery = _Delivery(job.request_id, url, body, self._state.generation, copy=copy)
            self._scheduler.at(time.monotonic() + 0.25 * (copy - 1),
                               partial(self._send, delivery))

    def payload(self, job: Job) -> dict[str, Any]:
        """The webhook body fal sends for this job's outcome."""
        rid = job.request_id
        if job.has("webhook_payload_error"):
            return {"request_id": rid, "gateway_request_id": rid, "status": "ERROR",
                    "payload": None, "payload_error": _PAYLOAD_ERROR}
        failure = job.failure
        if failure is None and job.has("result_500"):
            failure = REQUEST_TIMEOUT
        if failure is None:
            return {"request_id": rid, "gateway_request_id": rid, "status": "OK",
                    "payload": {"video": self._files.video(job)}, "error": None}
        return {"request_id": rid, "gateway_request_id": rid, "status": "ERROR",
                "error": f"Invalid status code: {failure.http_status}",
                "payload": failure.result_body()}

    def _send(self, delivery: _Delivery) -> None:
        if self._pool is not None:
            self._pool.submit(self._deliver, delivery)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _deliver(self, delivery: _Delivery) -> None:
        """POST one signed webhook; on failure retry later with doubling backoff."""
        if delivery.generation != self._state.generation:
            return
        config = self._state.config
        delivery.attempt += 1
        headers = self._sign(delivery.request_id, delivery.body)
        code: int | None = None
        error: str | None = None
        try:
            response = self._session().post(delivery.url, data=delivery.body, headers=headers,
                                            timeout=(3.0, config.webhook_timeout),
                                            allow_redirects=False)
            code = response.status_code
            response.close()
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        recorded = self._observed.record_webhook(delivery.generation, {
            "time": time.time(), "request_id": delivery.request_id, "url": delivery.url,
            "copy": delivery.copy, "attempt": delivery.attempt, "status_code": code,
            "error": error,
        })
        if not recorded:
            return  # reset() happened while this was in flight
        if code is not None and 200 <= code < 300:
            return
        if delivery.attempt <= config.webhook_retries and not self._scheduler.stopping:
            wait = config.webhook_backoff * 2 ** (delivery.attempt - 1)
            log.info("sandbox webhook for %s failed (%s), retrying in %.2fs",
                     delivery.request_id, code or error, wait)
            self._scheduler.at(time.monotonic() + wait, partial(self._send, delivery))
        else:
            log.warning("sandbox webhook for %s gave up after %d attempts",
                        delivery.request_id, delivery.attempt)
