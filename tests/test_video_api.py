"""POST /api/templates/video and the status, list and cancel endpoints (docs/api.md §3-5)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest

from app import create_app
from app.store import Database, DatabaseConfig, Store
from tests.conftest import UserSession, free_port

COST = 500  # night-life-roller, 5 s


def snapshot(store: Store, user: UserSession) -> tuple[int, int, int]:
    """Balance, job count and ledger size: what must not move on an error."""
    return user.credits(), store.jobs.count(), len(store.ledger.for_user(user.id))


def queued_messages(redis_client: Any) -> list[dict[str, Any]]:
    """Celery messages waiting on the `control` queue, decoded."""
    out = []
    for raw in redis_client.lrange("control", 0, -1):
        msg = json.loads(raw)
        out.append({"task": msg["headers"]["task"], "args": msg["headers"].get("argsrepr")})
    return out


def test_start_video_charges_records_and_enqueues(make_user: Any, store: Store,
                                                  redis_client: Any, caplog: Any) -> None:
    user = make_user(credits=1200)
    key = user.upload()
    with caplog.at_level(logging.INFO):
        resp = user.start(key, variables={"city": "Lisbon"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) == {"jobId", "status", "credits", "message"}
    assert body["status"] == "pending" and body["credits"] == COST
    assert body["message"] == ("Video generation started. Check status at "
                               "/api/templates/video/status")
    assert user.credits() == 1200 - COST
    job = store.jobs.get(body["jobId"])
    assert job is not None
    assert job["status"] == "pending" and job["email"] == user.email
    assert job["template_id"] == "night-life-roller" and job["start_key"] == key
    assert job["duration"] == "5" and job["credits"] == COST
    assert job["variables"]["city"] == "Lisbon" and "mood" in job["variables"]
    assert "Lisbon" in job["prompt"]
    assert "fal_request_id" not in job and job["refunded"] is False
    assert job["created_at"] and job["updated_at"]
    charges = [r for r in store.ledger.for_user(user.id) if r["kind"] == "charge"]
    assert [(c["amount"], c["ref"]) for c in charges] == [(-COST, body["jobId"])]
    assert {"task": "videojobs.submit", "args": repr([body["jobId"]])} in \
        queued_messages(redis_client)
    assert f"[VIDEO JOB] Queued job {body['jobId']} for user {user.email}" in caplog.messages


def test_ten_second_duration_costs_more(make_user: Any) -> None:
    user = make_user(credits=5000)
    resp = user.start(user.upload(), duration="10")
    assert resp.status_code == 200
    assert resp.get_json()["credits"] == 1000
    assert user.credits() == 4000


def test_no_credentials_is_401_and_changes_nothing(client: Any, make_user: Any,
                                                   store: Store) -> None:
    user = make_user()
    key = user.upload()
    before = snapshot(store, user)
    resp = client.post("/api/templates/video", json={"templateSlug": "night-life-roller",
                                                     "startKey": key})
    assert resp.status_code == 401 and resp.get_json() == {"error": "UNAUTHORIZED"}
    bad = client.post("/api/templates/video", json={}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.get_json() == {"error": "UNAUTHORIZED"}
    assert snapshot(store, user) == before


def test_bearer_token_works(client: Any, make_user: Any, store: Store) -> None:
    user = make_user()
    key = user.upload()
    token = store.tokens.create(user.id, user.email)
    resp = client.post("/api/templates/video", headers={"Authorization": f"Bearer {token}"},
                       json={"templateSlug": "night-life-roller", "startKey": key})
    assert resp.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None])
def test_non_json_media_type_is_415(make_user: Any, store: Store, content_type: str | None
                                    ) -> None:
    user = make_user()
    key = user.upload()
    before = snapshot(store, user)
    body = json.dumps({"templateSlug": "night-life-roller", "startKey": key})
    headers = {"Content-Type": content_type} if content_type else {}
    resp = user.client.post("/api/templates/video", data=body, headers=headers)
    assert resp.status_code == 415
    assert resp.get_json() == {"error": "UNSUPPORTED_MEDIA_TYPE"}
    assert snapshot(store, user) == before


@pytest.mark.parametrize("payload, field", [
    ("{not json", "_body"),
    ('["a list"]', "_schema"),
    ('{"startKey": "k"}', "templateSlug"),
    ('{"templateSlug": "night-life-roller"}', "startKey"),
    ('{"templateSlug": 5, "startKey": "k"}', "templateSlug"),
    ('{"templateSlug": "night-life-roller", "startKey": "k", "variables": "x"}', "variables"),
    ('{"templateSlug": "night-life-roller", "startKey": "k", "duration": "five"}', "duration"),
    ('{"templateSlug": "night-life-roller", "startKey": "k", "extra": 1}', "extra"),
])
def test_malformed_body_is_400_with_details(make_user: Any, store: Store, payload: str,
                                            field: str) -> None:
    user = make_user()
    before = snapshot(store, user)
    resp = user.client.post("/api/templates/video", data=payload,
                            content_type="application/json")
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "VALIDATION_ERROR"
    assert field in body["details"] and all(isinstance(m, str) for m in body["details"][field])
    assert snapshot(store, user) == before


def test_unknown_and_inactive_template_are_404(make_user: Any, store: Store) -> None:
    user = make_user()
    key = user.upload()
    before = snapshot(store, user)
    resp = user.start(key, templateSlug="no-such-template")
    assert resp.status_code == 404 and resp.get_json() == {"error": "Template not found"}
    record = store.templates.get("night-life-roller")
    assert record is not None
    store.templates.upsert({**record, "active": False})
    resp = user.start(key)
    assert resp.status_code == 404 and resp.get_json() == {"error": "Template not found"}
    assert snapshot(store, user) == before


def test_bad_duration_and_variables_are_400(make_user: Any, store: Store) -> None:
    user = make_user()
    key = user.upload()
    before = snapshot(store, user)
    resp = user.start(key, duration="7", variables={"mood": "furious", "bogus": "x"})
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "VALIDATION_ERROR"
    assert "duration" in body["details"]
    assert any("mood" in k for k in body["details"]) and any("bogus" in k for k in body["details"])
    assert snapshot(store, user) == before


def test_template_check_comes_before_duration(make_user: Any) -> None:
    user = make_user()
    resp = user.start(user.upload(), templateSlug="nope", duration="7")
    assert resp.status_code == 404


@pytest.mark.parametrize("make_key", [
    lambda me, other: f"users/{me}/library/missing.png",
    lambda me, other: other,
    lambda me, other: "users/{}/library/../../{}".format(me, other.split("/", 1)[1]),
    lambda me, other: "/" + other,
    lambda me, other: "../" + other,
    lambda me, other: other.replace("users/", f"users/{me}/../"),
    lambda me, other: f"elsewhere/{me}/library/x.png",
])
def test_start_image_not_the_callers_is_404(make_user: Any, store: Store, make_key: Any
                                            ) -> None:
    me, other = make_user(), make_user()
    other_key = other.upload()
    before = snapshot(store, me)
    resp = me.start(make_key(me.id, other_key))
    assert resp.status_code == 404 and resp.get_json() == {"error": "Start image not found"}
    assert snapshot(store, me) == before
    assert other.credits() == 1000


def test_insufficient_credits_is_402_and_changes_nothing(make_user: Any, store: Store) -> None:
    user = make_user(credits=COST - 1)
    key = user.upload()
    before = snapshot(store, user)
    resp = user.start(key)
    assert resp.status_code == 402 and resp.get_json() == {"error": "INSUFFICIENT_CREDITS"}
    assert snapshot(store, user) == before


def test_idempotent_retry_returns_first_response_and_charges_once(make_user: Any,
                                                                   store: Store) -> None:
    user = make_user(credits=2000)
    key = user.upload()
    first = user.start(key, headers={"Idempotency-Key": "abc-123"})
    again = user.start(key, headers={"Idempotency-Key": "abc-123"})
    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json()
    assert user.credits() == 2000 - COST and store.jobs.count() == 1
    other_user = make_user(credits=2000)  # keys are per user
    theirs = other_user.start(other_user.upload(), headers={"Idempotency-Key": "abc-123"})
    assert theirs.status_code == 200 and theirs.get_json()["jobId"] != first.get_json()["jobId"]


def test_idempotency_key_reused_with_other_body_is_409(make_user: Any, store: Store) -> None:
    user = make_user(credits=2000)
    key = user.upload()
    assert user.start(key, headers={"Idempotency-Key": "k1"}).status_code == 200
    before = snapshot(store, user)
    resp = user.start(key, duration="10", headers={"Idempotency-Key": "k1"})
    assert resp.status_code == 409 and resp.get_json() == {"error": "IDEMPOTENCY_KEY_REUSED"}
    assert snapshot(store, user) == before


def test_overlong_idempotency_key_is_400(make_user: Any, store: Store) -> None:
    user = make_user()
    key = user.upload()
    before = snapshot(store, user)
    resp = user.start(key, headers={"Idempotency-Key": "x" * 256})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "VALIDATION_ERROR"
    assert "Idempotency-Key" in resp.get_json()["details"]
    assert snapshot(store, user) == before
    assert user.start(key, headers={"Idempotency-Key": "x" * 255}).status_code == 200


def test_concurrent_posts_never_overspend(make_user: Any, store: Store) -> None:
    jobs_affordable = 7
    user = make_user(credits=COST * jobs_affordable)
    key = user.upload()
    cookie = user.client.get_cookie("videojobs_session")
    assert cookie is not None
    statuses: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        c = user.client.application.test_client()
        c.set_cookie("videojobs_session", cookie.value)
        code = c.post("/api/templates/video", json={"templateSlug": "night-life-roller",
                                                    "startKey": key}).status_code
        with lock:
            statuses.append(code)

    threads = [threading.Thread(target=post) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(200) == jobs_affordable
    assert statuses.count(402) == 24 - jobs_affordable
    assert user.credits() == 0
    charges = [r for r in store.ledger.for_user(user.id) if r["kind"] == "charge"]
    assert len(charges) == jobs_affordable == store.jobs.count()
    assert store.ledger.sum_for_user(user.id) == user.credits()


def test_concurrent_same_idempotency_key_creates_one_job(make_user: Any, store: Store) -> None:
    user = make_user(credits=5000)
    key = user.upload()
    cookie = user.client.get_cookie("videojobs_session")
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def post() -> None:
        c = user.client.application.test_client()
        c.set_cookie("videojobs_session", cookie.value)
        r = c.post("/api/templates/video", headers={"Idempotency-Key": "same"},
                   json={"templateSlug": "night-life-roller", "startKey": key})
        with lock:
            results.append((r.status_code, r.get_json()["jobId"]))

    threads = [threading.Thread(target=post) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {code for code, _ in results} == {200}
    assert len({job for _, job in results}) == 1
    assert store.jobs.count() == 1 and user.credits() == 5000 - COST


def test_rate_limit_is_429_with_retry_after(settings: Any, store: Store, redis_client: Any,
                                            templates_loaded: None) -> None:
    app = create_app(settings.replace(rate_limit_per_minute=3), store=store)
    user = UserSession(app, store, "limited@example.com", 10_000)
    key = user.upload()  # uploads count too
    assert user.start(key).status_code == 200
    assert user.start(key).status_code == 200
    before = snapshot(store, user)
    resp = user.start(key)
    assert resp.status_code == 429 and resp.get_json() == {"error": "RATE_LIMITED"}
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert snapshot(store, user) == before


def test_store_unreachable_is_503(settings: Any, make_user: Any, app: Any) -> None:
    user = make_user()
    cookie = user.client.get_cookie("videojobs_session")
    dead = Store(Database(DatabaseConfig(f"ws://127.0.0.1:{free_port()}/rpc")))
    broken = create_app(settings, store=dead)
    c = broken.test_client()
    c.set_cookie("videojobs_session", cookie.value)
    resp = c.post("/api/templates/video", json={"templateSlug": "night-life-roller",
                                                "startKey": "users/x/library/a.png"})
    assert resp.status_code == 503 and resp.get_json() == {"error": "SERVICE_UNAVAILABLE"}
    assert c.get("/api/templates/video/status?jobId=" + "0" * 32).status_code == 503
    assert broken.test_client().get("/readyz").status_code == 503


def test_broker_down_still_accepts_and_leaves_job_pending(settings: Any, store: Store,
                                                          templates_loaded: None,
                                                          caplog: Any) -> None:
    app = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"),
                     store=store)
    user = UserSession(app, store, "nobroker@example.com", 1000)
    with caplog.at_level(logging.WARNING):
        resp = user.start(user.upload())
    assert resp.status_code == 200
    job = store.jobs.get(resp.get_json()["jobId"])
    assert job is not None and job["status"] == "pending"
    assert any("sweeper" in m for m in caplog.messages)


def test_csrf_cross_origin_cookie_post_is_403(make_user: Any, store: Store) -> None:
    user = make_user()
    key = user.upload()
    before = snapshot(store, user)
    body = {"templateSlug": "night-life-roller", "startKey": key}
    for headers in ({"Origin": "https://evil.example"},
                    {"Referer": "https://evil.example/page"}):
        resp = user.client.post("/api/templates/video", json=body, headers=headers)
        assert resp.status_code == 403 and resp.get_json() == {"error": "CSRF_REJECTED"}
    assert snapshot(store, user) == before
    same = user.client.post("/api/templates/video", json=body,
                            headers={"Origin": "http://localhost"})
    assert same.status_code == 200
    token = store.tokens.create(user.id, user.email)
    bearer = user.client.application.test_client().post(
        "/api/templates/video", json=body,
        headers={"Origin": "https://evil.example", "Authorization": f"Bearer {token}"})
    assert bearer.status_code == 200


# ---- status -----------------------------------------------------------------------------

def test_status_for_each_state(make_user: Any, store: Store) -> None:
    user = make_user(credits=5000)
    key = user.upload()
    job_ids = [user.start(key).get_json()["jobId"] for _ in range(4)]

    def status(job_id: str) -> dict[str, Any]:
        resp = user.client.get(f"/api/templates/video/status?jobId={job_id}")
        assert resp.status_code == 200
        return dict(resp.get_json())

    pending = status(job_ids[0])
    assert pending["status"] == "pending" and pending["message"] == "Waiting for a worker..."

    store.jobs.update_if(job_ids[1], ("pending",), {"status": "processing",
                                                    "phase": "in_queue", "queue_position": 3})
    processing = status(job_ids[1])
    assert processing["status"] == "processing"
    assert processing["message"] == "Generating video..." and processing["queuePosition"] == 3

    video_key = f"users/{user.id}/library/{job_ids[2]}.mp4"
    storage = user.client.application.extensions["videojobs.storage"]
    import io
    storage.put_stream(video_key, io.BytesIO(b"\x00\x00\x00\x18ftypmp42fake"), "video/mp4")
    store.jobs.update_if(job_ids[2], ("pending",), {"status": "processing"})
    store.jobs.update_if(job_ids[2], ("processing",), {"status": "completed",
                                                       "result_key": video_key})
    completed = status(job_ids[2])
    assert completed["status"] == "completed" and completed["key"] == video_key
    assert completed["credits"] == COST and completed["url"].startswith("/files/")
    download = user.client.get(completed["url"].replace("http://localhost", ""))
    assert download.status_code == 200
    assert download.data == b"\x00\x00\x00\x18ftypmp42fake"

    store.jobs.fail_and_refund(job_ids[3], "Model said no")
    failed = status(job_ids[3])
    assert failed["status"] == "failed" and failed["error"] == "Model said no"
    assert failed["refunded"] is True
    assert user.credits() == 5000 - 3 * COST


def test_status_errors(make_user: Any) -> None:
    me, other = make_user(), make_user()
    theirs = other.start(other.upload()).get_json()["jobId"]
    resp = me.client.get("/api/templates/video/status")
    assert resp.status_code == 400 and resp.get_json() == {"error": "jobId is required"}
    for job_id in (theirs, "0" * 32, "../../etc", "video_job:x"):
        resp = me.client.get("/api/templates/video/status", query_string={"jobId": job_id})
        assert resp.status_code == 404 and resp.get_json() == {"error": "Job not found"}
    assert me.client.application.test_client().get(
        f"/api/templates/video/status?jobId={theirs}").status_code == 401


# ---- list and cancel ---------------------------------------------------------------------

def test_jobs_list_is_newest_first_paginated_and_private(make_user: Any) -> None:
    me, other = make_user(credits=10_000), make_user()
    key = me.upload()
    created = [me.start(key).get_json()["jobId"] for _ in range(5)]
    other.start(other.upload())
    page1 = me.client.get("/api/templates/video/jobs?limit=3").get_json()
    assert [j["jobId"] for j in page1["jobs"]] == created[::-1][:3]
    assert page1["nextCursor"]
    item = page1["jobs"][0]
    assert set(item) >= {"jobId", "status", "templateSlug", "duration", "credits", "createdAt"}
    assert item["startKey"] == key and "error" not in item and "key" not in item
    page2 = me.client.get("/api/templates/video/jobs",
                          query_string={"limit": 3, "cursor": page1["nextCursor"]}).get_json()
    assert [j["jobId"] for j in page2["jobs"]] == created[::-1][3:]
    assert page2["nextCursor"] is None
    bad = me.client.get("/api/templates/video/jobs?cursor=garbage!")
    assert bad.status_code == 400
    assert me.client.get("/api/templates/video/jobs?limit=0").status_code == 400


def test_jobs_list_carries_reason_refund_and_key(make_user: Any, store: Store) -> None:
    """A reloaded dashboard can show why a job failed, its refund, and the finished video."""
    me = make_user(credits=5000)
    key = me.upload()
    failed, done, waiting = (me.start(key).get_json()["jobId"] for _ in range(3))
    assert me.client.post("/api/templates/video/cancel", json={"jobId": failed}
                          ).status_code == 200
    video_key = f"users/{me.id}/library/{done}.mp4"
    store.jobs.update_if(done, ("pending",), {"status": "processing"})
    store.jobs.update_if(done, ("processing",), {"status": "completed", "result_key": video_key})
    listed = {j["jobId"]: j for j in me.client.get("/api/templates/video/jobs").get_json()["jobs"]}
    assert listed[failed]["status"] == "failed"
    assert listed[failed]["error"] == "Cancelled" and listed[failed]["refunded"] is True
    assert listed[done]["status"] == "completed" and listed[done]["key"] == video_key
    assert "error" not in listed[done] and "refunded" not in listed[done]
    assert listed[waiting]["status"] == "pending"
    assert not {"error", "refunded", "key"} & set(listed[waiting])


def test_cancel_pending_job_refunds_once(make_user: Any, store: Store) -> None:
    user = make_user(credits=1000)
    job_id = user.start(user.upload()).get_json()["jobId"]
    assert user.credits() == 1000 - COST
    resp = user.client.post("/api/templates/video/cancel", json={"jobId": job_id})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "failed" and body["error"] == "Cancelled"
    assert body["refunded"] is True
    assert user.credits() == 1000
    again = user.client.post("/api/templates/video/cancel", json={"jobId": job_id})
    assert again.status_code == 409 and again.get_json() == {"error": "JOB_FINISHED"}
    assert user.credits() == 1000
    refunds = [r for r in store.ledger.for_user(user.id) if r["kind"] == "refund"]
    assert len(refunds) == 1
    assert store.jobs.fail_and_refund(job_id, "again") is None
    assert user.credits() == 1000


def test_cancel_someone_elses_job_is_404(make_user: Any) -> None:
    me, other = make_user(), make_user()
    theirs = other.start(other.upload()).get_json()["jobId"]
    resp = me.client.post("/api/templates/video/cancel", json={"jobId": theirs})
    assert resp.status_code == 404
    assert other.credits() == 1000 - COST
