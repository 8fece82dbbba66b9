"""The worker side end to end: a real Celery worker on a real redis-server, the sandbox
provider over HTTP, the embedded store shared in-process, local storage on disk."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest
from celery.contrib.testing.worker import start_worker
from werkzeug.serving import make_server

from app import create_app
from app.config import Settings
from app.demo.sample import car_design_png
from app.storage import LocalStorage
from app.store import Store
from sandbox import SandboxProvider
from tests.conftest import UserSession, free_port
from workers import pipeline
from workers.celery_app import make_celery
from workers.context import build_context, set_context

COST = 500
DESIGN = car_design_png(320, 180)


@pytest.fixture
def sandbox() -> Iterator[SandboxProvider]:
    with SandboxProvider(queue_seconds=0.3, run_seconds=0.8, render=True) as provider:
        yield provider


class Stack:
    """The running service: web app (test client and live server), worker, sweeper."""

    def __init__(self, settings: Settings, store: Store, sandbox: SandboxProvider,
                 sweep_every: float | None, storage: Any = None) -> None:
        self.settings, self.store, self.sandbox = settings, store, sandbox
        self.celery = make_celery(settings)
        self.storage = storage or LocalStorage(Path(settings.storage_dir),
                                               settings.secret_key or "x")
        self.ctx = build_context(settings, self.celery, store=store, storage=self.storage)
        set_context(self.ctx)
        self.app = create_app(settings, store=store, storage=self.storage, celery=self.celery)
        self.sweep_every = sweep_every
        self._stop = threading.Event()

    def user(self, credits: int = 2000) -> UserSession:
        return UserSession(self.app, self.store, f"u{time.monotonic_ns()}@example.com", credits)

    def run_sweeper(self) -> None:
        while not self._stop.wait(self.sweep_every or 1.0):
            pipeline.sweep(self.ctx)

    def wait_terminal(self, job_id: str, timeout: float = 40) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.store.jobs.get(job_id)
            if job and job["status"] in ("completed", "failed"):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish: {self.store.jobs.get(job_id)}")


@pytest.fixture
def make_stack(tmp_path: Path, redis_url: str, redis_client: Any, store: Store,
               templates_loaded: None, sandbox: SandboxProvider
               ) -> Iterator[Callable[..., Stack]]:
    started: list[Any] = []

    def factory(sweep_every: float | None = 0.3, storage: Any = None,
                worker_queues: tuple[str, ...] = ("control", "checks", "transfer", "webhooks"),
                **overrides: Any) -> Stack:
        settings = Settings(
            secret_key="test-secret", surrealdb_url="mem://", redis_url=redis_url,
            storage_dir=str(tmp_path / "storage"), rate_limit_per_minute=0, embedded=True,
            fal_key="test:key", fal_queue_url=sandbox.queue_url, fal_jwks_url=sandbox.jwks_url,
            allow_private_downloads=True, status_check_interval=2,
        ).replace(**overrides)
        stack = Stack(settings, store, sandbox, sweep_every, storage)
        worker = start_worker(stack.celery, pool="threads", concurrency=4,
                              perform_ping_check=False, loglevel="WARNING",
                              queues=list(worker_queues))
        worker.__enter__()
        started.append(worker)
        if sweep_every is not None:
            thread = threading.Thread(target=stack.run_sweeper, daemon=True)
            thread.start()
        started.append(stack)
        return stack

    yield factory
    for item in reversed(started):
        if isinstance(item, Stack):
            item._stop.set()
        else:
            item.__exit__(None, None, None)
    set_context(None)


def probe_video(path: Path) -> str:
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path)],
                         capture_output=True, text=True)
    return out.stderr


def balance_explained(store: Store, user: UserSession) -> None:
    assert store.ledger.sum_for_user(user.id) == user.credits()


def wait_for_poster(user: Any, timeout: float = 20) -> list[dict[str, Any]]:
    """The user's library videos, once each has its poster frame."""
    deadline = time.time() + timeout
    while True:
        videos = [i for i in user.client.get("/api/library").get_json()["items"]
                  if i["kind"] == "video"]
        if videos and all("posterUrl" in v for v in videos):
            return videos
        assert time.time() < deadline, f"no poster frame: {videos}"
        time.sleep(0.1)


