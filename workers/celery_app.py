"""The Celery app, configured from Settings: queues, routes, events for Flower, beat.

    celery -A workers.celery_app:celery worker --queues control,checks,transfer,webhooks -E
    celery -A workers.celery_app:celery beat
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

from app.config import Settings
from app.queue import (
    CANCEL_TASK,
    CHECK_TASK,
    CHECKS_QUEUE,
    CONTROL_QUEUE,
    DELIVER_WEBHOOK_TASK,
    FINALIZE_TASK,
    SUBMIT_TASK,
    SWEEP_TASK,
    TRANSFER_QUEUE,
    WEBHOOK_QUEUE,
)

# Longer than any task's hard time limit, so Redis never redelivers a task still running.
VISIBILITY_TIMEOUT = 2 * 3600
FINALIZE_TIME_LIMIT = 3600


def make_celery(settings: Settings, broker_url: str | None = None) -> Celery:
    """A Celery app whose tasks are ours (`workers.tasks`), from Settings."""
    broker = broker_url or settings.redis_url
    app = Celery("videojobs", broker=broker, set_as_current=True)
    if broker.startswith("redis://"):
        # kombu's Redis transport with one crash fixed (workers/broker.py).
        app.conf.broker_transport = "workers.broker:Transport"
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_default_queue=CONTROL_QUEUE,
        task_routes={FINALIZE_TASK: {"queue": TRANSFER_QUEUE},
                     SUBMIT_TASK: {"queue": CONTROL_QUEUE},
                     SWEEP_TASK: {"queue": CONTROL_QUEUE},
                     CANCEL_TASK: {"queue": CONTROL_QUEUE},
                     DELIVER_WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE},

                     CHECK_TASK: {"queue": CHECKS_QUEUE}},
        # Every task re-reads the record and acts by compare-and-set, so redelivery after a
        # crash is safe: acknowledge only when done.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        # Ride out a Redis outage of any length (the default gives up after 100 tries and
        # the worker exits). The worker line also runs --without-gossip --without-mingle:
        # Gossip's restart after a lost connection closes its channel on the dead
        # connection and fails the same way as workers/broker.py describes (logged as
        # "Error on restarting Gossip"); nothing here uses gossip or mingle.
        broker_connection_max_retries=None,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        # Two beats may run: only the holder of a Redis lock sends (workers/beat.py).
        beat_scheduler="workers.beat:LockedScheduler",
        beat_schedule={"sweep": {"task": SWEEP_TASK, "schedule": 1.0,
                                 "options": {"expires": 5}}},
    )
    import workers.tasks  # noqa: F401  (registers the tasks on this app)

    return app


@worker_init.connect
def _own_event_loop(**_: Any) -> None:
    """A worker must run its own event loop, not the one another worker runs.

    Celery's Hub step reuses kombu's process-wide current loop, so a second worker in one
    process (the tests run two) ran the first one's loop from its own thread: each served
    the other's broker sockets and timers, and two threads read, wrote and closed one Redis
    connection (workers/broker.py tells how that ended). `celery worker` runs one worker
    per process, so there is no loop yet here and this changes nothing."""
    from kombu.asynchronous import set_event_loop

    set_event_loop(None)


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    """A forked child must open its own store connection (reusing the parent's hangs)."""
    from workers import context

    context.set_context(None)


_celery: Celery | None = None


def get_celery() -> Celery:
    global _celery
    if _celery is None:
        _celery = make_celery(Settings.from_env())
    return _celery


def __getattr__(name: str) -> Any:
    """`celery -A workers.celery_app:celery` builds the app on first access only."""
    if name == "celery":
        from app.logs import configure_logging

        configure_logging()
        return get_celery()
    raise AttributeError(name)
