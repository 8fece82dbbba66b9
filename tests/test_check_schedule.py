"""The status-check schedule (Redis sorted set): it follows the record, a claim is a lease,
late sweeps keep jobs spread, and a lost schedule is rebuilt from the store."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis as redis_lib

from app.check_schedule import MARKER_KEY, SCHEDULE_KEY, CheckSchedule
from app.store import Store
from app.store.jobs import NONE
from tests.test_store import new_job

GAP = 8.0


def at_provider(store: Store, n: int, credits: int = 1) -> list[str]:
    """n jobs as a submit leaves them: processing, in_queue, with fal's URLs."""
    user = store.users.create(f"s{time.monotonic_ns()}@example.com", None, credits=n * credits)
    ids = []
    for _ in range(n):
        job = new_job(user, credits)
        store.jobs.create_with_charge(job)
        store.jobs.update_if(job.job_id, ("pending",), {
            "status": "processing", "phase": "in_queue", "provider_status": "IN_QUEUE",
            "fal_request_id": f"r-{job.job_id}", "queue_position": 0,
            "fal_status_url": f"http://fal.invalid/requests/{job.job_id}/status",
            "fal_response_url": "http://fal.invalid/r", "fal_cancel_url": "http://fal.invalid/c",
            "lease_owner": NONE, "lease_until": NONE})
        ids.append(job.job_id)
    return ids


@pytest.fixture(params=["redis", "local"])
def schedule(request: pytest.FixtureRequest, store: Store) -> CheckSchedule:
    client = request.getfixturevalue("redis_client") if request.param == "redis" else None
    return store.use_check_schedule(CheckSchedule(client, GAP))  # type: ignore[no-any-return]


def members(schedule: CheckSchedule) -> set[str]:
    return {d.job_id for d in schedule.claim(100_000, now=time.time() + 10 * GAP)}


def test_schedule_follows_the_record(store: Store, schedule: CheckSchedule) -> None:
    a, b, c = at_provider(store, 3)
    assert schedule.size() == 3
    due = schedule.due_at(a)
    assert due is not None and time.time() + GAP - 5 < due <= time.time() + GAP
    # A status change refreshes what a check needs but keeps the due time.
    store.jobs.update_if(a, ("processing",), {"provider_status": "IN_PROGRESS",
                                              "phase": "in_progress"})
    assert schedule.due_at(a) == due
    [claimed] = [d for d in schedule.claim(10, now=due + 0.01) if d.job_id == a]
    assert claimed.provider_status == "IN_PROGRESS"
    assert claimed.status_url == f"http://fal.invalid/requests/{a}/status"
    # Leaving the provider (completed there, failed, cancelled) unschedules the job.
    store.jobs.update_if(b, ("processing",), {"phase": "finalizing"})
    store.jobs.fail_and_refund(c, "Cancelled")
    assert schedule.size() == 1 and schedule.due_at(b) is None and schedule.due_at(c) is None


def test_a_claim_is_a_lease_that_comes_back(store: Store, schedule: CheckSchedule) -> None:
    ids = at_provider(store, 5)
    now = time.time() + GAP + 1
    first = schedule.claim(100, now=now)
    assert sorted(d.job_id for d in first) == sorted(ids)
    # Claimed: nobody else gets them now (no double checks across workers) ...
    assert schedule.claim(100, now=now) == []
    # ... and if the claimer died, they are due again one gap later: nothing is lost.
    again = schedule.claim(100, now=now + GAP + 0.01)
    assert sorted(d.job_id for d in again) == sorted(ids)


def test_a_late_sweep_keeps_jobs_spread_and_on_time(store: Store,
                                                    schedule: CheckSchedule) -> None:
    ids = at_provider(store, 40)
    before = {j: schedule.due_at(j) for j in ids}
    late = max(v for v in before.values() if v) + 1.5  # every job due, the sweep 1.5 s late
    schedule.claim(100, now=late)
    for job_id in ids:  # next due = old due + gap: lateness is not carried forward
        assert schedule.due_at(job_id) == pytest.approx(before[job_id] + GAP)  # type: ignore
    # Far behind (an outage): the batch is spread evenly over the next gap, not bunched.
    very_late = late + 5 * GAP
    schedule.claim(100, now=very_late)
    dues = sorted(schedule.due_at(j) for j in ids)  # type: ignore[type-var]
    assert dues[0] >= very_late  # type: ignore[operator]
    assert dues[-1] - dues[0] > GAP * 0.8  # type: ignore[operator]


def test_lost_schedule_is_rebuilt_from_the_store(store: Store, redis_client: redis_lib.Redis
                                                 ) -> None:
    schedule: Any = store.use_check_schedule(CheckSchedule(redis_client, GAP))
    ids = at_provider(store, 30)
    gone = at_provider(store, 1)[0]
    store.db.query("UPDATE type::record('video_job', $id) SET phase = 'finalizing';",
                   {"id": gone})  # behind the repository's back: the schedule missed it
    assert schedule.ensure_built(store) is not None  # no marker yet: a first build
    assert redis_client.exists(MARKER_KEY)
    assert schedule.size() == 30 and schedule.due_at(gone) is None  # stale member dropped
    assert schedule.ensure_built(store) is None  # built: nothing to do until the reconcile
    redis_client.flushall()  # Redis lost everything
    assert schedule.size() == 0
    seconds = schedule.ensure_built(store)
    assert seconds is not None and seconds < 10
    assert redis_client.zcard(SCHEDULE_KEY) == 30
    now = time.time()
    dues = [schedule.due_at(j) for j in ids]
    assert all(d is not None and d <= now + 2.5 for d in dues)  # due at once: last check unknown
    assert members(schedule) == set(ids)
