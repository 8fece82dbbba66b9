"""The sandbox fal provider over real loopback HTTP: protocol, rendering, webhooks, faults."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox import SandboxProvider
from sandbox.render import make_png, probe_video

KLING = "fal-ai/kling-video/v2.1/standard/image-to-video"
AUTH = {"Authorization": "Key sandbox-test:secret"}
T = 5.0  # client timeout for every call
PNG = make_png(400, 300)
DATA_URI = "data:image/png;base64," + base64.b64encode(make_png(160, 120)).decode()


# ------------------------------------------------------------------ local helper servers

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """A ThreadingHTTPServer on a free loopback port, run from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _ImageHandler(BaseHTTPRequestHandler):
    """Serves /start.png (a real PNG), /garbage.png (not an image), 404 otherwise."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        bodies = {"/start.png": PNG, "/garbage.png": b"this is not a png" * 10}
        body = bodies.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class Receiver:
    """Collects webhook POSTs; answers the queued status codes first, then 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.codes: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.calls.append((dict(self.headers.items()), body))
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = _Server(Handler)
        self.url = f"{self.server.url}/hooks/job-123"

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.calls)


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    server = _Server(_ImageHandler)
    yield server.url
    server.close()


@pytest.fixture(scope="module")
def _rendering() -> Iterator[SandboxProvider]:
    with SandboxProvider(queue_seconds=0.3, run_seconds=0.5, render=True,
                         webhook_backoff=0.05) as provider:
        yield provider


@pytest.fixture(scope="module")
def _fast() -> Iterator[SandboxProvider]:
    with SandboxProvider(queue_seconds=0.05, run_seconds=0.15, render=False,
                         webhook_backoff=0.05, submit_timeout_seconds=1.2,
                         slow_status_seconds=0.8, huge_file_bytes=700 * 1024 * 1024) as provider:
        yield provider


@pytest.fixture
def sandbox(_rendering: SandboxProvider) -> SandboxProvider:
    """The rendering provider (real fetch + ffmpeg), reset for this test."""
    _rendering.reset()
    return _rendering


@pytest.fixture
def fast(_fast: SandboxProvider) -> SandboxProvider:
    """The render=False provider with short fault delays, reset for this test."""
    _fast.reset()
    return _fast


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.server.close()


# ------------------------------------------------------------------ client helpers

def submit(provider: SandboxProvider, prompt: str = "A slow push-in",
           image_url: str = DATA_URI, duration: Any = "5", *, endpoint: str = KLING,
           webhook: str | None = None, timeout: float = T, **extra: Any) -> requests.Response:
    params = {"fal_webhook": webhook} if webhook else None
    body = {"prompt": prompt, "image_url": image_url, "duration": duration, **extra}
    return requests.post(f"{provider.queue_url}/{endpoint}", json=body, params=params,
                         headers=AUTH, timeout=timeout)


def accepted(provider: SandboxProvider, prompt: str = "A slow push-in", **kwargs: Any
             ) -> dict[str, Any]:
    response = submit(provider, prompt, **kwargs)
    assert response.status_code == 200, response.text
    return dict(response.json())


