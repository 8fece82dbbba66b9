"""Status checks at scale, end to end: checks handed out as tasks and shared by two real
Celery workers, the schedule rebuilt after Redis loses it, no check missed across a worker
restart or a worker that died holding a claimed batch."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_received

from app.check_schedule import MARKER_KEY, SCHEDULE_KEY
from app.queue import CHECK_TASK
from sandbox import SandboxProvider
from tests.test_worker_e2e import DESIGN, Stack, make_stack  # noqa: F401  (fixture)

INTERVAL = 3  # STATUS_CHECK_INTERVAL in these tests: a check is scheduled every 1 s


@pytest.fixture
def sandbox() -> Iterator[SandboxProvider]:
    """fal jobs that stay IN_PROGRESS for the whole test (then finish)."""
    with SandboxProvider(queue_seconds=0.2, run_seconds=20, render=False) as provider:
        yield provider


class CheckCounter:
    """Status checks received per Celery worker node, counted from each batch task's
    arguments (both workers share this process, so the consumer names the node)."""

    def __init__(self) -> None:
        self.by_node: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        if getattr(request, "name", None) == CHECK_TASK:
            with self._lock:
                self.by_node[str(sender.hostname)] += len(request.args[0])


@pytest.fixture
def check_counter() -> Iterator[CheckCounter]:
    counter = CheckCounter()
    task_received.connect(counter, weak=False)
    yield counter
    task_received.disconnect(counter)


def start_jobs(stack: Stack, n: int) -> list[str]:
    user = stack.user(credits=500 * n)
    key = user.upload(DESIGN)
    ids = [user.start(key).get_json()["jobId"] for _ in range(n)]
    deadline = time.time() + 60
    while time.time() < deadline:
        jobs = [stack.store.jobs.get(j) for j in ids]
        if all(j and j.get("phase") == "in_progress" for j in jobs):
            return ids
        time.sleep(0.2)
    raise AssertionError("jobs did not reach IN_PROGRESS at the sandbox")


def request_ids(stack: Stack, ids: list[str]) -> list[str]:
    return [stack.store.jobs.get(j)["fal_request_id"] for j in ids]  # type: ignore[index]


def watch_gaps(sandbox: SandboxProvider, rids: list[str], seconds: float,
               every: float = 0.1) -> dict[str, float]:
    """Sample status-call counters; per request, the longest time without a new call."""
    last_count = {r: sandbox.status_call_count(r) for r in rids}
    last_seen = dict.fromkeys(rids, time.monotonic())
    worst = dict.fromkeys(rids, 0.0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(every)
        now = time.monotonic()
        for r in rids:
            count = sandbox.status_call_count(r)
            if count > last_count[r]:
                last_count[r], last_seen[r] = count, now
            worst[r] = max(worst[r], now - last_seen[r])
    return worst


def test_two_workers_share_the_status_checks(make_stack: Callable[..., Stack],  # noqa: F811
                                             check_counter: CheckCounter) -> None:
    stack = make_stack(status_check_interval=INTERVAL, sweep_every=0.5)
    second = start_worker(stack.celery, pool="threads", concurrency=4,
                          perform_ping_check=False, loglevel="WARNING", queues=["checks"],
                          hostname="w2@videojobs-test")
    with second:
        ids = start_jobs(stack, 30)
        check_counter.by_node.clear()
        time.sleep(12)
        counts = dict(check_counter.by_node)
        # Both workers stay up until the end. The wait allows one finalize-lease takeover
        # (90 s) on a loaded machine; it is not what this test measures.
        finals = [stack.wait_terminal(j, timeout=240) for j in ids]
    total = sum(counts.values())
    assert len(counts) == 2, counts  # both workers ran checks
    assert total >= 30 * 12 / (INTERVAL - 1) * 0.6, counts  # and all of them were done
    for node, n in counts.items():
        assert 0.3 <= n / total <= 0.7, (node, counts)
    assert [f["status"] for f in finals] == ["completed"] * len(ids)


def test_schedule_is_rebuilt_after_redis_flushall(make_stack: Callable[..., Stack],  # noqa: F811
                                                 redis_client: Any,
                                                 sandbox: SandboxProvider) -> None:
    stack = make_stack(status_check_interval=INTERVAL, sweep_every=0.5)
    ids = start_jobs(stack, 8)
    rids = request_ids(stack, ids)
    assert redis_client.zcard(SCHEDULE_KEY) == 8
    redis_client.flushall()  # Redis restarted empty: schedule, marker and queues are gone
    assert not redis_client.exists(MARKER_KEY)
    before = {r: sandbox.status_call_count(r) for r in rids}
    worst = watch_gaps(sandbox, rids, 3 * INTERVAL)
    assert redis_client.exists(MARKER_KEY) and redis_client.zcard(SCHEDULE_KEY) == 8
    assert all(sandbox.status_call_count(r) > before[r] for r in rids)
    # The rebuild makes every job due at once, so even across the flush no job waited
    # much longer than the interval.
    assert max(worst.values()) <= INTERVAL + 2, worst
    finals = [stack.wait_terminal(j, timeout=90) for j in ids]
    assert [f["status"] for f in finals] == ["completed"] * len(ids)


def test_a_batch_claimed_by_a_worker_that_died_comes_back(
        make_stack: Callable[..., Stack], sandbox: SandboxProvider) -> None:  # noqa: F811
    stack = make_stack(status_check_interval=INTERVAL, sweep_every=0.5)
    ids = start_jobs(stack, 10)
    rids = request_ids(stack, ids)
    # A worker claims every job, as a sweep would, and dies before checking any of them.
    abandoned = stack.ctx.schedule.claim(100, now=time.time() + stack.ctx.schedule.gap)
    assert {d.job_id for d in abandoned} == set(ids)
    before = {r: sandbox.status_call_count(r) for r in rids}
    worst = watch_gaps(sandbox, rids, 3 * INTERVAL)
    # The claim was a lease: each job is due again one gap later and checked then.
    assert all(sandbox.status_call_count(r) >= before[r] + 2 for r in rids)
    assert max(worst.values()) <= INTERVAL + 1.5, worst


def test_no_check_is_missed_across_a_worker_restart(
        make_stack: Callable[..., Stack], sandbox: SandboxProvider,  # noqa: F811
        check_counter: CheckCounter) -> None:
    stack = make_stack(status_check_interval=INTERVAL, sweep_every=0.5,
                       worker_queues=("control", "transfer"))
    checker = start_worker(stack.celery, pool="threads", concurrency=4,
                           perform_ping_check=False, loglevel="WARNING", queues=["checks"],
                           hostname="w-old@videojobs-test")
    checker.__enter__()
    ids = start_jobs(stack, 10)
    rids = request_ids(stack, ids)
    sampler: dict[str, float] = {}
    watcher = threading.Thread(target=lambda: sampler.update(
        watch_gaps(sandbox, rids, 6 * INTERVAL)))
    watcher.start()
    time.sleep(INTERVAL)
    started = time.monotonic()
    checker.__exit__(None, None, None)  # the only check worker stops (warm shutdown) ...
    time.sleep(1.0)
    with start_worker(stack.celery, pool="threads", concurrency=4, perform_ping_check=False,
                      loglevel="WARNING", queues=["control", "checks", "transfer"],
                      hostname="w-new@videojobs-test"):
        restart = time.monotonic() - started  # ... and its replacement is up
        watcher.join()
        finals = [stack.wait_terminal(j, timeout=90) for j in ids]
    # Batches handed out while no worker ran waited in the queue and ran on the new one:
    # every job was checked on both sides of the restart, none waited much longer than the
    # restart itself plus one interval.
    assert set(check_counter.by_node) == {"w-old@videojobs-test", "w-new@videojobs-test"}
    assert check_counter.by_node["w-new@videojobs-test"] >= 10
    assert max(sampler.values()) <= restart + INTERVAL + 1.5, (sampler, restart)
    assert [f["status"] for f in finals] == ["completed"] * len(ids)
