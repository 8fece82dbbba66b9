"""Outbound webhooks (Standard Webhooks): endpoints and secrets, per-job targets checked
before the charge, and real deliveries to a receiver on 127.0.0.1 that verifies every one
with the reference library's `Webhook(secret).verify`."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from app import create_app
from app.config import Settings
from app.store import DatabaseConfig, Store
from app.webhook_secrets import SecretBox
from tests import test_worker_e2e as e2e
from tests.conftest import UserSession
from tests.support.receiver import Receiver
from tests.test_worker_e2e import DESIGN, Stack

# The end-to-end stack (real worker, sweeper, sandbox provider) and its fixtures.
make_stack = e2e.make_stack
sandbox = e2e.sandbox

CLI = shutil.which("videojobs") or str(Path(sys.executable).parent / "videojobs")
PUBLIC_URL = "https://93.184.215.14/hooks/videojobs"  # an IP literal: no DNS lookup
SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9+/]+={0,2}$")
# Short retry schedule for tests (the default spans ~27.6 h).
FAST = {"allow_private_webhooks": True, "webhook_retry_delays": (0.5, 0.5, 0.5)}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def secret_bytes(secret: str) -> bytes:
    assert SECRET_RE.match(secret), secret
    return base64.b64decode(secret.removeprefix("whsec_"))


# ---- endpoints and secrets (API) ---------------------------------------------------------

def test_put_get_rotate_delete_endpoint(make_user: Callable[..., UserSession], store: Store
                                        ) -> None:
    user = make_user()
    assert user.client.get("/api/webhook").status_code == 404
    assert user.client.get("/api/webhook").get_json() == {"error": "Webhook not set"}
    assert user.client.post("/api/webhook/rotate").get_json() == {"error": "Webhook not set"}

    first = user.client.put("/api/webhook", json={"url": PUBLIC_URL})
    assert first.status_code == 200
    secret = first.get_json()["secret"]
    assert first.get_json()["url"] == PUBLIC_URL and len(secret_bytes(secret)) >= 24
    assert user.client.get("/api/webhook").get_json() == {"url": PUBLIC_URL}  # no secret

    again = user.client.put("/api/webhook", json={"url": PUBLIC_URL + "/v2"}).get_json()
    assert again == {"url": PUBLIC_URL + "/v2", "secret": secret}  # shown again, kept

    rotated = user.client.post("/api/webhook/rotate").get_json()
    assert rotated["url"] == PUBLIC_URL + "/v2" and rotated["secret"] != secret
    assert len(secret_bytes(rotated["secret"])) >= 24

    # A dump of the store holds no usable secret: sealed, and only SECRET_KEY opens it.
    row = store.webhooks.get_endpoint(user.id)
    assert row is not None and rotated["secret"] not in str(row)
    assert secret_bytes(rotated["secret"]).hex() not in str(row)
    assert SecretBox("test-secret-key").open(row["secret_sealed"], user.id) == rotated["secret"]
    with pytest.raises(Exception, match="cannot be read"):
        SecretBox("another-key").open(row["secret_sealed"], user.id)
    with pytest.raises(Exception, match="cannot be read"):
        SecretBox("test-secret-key").open(row["secret_sealed"], "someone-else")

    assert user.client.delete("/api/webhook").status_code == 204
    assert user.client.get("/api/webhook").status_code == 404
    assert user.client.delete("/api/webhook").status_code == 204


@pytest.mark.parametrize("url, message", [
    ("ftp://example.com/x", "must be http or https"),
    ("http://127.0.0.1:9/hook", "not a public address"),
    ("http://localhost:9/hook", "not a public address"),
    ("http://169.254.169.254/latest", "not a public address"),
    ("http://10.1.2.3/x", "not a public address"),
    ("http://[::1]/x", "not a public address"),
    ("https://user:pw@93.184.215.14/x", "must not carry credentials"),
    ("https://93.184.215.14/" + "a" * 2048, "2048"),
    ("not a url", "must be http or https"),
])
def test_bad_endpoint_url_is_refused(make_user: Callable[..., UserSession], url: str,
                                     message: str) -> None:
    user = make_user()
    resp = user.client.put("/api/webhook", json={"url": url})
    assert resp.status_code == 400, resp.get_json()
    body = resp.get_json()
    assert body["error"] == "VALIDATION_ERROR"
    assert message.lower() in " ".join(body["details"]["url"]).lower()
    assert user.client.get("/api/webhook").status_code == 404


def test_endpoint_needs_login_and_json(client: Any, make_user: Callable[..., UserSession]
                                       ) -> None:
    assert client.put("/api/webhook", json={"url": PUBLIC_URL}).status_code == 401
    assert client.get("/api/webhook").status_code == 401
    assert client.delete("/api/webhook").status_code == 401
    assert client.post("/api/webhook/rotate").status_code == 401
    user = make_user()
    assert user.client.put("/api/webhook", data="url=x").status_code == 415
    assert user.client.put("/api/webhook", json={"url": PUBLIC_URL, "x": 1}).status_code == 400
    cross = user.client.put("/api/webhook", json={"url": PUBLIC_URL},
                            headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403


# ---- per-job target, checked before the charge --------------------------------------------

@pytest.mark.parametrize("extra, field, message", [
    ({"webhookUrl": "http://127.0.0.1:9/hook"}, "webhookUrl", "not a public address"),
    ({"webhookUrl": "http://localhost/hook"}, "webhookUrl", "not a public address"),
    ({"webhookUrl": "gopher://example.com/"}, "webhookUrl", "http or https"),
    ({"webhookUrl": "https://93.184.215.14/" + "a" * 2048}, "webhookUrl", "2048"),
    ({"webhookUrl": 5}, "webhookUrl", "string"),
    ({"webhookEvents": ["done"]}, "webhookEvents", "one of"),
    ({"webhookEvents": "completed"}, "webhookEvents", "list"),
])
def test_bad_job_webhook_is_400_and_charges_nothing(
        make_user: Callable[..., UserSession], store: Store, extra: dict[str, Any], field: str,
        message: str) -> None:
    user = make_user(credits=1000)
    assert user.client.put("/api/webhook", json={"url": PUBLIC_URL}).status_code == 200
    resp = user.start(user.upload(), **extra)
    assert resp.status_code == 400, resp.get_json()
    body = resp.get_json()
    assert body["error"] == "VALIDATION_ERROR"
    messages = [m for name, ms in body["details"].items() if name.startswith(field) for m in ms]
    assert message.lower() in " ".join(map(str, messages)).lower(), body
    assert user.credits() == 1000
    assert store.jobs.count() == 0


def test_job_webhook_url_needs_a_secret(make_user: Callable[..., UserSession], store: Store
                                        ) -> None:
    user = make_user(credits=1000)
    resp = user.start(user.upload(), webhookUrl=PUBLIC_URL)
    assert resp.status_code == 400
    assert "secret" in resp.get_json()["details"]["webhookUrl"][0]
    assert user.credits() == 1000 and store.jobs.count() == 0


def test_job_webhook_is_part_of_the_idempotency_body(make_user: Callable[..., UserSession]
                                                     ) -> None:
    user = make_user(credits=5000)
    user.client.put("/api/webhook", json={"url": PUBLIC_URL})
    key = user.upload()
    headers = {"Idempotency-Key": "k-1"}
    first = user.start(key, headers=headers, webhookUrl=PUBLIC_URL + "/a")
    assert first.status_code == 200
    same = user.start(key, headers=headers, webhookUrl=PUBLIC_URL + "/a")
    assert same.get_json()["jobId"] == first.get_json()["jobId"]
    other = user.start(key, headers=headers, webhookUrl=PUBLIC_URL + "/b")
    assert other.status_code == 409
    events = user.start(key, headers=headers, webhookUrl=PUBLIC_URL + "/a",
                        webhookEvents=["failed"])
    assert events.status_code == 409
    assert user.credits() == 4500


def test_openapi_documents_webhooks(client: Any) -> None:
    doc = client.get("/api/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    video = next(s for name, s in schemas.items() if name.startswith("VideoRequest"))
    assert {"webhookUrl", "webhookEvents"} <= set(video["properties"])
    assert {"put", "get", "delete"} <= set(doc["paths"]["/api/webhook"])
    assert "post" in doc["paths"]["/api/webhook/rotate"]
    assert "get" in doc["paths"]["/api/templates/video/webhooks"]


def test_other_users_deliveries_are_404(make_user: Callable[..., UserSession]) -> None:
    owner, other = make_user(), make_user()
    job_id = owner.start(owner.upload()).get_json()["jobId"]
    mine = owner.client.get(f"/api/templates/video/webhooks?jobId={job_id}")
    assert mine.status_code == 200 and mine.get_json() == {"deliveries": []}
    theirs = other.client.get(f"/api/templates/video/webhooks?jobId={job_id}")
    assert theirs.status_code == 404 and theirs.get_json() == {"error": "Job not found"}
    missing = owner.client.get("/api/templates/video/webhooks?jobId=" + "0" * 32)
    assert missing.status_code == 404
    assert owner.client.get("/api/templates/video/webhooks").status_code == 400


# ---- the outbox: exactly one row per event -------------------------------------------------

def test_racing_failures_write_one_delivery(make_user: Callable[..., UserSession],
                                            store: Store) -> None:
    """Webhook and sweeper racing to fail a job: one status change, one event row."""
    user = make_user(credits=1000)
    user.client.put("/api/webhook", json={"url": PUBLIC_URL})
    job_id = user.start(user.upload()).get_json()["jobId"]
    told: list[str] = []
    store.jobs.delivery_listeners[:] = [told.append]
    results: list[Any] = []

    def fail() -> None:
        results.append(store.jobs.fail_and_refund(job_id, "Provider error"))

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    rows = store.webhooks.deliveries_for_job(job_id)
    assert [(r["id"], r["type"], r["state"]) for r in rows] == [
        (f"{job_id}_failed", "video.failed", "pending")]
    assert told == [f"{job_id}_failed"]
    assert rows[0]["job"]["error"] == "Provider error" and rows[0]["job"]["refunded"] is True
    assert user.credits() == 1000


def test_racing_transitions_write_one_processing_event(
        make_user: Callable[..., UserSession], store: Store) -> None:
    """Two writers moving one job to processing: one wins, one row, one hint."""
    user = make_user(credits=1000)
    user.client.put("/api/webhook", json={"url": PUBLIC_URL})
    job_id = user.start(user.upload(), webhookEvents=["processing"]).get_json()["jobId"]
    told: list[str] = []
    store.jobs.delivery_listeners[:] = [told.append]
    results: list[Any] = []

    def move() -> None:
        results.append(store.jobs.update_if(
            job_id, ("pending",), {"status": "processing", "phase": "in_queue"},
            event="processing"))

    threads = [threading.Thread(target=move) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    rows = store.webhooks.deliveries_for_job(job_id)
    assert [(r["type"], r["job"]["status"]) for r in rows] == [("video.processing",
                                                                "processing")]
    assert told == [f"{job_id}_processing"]
    # A later failure is not in this job's filter: no second row.
    store.jobs.fail_and_refund(job_id, "x")
    assert len(store.webhooks.deliveries_for_job(job_id)) == 1


def test_no_endpoint_no_event_filter_no_row(make_user: Callable[..., UserSession],
                                            store: Store) -> None:
    user = make_user(credits=2000)
    plain = user.start(user.upload()).get_json()["jobId"]
    store.jobs.fail_and_refund(plain, "x")
    user.client.put("/api/webhook", json={"url": PUBLIC_URL})
    only_completed = user.start(user.upload(), webhookEvents=["completed"]).get_json()["jobId"]
    store.jobs.fail_and_refund(only_completed, "x")
    assert store.webhooks.deliveries_for_job(plain) == []
    assert store.webhooks.deliveries_for_job(only_completed) == []


# ---- real deliveries -----------------------------------------------------------------------

def _hooked(stack: Stack, receiver: Receiver, path: str = "/hook",
            credits: int = 5000) -> tuple[UserSession, str]:
    user = stack.user(credits)
    resp = user.client.put("/api/webhook", json={"url": receiver.url(path)})
    assert resp.status_code == 200, resp.get_json()
    return user, resp.get_json()["secret"]


def _deliveries(user: UserSession, job_id: str) -> list[dict[str, Any]]:
    resp = user.client.get(f"/api/templates/video/webhooks?jobId={job_id}")
    assert resp.status_code == 200
    return list(resp.get_json()["deliveries"])


def _settled(user: UserSession, job_id: str, count: int = 1, timeout: float = 60
             ) -> list[dict[str, Any]]:
    """The job's deliveries once `count` of them have stopped being pending."""
    deadline = time.time() + timeout
    found: list[dict[str, Any]] = []
    while time.time() < deadline:
        found = _deliveries(user, job_id)
        if len(found) >= count and all(d["state"] != "pending" for d in found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"deliveries did not settle: {found}")


