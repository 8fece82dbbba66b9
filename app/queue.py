"""How the web side asks workers to look at a job: by task name, never importing workers/.

A message is only a hint (the record is the truth), so a broker that is down must not
fail the request: the job stays `pending` and the sweeper re-enqueues it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)

SUBMIT_TASK = "videojobs.submit"
CANCEL_TASK = "videojobs.cancel"
FINALIZE_TASK = "videojobs.finalize"
SWEEP_TASK = "videojobs.sweep"
DELIVER_WEBHOOK_TASK = "videojobs.deliver_webhook"
CHECK_TASK = "videojobs.check"
# Periodic tasks that run every second or so: Celery's per-run "received"/"succeeded"
# lines (and beat's "Sending due task") for these are noise, dropped at INFO (app.logs).
# Status-check batches are handed out several times a second: the same.
HEARTBEAT_TASKS = frozenset({SWEEP_TASK, CHECK_TASK})
CONTROL_QUEUE = "control"
TRANSFER_QUEUE = "transfer"
WEBHOOK_QUEUE = "webhooks"  # outbound webhooks: slow receivers never delay job control
CHECKS_QUEUE = "checks"  # batches of provider status checks, shared by every worker
# Set when a submit message is sent, removed when a worker takes it: while it exists and
# the control queue is not empty, the message is waiting there and is not re-sent.
SUBMIT_SENT_KEY = "videojobs:submit-sent:"
SUBMIT_SENT_SECONDS = 3600


def make_producer(broker_url: str) -> Celery:
    """A send-only Celery app with short timeouts, so a dead broker costs ~1 s, not minutes."""
    producer = Celery("videojobs-web", broker=broker_url, set_as_current=False)
    producer.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_timeout=1.0,
        broker_connection_retry_on_startup=False,
        broker_transport_options={"socket_connect_timeout": 1, "socket_timeout": 2},
        # A "task-sent" event per POST doubled the cost of enqueueing (measured); Flower
        # still sees every task from the workers' received/started/succeeded events.
        task_send_sent_event=False,
    )
    return producer


class Enqueuer:
    """Sends job hints; failures are logged, never raised.

    With the broker's Redis at hand (`redis_client`), each submit message leaves a marker
    that the worker taking it removes, so the sweeper can tell a message still waiting in
    the queue (not re-sent) from one that may be lost."""

    def __init__(self, celery: Celery, redis_client: Any | None = None) -> None:
        self.celery = celery
        self.redis = redis_client

    def _send(self, name: str, job_id: str, queue: str = CONTROL_QUEUE) -> bool:
        try:
            self.celery.send_task(name, args=[job_id], queue=queue, retry=False)
            return True
        except Exception as exc:  # any broker failure: the sweeper will pick the job up
            log.warning("broker unreachable, job left for the sweeper: %s",
                        type(exc).__name__, extra={"job_id": job_id, "task": name})
            return False

    def deliver(self, delivery_id: str) -> bool:
        """An outbound webhook delivery (its outbox row's id) to attempt now."""
        return self._send(DELIVER_WEBHOOK_TASK, delivery_id, WEBHOOK_QUEUE)

    def submit(self, job_id: str) -> bool:
        sent = self._send(SUBMIT_TASK, job_id)
        if sent and self.redis is not None:
            try:
                self.redis.set(SUBMIT_SENT_KEY + job_id, 1, ex=SUBMIT_SENT_SECONDS)
            except Exception:  # no marker: the sweeper re-sends sooner, harmlessly
                pass
        return sent

    def submit_taken(self, job_id: str) -> None:
        """A worker took the job's submit message: no message is waiting any more."""
        if self.redis is not None:
            try:
                self.redis.delete(SUBMIT_SENT_KEY + job_id)
            except Exception:
                pass

    def submits_waiting(self, job_ids: list[str]) -> set[str]:
        """Jobs whose submit message is still in the broker queue: their marker exists and
        the control queue is not empty. Empty when unknown (no Redis): then re-send."""
        if self.redis is None or not job_ids:
            return set()
        try:
            if not self.redis.llen(CONTROL_QUEUE):
                return set()  # nothing queued: a marker left means a message taken and lost
            found = self.redis.mget([SUBMIT_SENT_KEY + j for j in job_ids])
        except Exception:
            return set()
        return {j for j, hit in zip(job_ids, found, strict=True) if hit}

    def checks(self, batch: list[list[Any]], expires: float) -> bool:
        """Hand a batch of due status checks to whichever worker takes it first."""
        try:
            self.celery.send_task(CHECK_TASK, args=[batch], queue=CHECKS_QUEUE, retry=False,
                                  expires=expires)
            return True
        except Exception as exc:  # the sweep runs them itself
            log.warning("broker unreachable, checks run by the sweep: %s", type(exc).__name__)
            return False

    def cancel(self, job_id: str) -> bool:
        return self._send(CANCEL_TASK, job_id)

    def finalize(self, job_id: str) -> bool:
        return self._send(FINALIZE_TASK, job_id, TRANSFER_QUEUE)

    def ping(self) -> None:
        """Raise if the broker cannot be reached (readiness)."""
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=1)  # type: ignore[call-arg]

    def info(self) -> dict[str, Any]:
        return {"broker": self.celery.conf.broker_url.split("@")[-1]}