def test_happy_path_end_to_end(make_stack: Callable[..., Stack], caplog: Any) -> None:
    stack = make_stack()
    user = stack.user()
    key = user.upload(DESIGN)
    with caplog.at_level(logging.INFO):
        job_id = user.start(key).get_json()["jobId"]
        seen = set()
        deadline = time.time() + 40
        while time.time() < deadline:
            body = user.client.get(f"/api/templates/video/status?jobId={job_id}").get_json()
            seen.add(body["status"])
            if body["status"] in ("completed", "failed"):
                break
            time.sleep(0.1)
    assert body["status"] == "completed", body
    assert "processing" in seen
    assert body["key"] == f"users/{user.id}/library/{job_id}.mp4"
    video = user.client.get(body["url"].replace("http://localhost", ""))
    assert video.status_code == 200 and video.headers["Content-Type"] == "video/mp4"
    saved = Path(stack.settings.storage_dir) / body["key"]
    info = probe_video(saved)
    assert "Video: h264" in info and "Duration: 00:00:05" in info
    job = stack.store.jobs.get(job_id)
    assert job is not None
    for name in ("fal_request_id", "status", "email", "template_id", "start_key", "duration",
                 "variables", "credits", "result_key", "refunded", "created_at", "updated_at",
                 "completed_at"):
        assert name in job, name
    assert job["refunded"] is False and job["credits"] == COST
    items = user.client.get("/api/library").get_json()["items"]
    videos = [i for i in items if i["kind"] == "video"]
    assert len(videos) == 1 and videos[0]["jobId"] == job_id
    assert videos[0]["contentType"] == "video/mp4"
    # The card's facts: what made it, and a poster frame stored next to the video.
    assert videos[0]["templateSlug"] == "night-life-roller"
    assert videos[0]["templateName"] == "Night Life Roller"
    assert videos[0]["duration"] == "5" and videos[0]["startKey"] == key
    poster_key = f"users/{user.id}/library/{job_id}.poster.jpg"
    videos = wait_for_poster(user)  # taken right after completion
    poster = user.client.get(videos[0]["posterUrl"].replace("http://localhost", ""))
    assert poster.status_code == 200 and poster.headers["Content-Type"] == "image/jpeg"
    assert poster.data[:2] == b"\xff\xd8" and len(poster.data) > 1000
    assert (Path(stack.settings.storage_dir) / poster_key).is_file()
    # Deleting the video deletes its poster; the poster is never a library item of its own.
    assert all(i["key"] != poster_key for i in items)
    assert len(stack.sandbox.submits()) == 1
    rid = job["fal_request_id"]
    lines = [m for m in caplog.messages if job_id in m or "Stored library video" in m]
    expected = [
        f"[VIDEO JOB] Queued job {job_id} for user {user.email}",
        f"[VIDEO JOB {job_id}] Submitted to fal as {rid}",
        f"[VIDEO JOB {job_id}] Status: IN_QUEUE",
        f"[VIDEO JOB {job_id}] Status: COMPLETED",
        f"Stored library video metadata for {body['key']}",
    ]
    positions = [lines.index(e) for e in expected]
    assert positions == sorted(positions), lines
    assert any(m.startswith(f"[VIDEO JOB {job_id}] Completed, downloading from http://")
               and "?" not in m for m in lines)
    assert user.credits() == 2000 - COST
    balance_explained(stack.store, user)
    gone = user.client.delete("/api/library", query_string={"key": body["key"]})
    assert gone.status_code == 204
    assert not saved.exists() and not (Path(stack.settings.storage_dir) / poster_key).exists()


