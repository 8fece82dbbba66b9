"""The status cache: newer states always win, entries expire, a dead Redis costs nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as redis_lib

from app.status_cache import StatusCache
from tests.conftest import free_port


def row(status: str, at: datetime, job_id: str = "a" * 32) -> dict[str, Any]:
    return {"id": job_id, "user_id": "u1", "status": status, "credits": 500,
            "created_at": at, "updated_at": at}


@pytest.fixture(params=["redis", "in-process"])
def cache(request: pytest.FixtureRequest) -> StatusCache:
    if request.param == "redis":
        client = request.getfixturevalue("redis_client")
        return StatusCache(client, ttl=1)
    return StatusCache(None, ttl=1)


def test_a_newer_state_is_never_replaced_by_an_older_one(cache: StatusCache) -> None:
    t0 = datetime.now(UTC)
    cache.put(row("processing", t0 + timedelta(seconds=1)))
    cache.put(row("pending", t0))  # a slow reader putting back what it read earlier
    got = cache.get("a" * 32)
    assert got is not None and got["status"] == "processing"
    assert got["updated_at"] == t0 + timedelta(seconds=1)
    cache.put(row("completed", t0 + timedelta(seconds=2)))
    assert cache.get("a" * 32)["status"] == "completed"  # type: ignore[index]


def test_entries_expire(cache: StatusCache) -> None:
    cache.put(row("pending", datetime.now(UTC)))
    assert cache.get("a" * 32) is not None
    time.sleep(2.1)
    assert cache.get("a" * 32) is None


def test_a_dead_redis_falls_back_fast() -> None:
    dead = redis_lib.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    cache = StatusCache(dead)
    cache.put(row("pending", datetime.now(UTC)))  # logged, not raised
    started = time.monotonic()
    for _ in range(20):
        assert cache.get("a" * 32) is None
    assert time.monotonic() - started < 1.0  # not 20 connect timeouts


def test_status_endpoint_uses_the_cache_and_sees_every_write(make_user: Any, store: Any,
                                                             redis_client: Any) -> None:
    user = make_user()
    job_id = user.start(user.upload()).get_json()["jobId"]
    first = user.client.get(f"/api/templates/video/status?jobId={job_id}").get_json()
    assert first["status"] == "pending"
    assert redis_client.get(f"videojobs:status:{job_id}") is not None  # filled on the miss
    store.jobs.update_if(job_id, ("pending",), {"status": "processing", "phase": "in_queue"})
    second = user.client.get(f"/api/templates/video/status?jobId={job_id}").get_json()
    assert second["status"] == "processing" and second["phase"] == "in_queue"
    store.jobs.fail_and_refund(job_id, "boom")
    third = user.client.get(f"/api/templates/video/status?jobId={job_id}").get_json()
    assert third["status"] == "failed" and third["refunded"] is True
    other = make_user()
    resp = other.client.get(f"/api/templates/video/status?jobId={job_id}")
    assert resp.status_code == 404  # a cached job is still private
