"""Thin Celery tasks: names are explicit (renaming code never strands queued messages);
policy lives here, the work in `workers.pipeline`."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from app.check_schedule import Due
from app.queue import (
    CANCEL_TASK,
    CHECK_TASK,
    DELIVER_WEBHOOK_TASK,
    FINALIZE_TASK,
    SUBMIT_TASK,
    SWEEP_TASK,
)
from app.store.errors import StoreUnavailable
from workers import pipeline, webhook_delivery
from workers.celery_app import FINALIZE_TIME_LIMIT
from workers.context import get_context

log = logging.getLogger(__name__)

_STORE_RETRY = {"autoretry_for": (StoreUnavailable,), "retry_backoff": True,
                "retry_backoff_max": 60, "max_retries": 10}


@shared_task(name=SUBMIT_TASK, **_STORE_RETRY)
def submit(job_id: str) -> None:
    pipeline.submit_job(get_context(), job_id)


@shared_task(name=FINALIZE_TASK, time_limit=FINALIZE_TIME_LIMIT,
             soft_time_limit=FINALIZE_TIME_LIMIT - 60, **_STORE_RETRY)
def finalize(job_id: str) -> None:
    pipeline.finalize_job(get_context(), job_id)


@shared_task(name=CANCEL_TASK, **_STORE_RETRY)
def cancel(job_id: str) -> None:
    pipeline.cancel_at_provider(get_context(), job_id)


@shared_task(name=DELIVER_WEBHOOK_TASK, time_limit=60)
def deliver_webhook(delivery_id: str) -> None:
    # No task-level retry: the outbox row is the schedule, and the sweeper re-sends it.
    webhook_delivery.deliver(get_context(), delivery_id)


@shared_task(name=SWEEP_TASK, time_limit=300)
def sweep() -> None:
    report = pipeline.sweep(get_context())
    if report.resent or report.timed_out or report.unknown or report.webhooks_sent:
        log.info("sweep: %d checks handed out, %d resent, %d timed out, %d outcome unknown, "
                 "%d webhook deliveries sent", report.dispatched, report.resent,
                 report.timed_out, report.unknown, report.webhooks_sent)


@shared_task(name=CHECK_TASK, time_limit=120)
def check(batch: list[list[Any]]) -> None:
    """A batch of due status checks. Not retried: the schedule's lease brings every job
    of a lost or failed batch back one gap later."""
    errors = pipeline.run_checks(get_context(), [Due.from_message(item) for item in batch])
    if errors:
        log.warning("status checks: %d of %d failed", len(errors), len(batch))