def poll(status_url: str, timeout: float = 10.0) -> list[requests.Response]:
    """Poll until a 200 (or timeout); returns every response seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = requests.get(status_url, params={"logs": 1}, headers=AUTH, timeout=T)
        seen.append(response)
        if response.status_code != 202:
            return seen
        time.sleep(0.04)
    raise AssertionError(f"not finished in {timeout}s: {seen[-1].json()}")


def finished(job: dict[str, Any]) -> dict[str, Any]:
    return dict(poll(job["status_url"])[-1].json())


def verify(jwks: dict[str, Any], headers: dict[str, str], body: bytes) -> bool:
    """Check a webhook signature against a JWKS, the way the service must."""
    message = "\n".join([headers["X-Fal-Webhook-Request-Id"], headers["X-Fal-Webhook-User-Id"],
                         headers["X-Fal-Webhook-Timestamp"],
                         hashlib.sha256(body).hexdigest()]).encode()
    for key in jwks["keys"]:
        assert (key["kty"], key["crv"]) == ("OKP", "Ed25519")
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(
                bytes.fromhex(headers["X-Fal-Webhook-Signature"]), message)
            return True
        except InvalidSignature:
            continue
    return False


# ------------------------------------------------------------------ protocol, rendering

def test_submit_status_result_download_renders_a_real_mp4(
        sandbox: SandboxProvider, images: str, tmp_path: Path) -> None:
    job = accepted(sandbox, image_url=f"{images}/start.png", duration="5")
    rid = job["request_id"]
    base = f"{sandbox.base_url}/fal-ai/kling-video/requests/{rid}"  # owner/app only
    assert job == {"status": "IN_QUEUE", "request_id": rid, "response_url": base,
                   "status_url": f"{base}/status", "cancel_url": f"{base}/cancel",
                   "logs": None, "metrics": {}, "queue_position": 0}

    seen = poll(job["status_url"])
    statuses = [r.json()["status"] for r in seen]
    first_progress = statuses.index("IN_PROGRESS")
    assert statuses[0] == "IN_QUEUE" and statuses[-1] == "COMPLETED"
    assert set(statuses[:first_progress]) == {"IN_QUEUE"}
    assert set(statuses[first_progress:-1]) == {"IN_PROGRESS"}
    assert all(r.status_code == 202 for r in seen[:-1]) and seen[-1].status_code == 200
    assert seen[0].json()["queue_position"] == 0
    progress = seen[first_progress].json()
    assert progress["logs"][0]["message"].startswith("Generating")
    done = seen[-1].json()
    assert done["response_url"] == base and "error" not in done
    assert done["metrics"]["inference_time"] >= 0.5

    result = requests.get(job["response_url"], headers=AUTH, timeout=T)
    assert result.status_code == 200
    video = result.json()["video"]
    assert video["url"] == f"{sandbox.base_url}/files/{rid}/output.mp4"
    assert (video["content_type"], video["file_name"]) == ("video/mp4", "output.mp4")

    download = requests.get(video["url"], timeout=T)
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "video/mp4"
    assert int(download.headers["Content-Length"]) == len(download.content) == video["file_size"]
    path = tmp_path / "out.mp4"
    path.write_bytes(download.content)
    info = probe_video(path)
    assert info is not None and info.codec == "h264"
    assert abs(info.duration - 5.0) <= 0.5
    assert info.width == 320 and info.height == 240  # 4:3 start image, 320 wide

    assert [f["ok"] for f in sandbox.image_fetches()] == [True]
    assert sandbox.status_call_count(rid) == len(seen)
    assert sandbox.downloads()[0]["mode"] == "full"


def test_data_uri_image_and_ten_seconds(sandbox: SandboxProvider, tmp_path: Path) -> None:
    job = accepted(sandbox, image_url=DATA_URI, duration="10")
    assert finished(job)["status"] == "COMPLETED"
    video = requests.get(job["response_url"], headers=AUTH, timeout=T).json()["video"]
    path = tmp_path / "ten.mp4"
    path.write_bytes(requests.get(video["url"], timeout=T).content)
    info = probe_video(path)
    assert info is not None and info.codec == "h264" and abs(info.duration - 10.0) <= 0.5


@pytest.mark.parametrize(("image", "error_type"), [("/missing.png", "file_download_error"),
                                                   ("/garbage.png", "image_load_error")])
def test_unusable_image_is_a_model_error(sandbox: SandboxProvider, images: str, image: str,
                                         error_type: str) -> None:
    job = accepted(sandbox, image_url=f"{images}{image}")
    done = finished(job)
    assert done["status"] == "COMPLETED" and done["error_type"] == error_type
    assert done["error"].startswith("Could not fetch image_url")
    result = requests.get(job["response_url"], headers=AUTH, timeout=T)
    assert result.status_code == 422
    [detail] = result.json()["detail"]
    assert detail["loc"] == ["body", "image_url"] and detail["type"] == error_type


def test_webhook_is_signed_with_a_key_from_the_jwks(sandbox: SandboxProvider,
                                                    receiver: Receiver) -> None:
    job = accepted(sandbox, webhook=receiver.url)
    [(headers, body)] = receiver.wait(1)
    jwks = requests.get(sandbox.jwks_url, timeout=T).json()
    assert verify(jwks, headers, body)
    assert headers["X-Fal-Webhook-Request-Id"] == job["request_id"]
    assert headers["X-Fal-Webhook-User-Id"] == "sandbox-user"
    assert abs(int(headers["X-Fal-Webhook-Timestamp"]) - time.time()) < 30
    payload = json.loads(body)
    assert payload["status"] == "OK" and payload["error"] is None
    assert payload["request_id"] == payload["gateway_request_id"] == job["request_id"]
    result = requests.get(job["response_url"], headers=AUTH, timeout=T).json()
    assert payload["payload"] == result
    # Tampering with the body breaks the signature.
    assert not verify(jwks, headers, body.replace(b'"OK"', b'"ERROR"'))
    assert sandbox.webhook_deliveries()[0]["status_code"] == 200


def test_forged_headers_and_key_rotation(fast: SandboxProvider) -> None:
    body = b'{"request_id": "abc", "status": "OK"}'
    headers = fast.signed_webhook_headers("abc", body, timestamp=1_700_000_000)
    assert headers["X-Fal-Webhook-Timestamp"] == "1700000000"
    assert verify(fast.jwks(), headers, body)
    old_jwks = fast.jwks()
    fast.rotate_key()
    try:
        rotated = fast.signed_webhook_headers("abc", body)
        assert not verify(old_jwks, rotated, body)  # a cached JWKS must be refetched
        assert len(fast.jwks()["keys"]) == 2 and verify(fast.jwks(), rotated, body)
    finally:
        fast.rotate_key(keep_old=False)


def test_webhook_delivery_is_retried_until_2xx(fast: SandboxProvider,
                                               receiver: Receiver) -> None:
    receiver.codes = [500, 503]
    job = accepted(fast, webhook=receiver.url)
    calls = receiver.wait(3)
    assert len(calls) == 3 and len({body for _, body in calls}) == 1
    deliveries = fast.wait_for_webhooks(1)
    codes = [d["status_code"] for d in fast.webhook_deliveries()]
    assert codes == [500, 503, 200] and deliveries[0]["request_id"] == job["request_id"]
    assert [d["attempt"] for d in fast.webhook_deliveries()] == [1, 2, 3]


def test_cancel(fast: SandboxProvider, receiver: Receiver) -> None:
    job = accepted(fast, "[sandbox:never_finish]", webhook=receiver.url)
    cancel = requests.put(job["cancel_url"], headers=AUTH, timeout=T)
    assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    done = finished(job)
    assert (done["error"], done["error_type"]) == ("Cancelled by user", "request_cancelled")
    again = requests.put(job["cancel_url"], headers=AUTH, timeout=T)
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
    result = requests.get(job["response_url"], headers=AUTH, timeout=T)
    assert result.status_code == 499 and result.headers["X-Fal-Error-Type"] == "request_cancelled"
    unknown = requests.put(job["cancel_url"].replace(job["request_id"], "nope"), headers=AUTH,
                           timeout=T)
    assert (unknown.status_code, unknown.json()) == (404, {"status": "NOT_FOUND"})
    [(_, body)] = receiver.wait(1)
    assert json.loads(body)["error"] == "Invalid status code: 499"
    assert [c["outcome"] for c in fast.cancels()] == ["cancelled", "already_completed",
                                                      "not_found"]


def test_authorization_is_required(fast: SandboxProvider) -> None:
    job = accepted(fast)
    url = f"{fast.queue_url}/{KLING}"
    for headers in ({}, {"Authorization": "Bearer x"}, {"Authorization": "Key "}):
        calls = [requests.post(url, json={}, headers=headers, timeout=T),
                 requests.get(job["status_url"], headers=headers, timeout=T),
                 requests.get(job["response_url"], headers=headers, timeout=T),
                 requests.put(job["cancel_url"], headers=headers, timeout=T)]
        for response in calls:
            assert response.status_code == 401 and isinstance(response.json()["detail"], str)
    assert len(fast.submits()) == 1


@pytest.mark.parametrize(("body", "loc", "kind"), [
    ({"prompt": "p", "duration": "5"}, ["body", "image_url"], "missing"),
    ({"prompt": "p", "image_url": "ftp://x/y.png", "duration": "5"}, ["body", "image_url"],
     "value_error"),
    ({"image_url": DATA_URI, "duration": "5"}, ["body", "prompt"], "missing"),
    ({"prompt": "p", "image_url": DATA_URI, "duration": "7"}, ["body", "duration"],
     "literal_error"),
    ({"prompt": "p", "image_url": DATA_URI, "duration": 5}, ["body", "duration"],
     "literal_error"),
    ({"prompt": "p", "image_url": DATA_URI}, ["body", "duration"], "missing"),
    ({"prompt": "[sandbox:no_such_fault]", "image_url": DATA_URI, "duration": "5"},
     ["body", "prompt"], "value_error"),
    (["not", "an", "object"], ["body"], "dict_type"),
])
def test_invalid_input_is_422(fast: SandboxProvider, body: Any, loc: list[str],
                              kind: str) -> None:
    response = requests.post(f"{fast.queue_url}/{KLING}", json=body, headers=AUTH, timeout=T)
    assert response.status_code == 422
    assert {"loc": loc, "type": kind} in [{"loc": d["loc"], "type": d["type"]}
                                          for d in response.json()["detail"]]
    assert fast.submits()[0]["accepted"] is False


def test_other_models_and_unknown_ids(fast: SandboxProvider) -> None:
    veo = submit(fast, duration="8s", endpoint="fal-ai/veo3.1/image-to-video")
    assert veo.status_code == 200
    assert veo.json()["status_url"].startswith(f"{fast.base_url}/fal-ai/veo3.1/requests/")
    generic = submit(fast, duration="3", endpoint="acme/animator")
    assert generic.status_code == 200
    base = f"{fast.queue_url}/fal-ai/kling-video/requests/00000000-0000-0000-0000-000000000000"
    assert requests.get(f"{base}/status", headers=AUTH, timeout=T).status_code == 404
    assert requests.get(base, headers=AUTH, timeout=T).status_code == 404
    assert requests.get(f"{fast.base_url}/files/nope/output.mp4", timeout=T).status_code == 404
    # A real id under another app is unknown there too.
    wrong_app = veo.json()["status_url"].replace("fal-ai/veo3.1", "fal-ai/other")
    assert requests.get(wrong_app, headers=AUTH, timeout=T).status_code == 404


def test_result_before_completion_is_400(fast: SandboxProvider) -> None:
    job = accepted(fast, "[sandbox:never_finish]")
    result = requests.get(job["response_url"], headers=AUTH, timeout=T)
    assert (result.status_code, result.json()) == (400, {"detail": "Request is still in progress"})


def test_queue_positions_count_down(fast: SandboxProvider) -> None:
    fast.queue_seconds = 0.6
    try:
        jobs = [accepted(fast) for _ in range(3)]
        assert [j["queue_position"] for j in jobs] == [0, 1, 2]
        status = requests.get(jobs[2]["status_url"], headers=AUTH, timeout=T).json()
        assert status["status"] == "IN_QUEUE" and status["queue_position"] <= 2
        assert all(finished(j)["status"] == "COMPLETED" for j in jobs)
    finally:
        fast.queue_seconds = 0.05


# ------------------------------------------------------------------ fault scenarios

@pytest.mark.parametrize(("scenario", "code"), [("submit_429", 429), ("submit_500", 500)])
def test_transient_submit_failure_then_retry_succeeds(fast: SandboxProvider, scenario: str,
                                                      code: int) -> None:
    first = submit(fast, f"Push in [sandbox:{scenario}]")
    assert first.status_code == code
    if code == 429:
        assert first.headers["Retry-After"] == "1"
    retry = submit(fast, f"Push in [sandbox:{scenario}]")
    assert retry.status_code == 200
    assert [s["status_code"] for s in fast.submits()] == [code, 200]
    assert fast.observations()["totals"]["jobs"] == 1  # the refused submit created nothing
    assert finished(retry.json())["status"] == "COMPLETED"


def test_queued_scenario_applies_to_the_next_submit(fast: SandboxProvider) -> None:
    fast.queue_scenario("submit_429")
    assert submit(fast).status_code == 429
    assert submit(fast).status_code == 200  # the retry of the same job
    assert submit(fast, "another").status_code == 200  # the queue was used up


def test_submit_403_exhausted_balance(fast: SandboxProvider) -> None:
    for _ in range(2):
        response = submit(fast, "[sandbox:submit_403]")
        assert response.status_code == 403 and "balance" in response.json()["detail"]
    assert fast.observations()["totals"]["jobs"] == 0


def test_submit_timeout_creates_the_job_but_answers_too_late(fast: SandboxProvider) -> None:
    with pytest.raises(requests.ReadTimeout):
        submit(fast, "[sandbox:submit_timeout]", timeout=0.4)
    [entry] = fast.submits()
    assert entry["accepted"] and fast.request_info(entry["request_id"]) is not None
    started = time.monotonic()
    late = submit(fast, "[sandbox:submit_timeout=0.3] other")
    assert late.status_code == 200 and 0.25 < time.monotonic() - started < 3.0


def test_submit_disconnect_creates_the_job_and_drops_the_connection(
        fast: SandboxProvider) -> None:
    with pytest.raises(requests.ConnectionError):
        submit(fast, "[sandbox:submit_disconnect]")
    [entry] = fast.submits()
    assert entry["accepted"] and fast.request_info(entry["request_id"]) is not None


def test_model_error(fast: SandboxProvider, receiver: Receiver) -> None:
    job = accepted(fast, "[sandbox:model_error]", webhook=receiver.url)
    done = finished(job)
    assert done["status"] == "COMPLETED" and done["error_type"] == "content_policy_violation"
    result = requests.get(job["response_url"], headers=AUTH, timeout=T)
    assert result.status_code == 422
    [detail] = result.json()["detail"]
    assert detail["loc"] == ["body"] and detail["type"] == "content_policy_violation"
    [(headers, body)] = receiver.wait(1)
    payload = json.loads(body)
    assert payload["status"] == "ERROR" and payload["error"] == "Invalid status code: 422"
    assert payload["payload"] == result.json() and verify(fast.jwks(), headers, body)


def test_runner_error(fast: SandboxProvider) -> None:
    job = accepted(fast, "[sandbox:runner_error]")
    assert finished(job)["error_type"] == "runner_disconnected"
    result = requests.get(job["response_url"], headers=AUTH, timeout=T)
    assert result.status_code == 503
    assert result.headers["X-Fal-Error-Type"] == "runner_disconnected"


def test_slow_status(fast: SandboxProvider) -> None:
    job = accepted(fast, "[sandbox:slow_status]")
    with pytest.raises(requests.ReadTimeout):
        requests.get(job["status_url"], headers=AUTH, timeout=0.3)
    started = time.monotonic()
    assert requests.get(job["status_url"], headers=AUTH, timeout=T).status_code == 200
    assert time.monotonic() - started >= 0.75
    assert fast.status_call_count(job["request_id"]) == 2


def test_status_404_while_the_job_still_completes(fast: SandboxProvider) -> None:
    job = accepted(fast, "[sandbox:status_404]")
    assert requests.get(job["status_url"], headers=AUTH, timeout=T).status_code == 404
    time.sleep(0.3)
    assert requests.get(job["status_url"], headers=AUTH, timeout=T).status_code == 404
    assert requests.get(job["response_url"], headers=AUTH, timeout=T).status_code == 200


def test_never_finish_stays_in_progress(fast: SandboxProvider) -> None:
    job = accepted(fast, "[sandbox:never_finish]")
    time.sleep(0.5)  # well past queue + run
    status = requests.get(job["status_url"], headers=AUTH, timeout=T)
    assert (status.status_code, status.json()["status"]) == (202, "IN_PROGRESS")


def test_ignore_cancel_still_completes(fast: SandboxProvider) -> None:
    job = accepted(fast, "[sandbox:ignore_cancel]")
    assert requests.put(job["cancel_url"], headers=AUTH, timeout=T).status_code == 202
    assert "error" not in finished(job)
    assert requests.get(job["response_url"], headers=AUTH, timeout=T).status_code == 200
    assert fast.cancels()[0]["outcome"] == "ignored"


def test_result_500_answers_504_request_timeout(fast: SandboxProvider) -> None:
    job = accepted(fast, "[sandbox:result_500]")
    assert "error" not in finished(job)
    result = requests.get(job["response_url"], headers=AUTH, timeout=T)
    assert result.status_code == 504
    assert result.headers["X-Fal-Error-Type"] == "request_timeout"
    assert result.json() == {"detail": "Request timed out", "error_type": "request_timeout"}


def video_url(provider: SandboxProvider, prompt: str) -> tuple[str, dict[str, Any]]:
    job = accepted(provider, prompt)
    finished(job)
    result = requests.get(job["response_url"], headers=AUTH, timeout=T)
    assert result.status_code == 200
    return str(result.json()["video"]["url"]), dict(result.json()["video"])


def test_cut_download_only_the_first_attempt(fast: SandboxProvider, tmp_path: Path) -> None:
    url, video = video_url(fast, "[sandbox:cut_download]")
    received = bytearray()
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        with requests.get(url, stream=True, timeout=T) as first:
            announced = int(first.headers["Content-Length"])
            for chunk in first.iter_content(4096):
                received += chunk
    assert announced == video["file_size"] and 0 < len(received) < announced
    second = requests.get(url, timeout=T)
    assert len(second.content) == int(second.headers["Content-Length"]) == announced
    (tmp_path / "v.mp4").write_bytes(second.content)
    info = probe_video(tmp_path / "v.mp4")
    assert info is not None and info.codec == "h264"
    assert [d["mode"] for d in fast.downloads()] == ["cut", "full"]


def test_wrong_content_type(fast: SandboxProvider) -> None:
    url, _ = video_url(fast, "[sandbox:wrong_content_type]")
    response = requests.get(url, timeout=T)
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.content.startswith(b"<!DOCTYPE html>")


def test_huge_file_announces_and_streams_more_than_600_mb(fast: SandboxProvider) -> None:
    url, video = video_url(fast, "[sandbox:huge_file]")
    assert video["file_size"] > 600 * 1024 * 1024
    with requests.get(url, stream=True, timeout=T) as response:
        assert int(response.headers["Content-Length"]) == video["file_size"]
        assert response.headers["Content-Type"] == "video/mp4"
        read = 0
        for chunk in response.iter_content(256 * 1024):
            read += len(chunk)
            if read >= 4 * 1024 * 1024:
                break
    assert read >= 4 * 1024 * 1024


def test_huge_file_chunked_has_no_content_length(fast: SandboxProvider) -> None:
    url, _ = video_url(fast, "[sandbox:huge_file_chunked]")
    with requests.get(url, stream=True, timeout=T) as response:
        assert "Content-Length" not in response.headers
        assert response.headers["Transfer-Encoding"] == "chunked"
        read = 0
        for chunk in response.iter_content(256 * 1024):
            read += len(chunk)
            if read >= 4 * 1024 * 1024:
                break
    assert read >= 4 * 1024 * 1024


@pytest.mark.parametrize(("marker", "target"), [
    ("[sandbox:private_redirect]", "http://169.254.169.254/latest/meta-data"),
    ("[sandbox:private_redirect=http://10.0.0.1/x.mp4]", "http://10.0.0.1/x.mp4"),
])
def test_private_redirect(fast: SandboxProvider, marker: str, target: str) -> None:
    url, _ = video_url(fast, marker)
    response = requests.get(url, allow_redirects=False, timeout=T)
    assert response.status_code == 302 and response.headers["Location"] == target


def test_benign_redirect_serves_the_file(fast: SandboxProvider) -> None:
    url, video = video_url(fast, "[sandbox:redirect]")
    first = requests.get(url, allow_redirects=False, timeout=T)
    assert first.status_code == 302 and first.headers["Location"].startswith(fast.base_url)
    followed = requests.get(url, timeout=T)
    assert followed.status_code == 200 and len(followed.content) == video["file_size"]


def test_duplicate_webhooks(fast: SandboxProvider, receiver: Receiver) -> None:
    accepted(fast, "[sandbox:duplicate_webhooks]", webhook=receiver.url)
    calls = receiver.wait(2)
    assert len(calls) == 2 and calls[0][1] == calls[1][1]
    assert all(verify(fast.jwks(), headers, body) for headers, body in calls)


def test_webhook_payload_error(fast: SandboxProvider, receiver: Receiver) -> None:
    job = accepted(fast, "[sandbox:webhook_payload_error]", webhook=receiver.url)
    [(_, body)] = receiver.wait(1)
    payload = json.loads(body)
    assert payload["payload"] is None and payload["payload_error"]
    assert requests.get(job["response_url"], headers=AUTH, timeout=T).status_code == 200


def test_no_webhook(fast: SandboxProvider, receiver: Receiver) -> None:
    job = accepted(fast, "[sandbox:no_webhook]", webhook=receiver.url)
    finished(job)
    time.sleep(0.2)
    assert receiver.calls == [] and fast.webhook_deliveries() == []


# ------------------------------------------------------------------ control API, scale, CLI

def test_http_control_api(fast: SandboxProvider) -> None:
    control = f"{fast.base_url}/_sandbox"
    assert requests.get(f"{control}/health", timeout=T).json()["ok"] is True
    scenarios = requests.get(f"{control}/scenarios", timeout=T).json()
    assert "cut_download" in scenarios["available"] and scenarios["queued"] == []
    queued = requests.post(f"{control}/scenarios", json={"name": "model_error", "count": 2},
                           timeout=T)
    assert queued.json() == {"queued": ["model_error", "model_error"]}
    bad = requests.post(f"{control}/scenarios", json={"name": "nope"}, timeout=T)
    assert bad.status_code == 422
    job = accepted(fast)
    finished(job)
    info = requests.get(f"{control}/requests/{job['request_id']}", timeout=T).json()
    assert info["error_type"] == "content_policy_violation" and info["status_calls"] >= 1
    observed = requests.get(f"{control}/observations", timeout=T).json()
    assert observed["queued_scenarios"] == ["model_error"]
    assert observed["submits"][0]["body"]["prompt"] == "A slow push-in"
    assert observed["status_calls"][job["request_id"]] >= 1
    assert requests.delete(f"{control}/scenarios", timeout=T).json() == {"queued": []}
    assert requests.post(f"{control}/reset", timeout=T).json() == {"ok": True}
    assert requests.get(f"{control}/observations", timeout=T).json()["submits"] == []


def test_thousands_of_jobs_without_a_thread_each(fast: SandboxProvider,
                                                 receiver: Receiver) -> None:
    threads_before = threading.active_count()
    body = json.dumps({"prompt": "p", "image_url": "https://cdn.example/x.png",
                       "duration": "5"}).encode()
    started = time.perf_counter()
    ids = []
    for i in range(3000):
        hook = receiver.url if i < 100 else None
        reply = fast.submit_request(KLING, body, webhook=hook)
        ids.append(reply.payload["request_id"])
    submit_seconds = time.perf_counter() - started
    assert submit_seconds < 3.0  # in-process: well under 1 ms each
    assert threading.active_count() <= threads_before + 4  # webhook pool, nothing per job
    time.sleep(0.3)
    started = time.perf_counter()
    replies = [fast.request_status("fal-ai/kling-video", rid) for rid in ids]
    assert time.perf_counter() - started < 2.0
    assert {r.status for r in replies} == {200}
    assert len(receiver.wait(100)) == 100


def test_command_line_entry_point() -> None:
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", str(port),
                             "--no-render", "--queue-seconds", "0", "--run-seconds", "0.1"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if requests.get(f"{url}/_sandbox/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        response = requests.post(f"{url}/{KLING}", headers=AUTH, timeout=T,
                                 json={"prompt": "p", "image_url": DATA_URI, "duration": "5"})
        assert response.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"listening on" in output and b"stopped" in output
