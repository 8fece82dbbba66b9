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
# Periodic tasks that run every second or so: Celery's per-run "received"/"succeeded"
# lines (and beat's "Sending due task") for these are noise, dropped at INFO (app.logs).
HEARTBEAT_TASKS = frozenset({SWEEP_TASK})
CONTROL_QUEUE = "control"
TRANSFER_QUEUE = "transfer"
WEBHOOK_QUEUE = "webhooks"  # outbound webhooks: slow receivers never delay job control


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
    """Sends job hints; failures are logged, never raised."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

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
        return self._send(SUBMIT_TASK, job_id)

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