def test_completed_event_default_filter(make_stack: Callable[..., Stack], receiver: Receiver
                                        ) -> None:
    stack = make_stack(**FAST)
    user, secret = _hooked(stack, receiver)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    assert stack.wait_terminal(job_id)["status"] == "completed"
    (got,) = receiver.wait_for("/hook", 1)
    payload = got.verify(secret)
    assert payload["type"] == "video.completed"
    assert payload["timestamp"].endswith("Z")
    data = payload["data"]
    assert data["jobId"] == job_id and data["status"] == "completed"
    assert data["key"].startswith(f"users/{user.id}/library/") and data["credits"] == 500
    assert data["url"]
    assert got.headers["webhook-id"] == f"{job_id}_completed"
    assert got.headers["content-type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        got.verify("whsec_" + base64.b64encode(b"x" * 32).decode())
    (record,) = _settled(user, job_id)
    assert record["type"] == "video.completed" and record["state"] == "delivered"
    assert record["attempts"] == 1 and record["lastStatus"] == 200
    assert record["url"] == receiver.url("/hook") and record["lastAttemptAt"]
    time.sleep(1.5)  # more sweeps: nothing more is sent (no processing event by default)
    assert len(receiver.at("/hook")) == 1


def test_processing_and_failed_events_to_a_job_url(make_stack: Callable[..., Stack],
                                                   receiver: Receiver) -> None:
    stack = make_stack(**FAST)
    user, secret = _hooked(stack, receiver, "/account")
    stack.sandbox.queue_scenario("model_error")
    resp = user.start(user.upload(DESIGN), webhookUrl=receiver.url("/job"),
                      webhookEvents=["processing", "failed"])
    assert resp.status_code == 200, resp.get_json()
    job_id = resp.get_json()["jobId"]
    assert stack.wait_terminal(job_id)["status"] == "failed"
    got = receiver.wait_for("/job", 2)
    payloads = [g.verify(secret) for g in got]
    assert [p["type"] for p in payloads] == ["video.processing", "video.failed"]
    assert payloads[0]["data"]["status"] == "processing"
    assert payloads[0]["data"]["message"] == "Generating video..."
    assert payloads[1]["data"]["status"] == "failed"
    assert payloads[1]["data"]["refunded"] is True and payloads[1]["data"]["error"]
    assert [g.headers["webhook-id"] for g in got] == [f"{job_id}_processing",
                                                      f"{job_id}_failed"]
    records = _settled(user, job_id, 2)
    assert {r["state"] for r in records} == {"delivered"}
    assert receiver.at("/account") == []


def test_cancel_sends_failed_event(make_stack: Callable[..., Stack], receiver: Receiver
                                   ) -> None:
    stack = make_stack(**FAST)
    user, secret = _hooked(stack, receiver)
    stack.sandbox.queue_scenario("never_finish")
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    assert user.client.post("/api/templates/video/cancel",
                            json={"jobId": job_id}).status_code == 200
    (got,) = receiver.wait_for("/hook", 1)
    data = got.verify(secret)["data"]
    assert data["status"] == "failed" and data["error"] == "Cancelled"


def test_500_twice_then_200_is_three_attempts_one_id(make_stack: Callable[..., Stack],
                                                     receiver: Receiver) -> None:
    stack = make_stack(**FAST)
    user, secret = _hooked(stack, receiver)
    receiver.script("/hook", 500, 500, 200)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    got = receiver.wait_for("/hook", 3)
    (record,) = _settled(user, job_id)
    assert record["state"] == "delivered" and record["attempts"] == 3
    assert record["lastStatus"] == 200
    assert len(receiver.at("/hook")) == 3
    assert {g.headers["webhook-id"] for g in got} == {f"{job_id}_completed"}
    for g in got:
        assert g.verify(secret)["type"] == "video.completed"


def test_receiver_that_times_out_is_retried(make_stack: Callable[..., Stack],
                                            receiver: Receiver) -> None:
    stack = make_stack(**FAST)
    user, secret = _hooked(stack, receiver)
    receiver.script("/hook", ("hang", 15), 200)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    got = receiver.wait_for("/hook", 2, timeout=90)
    (record,) = _settled(user, job_id)
    assert record["state"] == "delivered" and record["attempts"] == 2
    assert got[1].at - got[0].at >= 9.5  # the first attempt waited its 10 s, no more
    assert got[1].at - got[0].at < 25
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    got[1].verify(secret)


def test_redirect_is_not_followed(make_stack: Callable[..., Stack], receiver: Receiver
                                  ) -> None:
    stack = make_stack(**FAST)
    user, _secret = _hooked(stack, receiver)
    receiver.script("/hook", *[("redirect", receiver.url("/elsewhere"))] * 10)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    (record,) = _settled(user, job_id)
    assert record["state"] == "failed" and record["attempts"] == 4  # 1 + 3 retries
    assert record["lastStatus"] == 302 and "not followed" in record["lastError"]
    assert record["nextAttemptAt"] is None
    assert receiver.at("/elsewhere") == []
    job = stack.store.jobs.get(job_id)
    assert job is not None and job["status"] == "completed"  # its job is untouched


def test_private_address_refused_at_delivery(make_stack: Callable[..., Stack],
                                             receiver: Receiver) -> None:
    """Allowed when set, refused when sent: the guard runs before every attempt."""
    stack = make_stack(**FAST)
    user, _secret = _hooked(stack, receiver)
    stack.ctx.settings = stack.ctx.settings.replace(allow_private_webhooks=False)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    (record,) = _settled(user, job_id)
    assert record["state"] == "failed" and record["lastStatus"] is None
    assert "not a public address" in record["lastError"]
    assert receiver.received == []


def test_rotation_applies_to_retries(make_stack: Callable[..., Stack], receiver: Receiver
                                     ) -> None:
    stack = make_stack(allow_private_webhooks=True, webhook_retry_delays=(3.0,))
    user, old = _hooked(stack, receiver)
    receiver.script("/hook", 500, 200)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    receiver.wait_for("/hook", 1)
    new = user.client.post("/api/webhook/rotate").get_json()["secret"]
    got = receiver.wait_for("/hook", 2)
    got[0].verify(old)
    assert got[1].verify(new)["data"]["jobId"] == job_id
    with pytest.raises(WebhookVerificationError):
        got[1].verify(old)
    assert _settled(user, job_id)[0]["state"] == "delivered"


def test_deleted_endpoint_gives_up(make_stack: Callable[..., Stack], receiver: Receiver
                                   ) -> None:
    stack = make_stack(allow_private_webhooks=True, webhook_retry_delays=(2.0,))
    user, _secret = _hooked(stack, receiver)
    receiver.script("/hook", 500)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    receiver.wait_for("/hook", 1)
    assert user.client.delete("/api/webhook").status_code == 204
    (record,) = _settled(user, job_id)
    assert record["state"] == "failed" and record["lastError"] == "Webhook not set"
    assert len(receiver.at("/hook")) == 1


def test_attempts_are_logged_without_the_secret(make_stack: Callable[..., Stack],
                                                receiver: Receiver, caplog: Any) -> None:
    stack = make_stack(**FAST)
    caplog.set_level("INFO")
    user, secret = _hooked(stack, receiver)
    receiver.script("/hook", 503, 200)
    job_id = user.start(user.upload(DESIGN)).get_json()["jobId"]
    receiver.wait_for("/hook", 2)
    _settled(user, job_id)
    lines = [r.getMessage() for r in caplog.records if "[WEBHOOK" in r.getMessage()]
    assert any("attempt 1" in m and "retry (Answered 503)" in m for m in lines), lines
    assert any("attempt 2" in m and "delivered" in m for m in lines), lines
    raw = secret.removeprefix("whsec_")
    signature = receiver.at("/hook")[0].headers["webhook-signature"]
    for record in caplog.records:
        text = record.getMessage() + str(record.__dict__)
        assert raw not in text and signature not in text


def test_web_only_app_enqueues_on_its_own_writes(settings: Settings, store: Store,
                                                 templates_loaded: None, redis_client: Any
                                                 ) -> None:
    """A cancel in the API writes the event; the API process sends the hint itself."""
    app = create_app(settings, store=store)
    assert store.jobs.delivery_listeners, "the web app must enqueue new deliveries"
    assert app.extensions["videojobs"].secret_box is not None


# ---- the command line ----------------------------------------------------------------------

def _cli(data_dir: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SURREALDB_", "STORAGE_", "ALLOW_", "SECRET_KEY"))}
    env.update(env_extra)
    return subprocess.run([CLI, *args, "--data-dir", str(data_dir)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_cli_webhooks_set(tmp_path: Path) -> None:
    made = _cli(tmp_path, "users", "create", "ana@example.com", "--password", "s3cret-pass")
    assert made.returncode == 0, made.stderr
    ok = _cli(tmp_path, "webhooks", "set", "Ana@Example.com", PUBLIC_URL)
    assert ok.returncode == 0, ok.stderr
    secret = ok.stdout.strip()
    assert ok.stdout == secret + "\n" and len(secret_bytes(secret)) >= 24
    again = _cli(tmp_path, "webhooks", "set", "ana@example.com", PUBLIC_URL + "/2")
    assert again.stdout.strip() == secret  # the URL changes, the secret is kept

    private = _cli(tmp_path, "webhooks", "set", "ana@example.com", "http://127.0.0.1:9/x")
    assert private.returncode == 1 and private.stdout == ""
    assert len(private.stderr.strip().splitlines()) == 1
    assert "not a public address" in private.stderr
    allowed = _cli(tmp_path, "webhooks", "set", "ana@example.com", "http://127.0.0.1:9/x",
                   ALLOW_PRIVATE_WEBHOOKS="true")
    assert allowed.returncode == 0 and allowed.stdout.strip() == secret
    nobody = _cli(tmp_path, "webhooks", "set", "bob@example.com", PUBLIC_URL)
    assert nobody.returncode == 1 and "no user with email bob@example.com" in nobody.stderr
    assert len(nobody.stderr.strip().splitlines()) == 1

    # The secret is sealed with the data directory's key, which `videojobs up` uses too.
    store = Store.open(DatabaseConfig(f"surrealkv://{tmp_path / 'db'}"))
    try:
        user = store.users.get_by_email("ana@example.com")
        assert user is not None
        row = store.webhooks.get_endpoint(user["id"])
        assert row is not None and row["url"] == "http://127.0.0.1:9/x"
        key = (tmp_path / "secret_key").read_text().strip()
        assert SecretBox(key).open(row["secret_sealed"], user["id"]) == secret
    finally:
        store.close()


# ---- kill -9 between the status change and the delivery -------------------------------------

def test_kill_9_between_status_change_and_delivery(tmp_path: Path, up_env: dict[str, str],
                                                   receiver: Receiver) -> None:
    """The worker dies with the event's first attempt in flight (the receiver holds it);
    after a restart the sweeper finds the outbox row and the event is delivered."""
    from tests.test_oneprocess import Up, wait_status

    env = {**up_env, "ALLOW_PRIVATE_WEBHOOKS": "true", "WEBHOOK_RETRY_DELAYS": "1,1,1"}
    receiver.script("/hook", ("hang", 120), 200)
    up = Up(tmp_path / "data", env)
    try:
        s = up.session()
        hook = s.put(up.base + "/api/webhook", json={"url": receiver.url("/hook")})
        assert hook.status_code == 200, hook.text
        secret = hook.json()["secret"]
        key = s.get(up.base + "/api/library").json()["items"][0]["key"]
        job_id = s.post(up.base + "/api/templates/video", json={
            "templateSlug": "night-life-roller", "startKey": key}).json()["jobId"]
        assert wait_status(s, up.base, job_id, ("completed", "failed"))["status"] == "completed"
        receiver.wait_for("/hook", 1)  # the attempt is in flight, unanswered
        up.stop(signal.SIGKILL)
    finally:
        if up.proc.poll() is None:
            up.stop(signal.SIGKILL)
    again = Up(tmp_path / "data", env)
    try:
        got = receiver.wait_for("/hook", 2, timeout=120)
        assert got[1].verify(secret)["data"]["jobId"] == job_id
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"] == \
            f"{job_id}_completed"
        s = again.session()
        deadline = time.time() + 30
        while time.time() < deadline:
            (record,) = s.get(again.base + "/api/templates/video/webhooks",
                              params={"jobId": job_id}).json()["deliveries"]
            if record["state"] == "delivered":
                break
            time.sleep(0.2)
        assert record["state"] == "delivered", record
    finally:
        again.stop()


def test_readme_receiver_example_accepts_our_deliveries(monkeypatch: Any,
                                                        capsys: Any) -> None:
    """The README's receiver, run as written, accepts what we sign and refuses forgeries."""
    from workers.webhook_delivery import sign

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("A receiver in a few lines of Python", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    monkeypatch.setenv("VIDEOJOBS_WEBHOOK_SECRET", secret)
    scope: dict[str, Any] = {"__name__": "readme_receiver"}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    client = scope["app"].test_client()
    payload = '{"type":"video.completed","timestamp":"2026-01-01T00:00:00Z",' \
              '"data":{"jobId":"j1","status":"completed","url":"https://x/v.mp4"}}'
    headers = {**sign(secret, "j1_completed", payload), "Content-Type": "application/json"}
    assert client.post("/hooks/videojobs", data=payload, headers=headers).status_code == 204
    assert client.post("/hooks/videojobs", data=payload, headers=headers).status_code == 204
    assert capsys.readouterr().out == "video.completed j1 https://x/v.mp4\n"  # once
    forged = {**headers, "webhook-signature": sign("whsec_" + base64.b64encode(
        b"z" * 32).decode(), "j1_completed", payload)["webhook-signature"]}
    assert client.post("/hooks/videojobs", data=payload, headers=forged).status_code == 400