def test_model_error_fails_and_refunds_once(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    user = stack.user()
    stack.sandbox.queue_scenario("model_error")
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    job = stack.wait_terminal(job_id)
    assert job["status"] == "failed" and job["refunded"] is True
    assert job["error"]
    body = user.client.get(f"/api/templates/video/status?jobId={job_id}").get_json()
    assert body["status"] == "failed" and body["refunded"] is True
    time.sleep(1.0)  # more sweeps: still refunded once
    assert user.credits() == 2000
    assert [r["kind"] for r in stack.store.ledger.for_job(job_id)] == ["charge", "refund"]
    balance_explained(stack.store, user)


@pytest.mark.parametrize("scenario", ["submit_429", "submit_500"])
def test_transient_submit_errors_are_retried_and_fal_sees_one_job(
        make_stack: Callable[..., Stack], scenario: str) -> None:
    stack = make_stack()
    user = stack.user()
    stack.sandbox.queue_scenario(scenario)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    job = stack.wait_terminal(job_id)
    assert job["status"] == "completed", job
    accepted = [s for s in stack.sandbox.submits() if s.get("accepted")]
    assert len(accepted) == 1
    assert user.credits() == 2000 - COST


def test_never_finishing_job_times_out_is_cancelled_and_refunded(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(job_timeout_seconds=3)
    user = stack.user()
    stack.sandbox.queue_scenario("never_finish")
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    job = stack.wait_terminal(job_id, timeout=30)
    assert job["status"] == "failed" and job["error"] == "Timed out" and job["refunded"]
    deadline = time.time() + 10
    while time.time() < deadline and not stack.sandbox.cancels():
        time.sleep(0.1)
    assert len(stack.sandbox.cancels()) >= 1
    assert user.credits() == 2000
    balance_explained(stack.store, user)


def test_cut_download_is_retried_without_resubmitting(make_stack: Callable[..., Stack]
                                                      ) -> None:
    stack = make_stack()
    user = stack.user()
    stack.sandbox.queue_scenario("cut_download")
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    job = stack.wait_terminal(job_id, timeout=60)
    assert job["status"] == "completed", job
    assert len(stack.sandbox.submits()) == 1
    assert len(stack.sandbox.downloads()) >= 2
    assert user.credits() == 2000 - COST


@pytest.mark.parametrize("scenario, overrides", [
    ("wrong_content_type", {}),
    ("huge_file", {"max_video_bytes": 5 * 1024 * 1024}),
    ("private_redirect", {"allow_private_downloads": False}),
])
def test_unsafe_downloads_fail_safely_with_nothing_stored(
        make_stack: Callable[..., Stack], scenario: str, overrides: dict[str, Any]) -> None:
    stack = make_stack(**overrides)
    user = stack.user()
    stack.sandbox.queue_scenario(scenario)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    job = stack.wait_terminal(job_id, timeout=60)
    assert job["status"] == "failed" and job["refunded"] is True, job
    videos = list(Path(stack.settings.storage_dir).rglob("*.mp4"))
    assert videos == []
    assert user.credits() == 2000
    assert len(stack.sandbox.submits()) == 1


def test_lost_message_is_recovered_by_the_sweeper(make_stack: Callable[..., Stack],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.store.jobs.RESEND_PENDING_SECONDS", 1)
    stack = make_stack()
    # A web process whose broker is gone: its submit message is lost for good.
    web = create_app(stack.settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"),
                     store=stack.store, storage=stack.storage)
    user = UserSession(web, stack.store, "lost@example.com", 2000)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    job = stack.wait_terminal(job_id, timeout=40)
    assert job["status"] == "completed", job
    assert len(stack.sandbox.submits()) == 1


def test_signed_webhook_finishes_the_job_without_the_sweeper(
        make_stack: Callable[..., Stack]) -> None:
    port = free_port()
    stack = make_stack(sweep_every=None, status_check_interval=3600,
                       public_base_url=f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, stack.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        user = stack.user()
        job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
        job = stack.wait_terminal(job_id, timeout=40)
        assert job["status"] == "completed", job
        assert stack.sandbox.webhook_deliveries()
        assert stack.sandbox.status_call_count(job["fal_request_id"]) == 0
    finally:
        server.shutdown()


def test_forged_stale_and_replayed_webhooks_change_nothing(
        make_stack: Callable[..., Stack]) -> None:
    import json

    stack = make_stack(sweep_every=None)
    user = stack.user()
    stack.sandbox.queue_scenario("never_finish")
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    deadline = time.time() + 20
    while time.time() < deadline and not (stack.store.jobs.get(job_id) or {}).get(
            "fal_request_id"):
        time.sleep(0.1)
    job = stack.store.jobs.get(job_id)
    rid = job["fal_request_id"]
    body = json.dumps({"request_id": rid, "status": "ERROR", "error": "forged",
                       "payload": None}).encode()
    client = stack.app.test_client()
    forged = client.post("/api/webhooks/fal", data=body, content_type="application/json",
                         headers={"X-Fal-Webhook-Request-Id": rid, "X-Fal-Webhook-User-Id": "u",
                                  "X-Fal-Webhook-Timestamp": str(int(time.time())),
                                  "X-Fal-Webhook-Signature": "00" * 64})
    assert forged.status_code == 401
    stale = client.post("/api/webhooks/fal", data=body, content_type="application/json",
                        headers=stack.sandbox.signed_webhook_headers(
                            rid, body, timestamp=int(time.time()) - 600))
    assert stale.status_code == 401
    after = stack.store.jobs.get(job_id)
    assert after["status"] == "processing" and after["updated_at"] == job["updated_at"]
    good = client.post("/api/webhooks/fal", data=body, content_type="application/json",
                       headers=stack.sandbox.signed_webhook_headers(rid, body))
    assert good.status_code == 200
    assert stack.store.jobs.get(job_id)["status"] == "failed"
    replay = client.post("/api/webhooks/fal", data=body, content_type="application/json",
                         headers=stack.sandbox.signed_webhook_headers(rid, body))
    assert replay.status_code == 200 and replay.get_json()["status"] == "duplicate"
    assert user.credits() == 2000
    assert [r["kind"] for r in stack.store.ledger.for_job(job_id)] == ["charge", "refund"]


def test_two_workers_many_jobs_each_submitted_and_finalized_once(
        make_stack: Callable[..., Stack]) -> None:
    """A second worker (own lease name, own fal client) receives a copy of every message
    and races the real Celery worker on every job: compare-and-set decides each step."""
    stack = make_stack()
    rival = build_context(stack.settings, stack.celery, store=stack.store,
                          storage=stack.storage)
    assert rival.owner != stack.ctx.owner
    user = stack.user(credits=20 * COST)
    key = user.upload(DESIGN)
    job_ids = [user.start(key).get_json()["jobId"] for _ in range(12)]
    stop = threading.Event()

    def race() -> None:
        while not stop.is_set():
            for job_id in job_ids:
                pipeline.submit_job(rival, job_id)
                pipeline.finalize_job(rival, job_id)
            time.sleep(0.02)

    racers = [threading.Thread(target=race, daemon=True) for _ in range(2)]
    for t in racers:
        t.start()
    try:
        finals = [stack.wait_terminal(j, timeout=90) for j in job_ids]
    finally:
        stop.set()
        for t in racers:
            t.join(timeout=30)
    assert {f["status"] for f in finals} == {"completed"}, finals
    accepted = [s for s in stack.sandbox.submits() if s.get("accepted")]
    assert len(accepted) == 12
    videos = [i for i in user.client.get("/api/library").get_json()["items"]
              if i["kind"] == "video"]
    assert sorted(v["jobId"] for v in videos) == sorted(job_ids)
    assert user.credits() == 20 * COST - 12 * COST
    balance_explained(stack.store, user)


def test_cancel_of_a_running_job_cancels_at_fal_and_refunds(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    user = stack.user()
    stack.sandbox.queue_scenario("never_finish")
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    deadline = time.time() + 20
    while time.time() < deadline and stack.store.jobs.get(job_id)["status"] != "processing":
        time.sleep(0.1)
    resp = user.client.post("/api/templates/video/cancel", json={"jobId": job_id})
    assert resp.status_code == 200
    assert resp.get_json()["error"] == "Cancelled" and resp.get_json()["refunded"] is True
    deadline = time.time() + 20
    while time.time() < deadline and not stack.sandbox.cancels():
        time.sleep(0.1)
    assert len(stack.sandbox.cancels()) == 1
    time.sleep(1)
    job = stack.store.jobs.get(job_id)
    assert job["status"] == "failed" and job["cancel_requested"] is False
    assert user.credits() == 2000
    balance_explained(stack.store, user)


def test_happy_path_on_s3_storage(make_stack: Callable[..., Stack], s3_endpoint: str) -> None:
    """The production storage path: the upload goes to an S3-compatible server, fal fetches
    the start image through a presigned URL, and the video is streamed back into S3."""
    import requests

    from app.storage import S3Storage, make_s3_client

    bucket = f"vj-{time.monotonic_ns()}"
    client = make_s3_client(Settings(s3_bucket=bucket, s3_endpoint_url=s3_endpoint,
                                     s3_region="us-east-1", aws_access_key_id="testing",
                                     aws_secret_access_key="testing"))
    client.create_bucket(Bucket=bucket)
    stack = make_stack(storage=S3Storage(bucket, client))
    user = stack.user()
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    job = stack.wait_terminal(job_id)
    assert job["status"] == "completed", job
    fetches = stack.sandbox.image_fetches()
    assert fetches and fetches[-1]["ok"] and fetches[-1]["url"].startswith(s3_endpoint)
    body = user.client.get(f"/api/templates/video/status?jobId={job_id}").get_json()
    assert body["url"].startswith(s3_endpoint) and "Signature" in body["url"]
    video = requests.get(body["url"], timeout=10)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    head = client.head_object(Bucket=bucket, Key=body["key"])
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == len(video.content)
    # ffmpeg read the poster frame through a presigned URL; it sits next to the video.
    [item] = wait_for_poster(user)
    poster = requests.get(item["posterUrl"], timeout=10)
    assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"
    poster_key = f"users/{user.id}/library/{job_id}.poster.jpg"
    assert client.head_object(Bucket=bucket, Key=poster_key)["ContentType"] == "image/jpeg"


def test_webhook_adopts_a_job_whose_submit_answer_was_not_saved(
        make_stack: Callable[..., Stack], caplog: Any) -> None:
    """fal accepted the submit but saving its answer failed (the store was away): the job
    is still `submitting`. fal's signed webhook, whose URL carries the job id, adopts it:
    the job completes at once, submitted once, charged once (it used to be called a
    duplicate and wait for its deadline)."""
    from app.ids import new_id
    from app.store.jobs import NewJob, now_plus

    port = free_port()
    stack = make_stack(sweep_every=None, status_check_interval=3600,
                       public_base_url=f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, stack.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        user = stack.user()
        start_key = user.upload(DESIGN)
        # A worker's claim, as submit_job makes it, without the worker (no message sent).
        job_id = new_id()
        stack.store.jobs.create_with_charge(NewJob(
            job_id=job_id, user_id=user.id, email=user.email, template_id="night-life-roller",
            model="fal-ai/kling-video/v2.1/standard/image-to-video", prompt="p",
            negative_prompt=None, start_key=start_key, duration="5", variables={},
            credits=COST, timeout_seconds=600))
        claimed = stack.store.jobs.update_if(
            job_id, ("pending",), {"phase": "submitting", "lease_owner": "dead-worker",
                                   "lease_until": now_plus(600)}, phases=("queued",))
        assert claimed is not None
        # fal accepts it (the sandbox over HTTP) and its answer is never saved.
        submission = stack.ctx.fal.submit(claimed["model"], pipeline.build_input(
            stack.ctx, claimed), pipeline.webhook_url(stack.ctx, job_id))
        with caplog.at_level(logging.INFO):
            job = stack.wait_terminal(job_id, timeout=60)
        assert job["status"] == "completed", job
        assert job["fal_request_id"] == submission.request_id
        assert len(stack.sandbox.submits()) == 1
        assert [r["kind"] for r in stack.store.ledger.for_job(job_id)] == ["charge"]
        assert f"[VIDEO JOB {job_id}] Submitted to fal as {submission.request_id}" in \
            caplog.text
        # A second delivery of the same webhook is a harmless duplicate.
        body = b'{"request_id": "%s", "status": "OK", "payload": null}' % \
            submission.request_id.encode()
        again = stack.app.test_client().post(
            f"/api/webhooks/fal?jobId={job_id}", data=body,
            headers=stack.sandbox.signed_webhook_headers(submission.request_id, body))
        assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    finally:
        server.shutdown()


def test_webhook_job_hint_never_adopts_a_job_fal_has_not_accepted(
        make_stack: Callable[..., Stack]) -> None:
    """The URL's job id is trusted only for a job in `submitting`: a queued job (never
    sent) or one already bound to another request is left alone."""
    from app.ids import new_id
    from app.store.jobs import NewJob

    stack = make_stack(sweep_every=None)
    user = stack.user()
    job_id = new_id()
    stack.store.jobs.create_with_charge(NewJob(
        job_id=job_id, user_id=user.id, email=user.email, template_id="night-life-roller",
        model="fal-ai/x", prompt="p", negative_prompt=None, start_key="k", duration="5",
        variables={}, credits=COST, timeout_seconds=600))
    body = b'{"request_id": "forged-by-replay", "status": "OK", "payload": null}'
    resp = stack.app.test_client().post(
        f"/api/webhooks/fal?jobId={job_id}", data=body,
        headers=stack.sandbox.signed_webhook_headers("forged-by-replay", body))
    assert resp.status_code == 200 and resp.get_json()["status"] == "duplicate"
    job = stack.store.jobs.get(job_id)
    assert job["status"] == "pending" and not job.get("fal_request_id")
