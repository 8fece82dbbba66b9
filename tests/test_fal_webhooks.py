"""Webhook verification with real deliveries from the sandbox and its real JWKS over HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from app.external import ExternalError
from app.fal import FalClient
from app.fal_webhooks import (
    JwksUnavailable,
    WebhookError,
    WebhookRejected,
    WebhookVerifier,
    event_reason,
    parse_webhook,
)
from sandbox import SandboxProvider

KLING = "fal-ai/kling-video/v2.1/standard/image-to-video"
BODY = json.dumps({"request_id": "r-1", "gateway_request_id": "r-1", "status": "OK",
                   "payload": {"video": {"url": "https://v3.fal.media/o.mp4"}},
                   "error": None}).encode()


class Receiver:
    """A loopback webhook endpoint that keeps each POST's headers and raw body by request id."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[dict[str, str], bytes]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rid = json.loads(body).get("request_id", "?")
                receiver.calls[rid] = (dict(self.headers.items()), body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/api/webhooks/fal?jobId=j1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, request_id: str, timeout: float = 5.0) -> tuple[dict[str, str], bytes]:
        deadline = time.monotonic() + timeout
        while request_id not in self.calls:
            assert time.monotonic() < deadline, f"no webhook for {request_id}"
            time.sleep(0.02)
        return self.calls[request_id]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class CountingSession(requests.Session):
    """A real session that counts the JWKS downloads it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.gets += 1
        return super().get(url, **kwargs)


class Clock:
    """A settable clock starting at the real time (signatures carry real timestamps)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def _provider() -> Iterator[SandboxProvider]:
    with SandboxProvider(queue_seconds=0.02, run_seconds=0.05, render=False,
                         webhook_backoff=0.05) as provider:
        yield provider


@pytest.fixture
def fal(_provider: SandboxProvider) -> Iterator[SandboxProvider]:
    _provider.reset()
    keys = list(_provider._keys)  # rotation tests must not leak into later tests
    yield _provider
    _provider._keys = keys


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def deliver(fal: SandboxProvider, receiver: Receiver, prompt: str = "A slow push-in"
            ) -> tuple[str, dict[str, str], bytes]:
    """Submit through our client with a webhook and wait for the sandbox to deliver it."""
    client = FalClient(fal.queue_url, "sandbox:key")
    sub = client.submit(KLING, {"prompt": prompt, "image_url": "https://example.com/a.png",
                                "duration": "5"}, webhook_url=receiver.url)
    headers, body = receiver.wait(sub.request_id)
    return sub.request_id, headers, body


def verifier_for(fal: SandboxProvider, **options: Any) -> tuple[WebhookVerifier, CountingSession]:
    session = CountingSession()
    return WebhookVerifier(fal.jwks_url, session=session, **options), session


# ------------------------------------------------------------------ genuine deliveries

def test_a_real_delivery_verifies_and_parses(fal: SandboxProvider, receiver: Receiver) -> None:
    request_id, headers, body = deliver(fal, receiver)
    verifier, session = verifier_for(fal)
    assert verifier.verify(headers, body) == request_id
    assert verifier.verify({k.lower(): v for k, v in headers.items()}, body) == request_id
    assert verifier.verify({k.upper(): v for k, v in headers.items()}, body) == request_id
    assert session.gets == 1  # cached
    event = parse_webhook(body, expected_request_id=request_id)
    assert event.ok and event.error is None and not event.fetch_result
    assert event.video is not None and event.video.url.endswith("/output.mp4")
    assert event_reason(event) == ""


def test_tampering_is_rejected(fal: SandboxProvider, receiver: Receiver) -> None:
    request_id, headers, body = deliver(fal, receiver)
    verifier, _ = verifier_for(fal)
    cases = {
        "body": (headers, body.replace(b'"OK"', b'"ERROR"')),
        "request id": ({**headers, "X-Fal-Webhook-Request-Id": "019e-other"}, body),
        "user id": ({**headers, "X-Fal-Webhook-User-Id": "someone-else"}, body),
        "timestamp": ({**headers, "X-Fal-Webhook-Timestamp":
                       str(int(headers["X-Fal-Webhook-Timestamp"]) + 1)}, body),
    }
    for what, (forged_headers, forged_body) in cases.items():
        with pytest.raises(WebhookRejected, match="does not verify"):
            verifier.verify(forged_headers, forged_body)
        assert what
    assert verifier.verify(headers, body) == request_id  # the original still passes


# ------------------------------------------------------------------ malformed or stale

def test_stale_and_future_timestamps(fal: SandboxProvider) -> None:
    clock = Clock()
    verifier, _ = verifier_for(fal, clock=clock)
    for offset, accepted in ((-301, False), (301, False), (-299, True), (299, True)):
        headers = fal.signed_webhook_headers("r-1", BODY, timestamp=int(clock.now) + offset)
        if accepted:
            assert verifier.verify(headers, BODY) == "r-1"
        else:
            with pytest.raises(WebhookRejected, match="too old or in the future"):
                verifier.verify(headers, BODY)


def test_missing_and_malformed_headers(fal: SandboxProvider) -> None:
    verifier, session = verifier_for(fal)
    good = fal.signed_webhook_headers("r-1", BODY)
    for name in ("X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id",
                 "X-Fal-Webhook-Timestamp", "X-Fal-Webhook-Signature"):
        without = {k: v for k, v in good.items() if k != name}
        with pytest.raises(WebhookRejected, match=f"missing header {name.lower()}"):
            verifier.verify(without, BODY)
        with pytest.raises(WebhookRejected, match="missing"):
            verifier.verify({**good, name: "  "}, BODY)
    for stamp in ("12.5", "-5", "1e9", "soon", "١٢٣"):
        with pytest.raises(WebhookRejected, match="not an integer"):
            verifier.verify({**good, "X-Fal-Webhook-Timestamp": stamp}, BODY)
    with pytest.raises(WebhookRejected, match="not hex"):
        verifier.verify({**good, "X-Fal-Webhook-Signature": "zz" * 64}, BODY)
    with pytest.raises(WebhookRejected, match="wrong length"):
        verifier.verify({**good, "X-Fal-Webhook-Signature": "ab" * 10}, BODY)
    assert session.gets == 0  # nothing fetched for requests that fail before the crypto


# ------------------------------------------------------------------ keys: rotation, refetch limits

def test_key_rotation_is_picked_up_by_one_refetch(fal: SandboxProvider) -> None:
    verifier, session = verifier_for(fal)
    assert verifier.verify(fal.signed_webhook_headers("r-1", BODY), BODY) == "r-1"
    fal.rotate_key(keep_old=False)
    assert verifier.verify(fal.signed_webhook_headers("r-2", BODY), BODY) == "r-2"
    assert session.gets == 2


def test_forged_signatures_cannot_hammer_the_jwks_url(fal: SandboxProvider) -> None:
    clock = Clock()
    verifier, session = verifier_for(fal, clock=clock, min_refetch_seconds=30)
    assert verifier.verify(fal.signed_webhook_headers("r-1", BODY), BODY) == "r-1"
    forged = {**fal.signed_webhook_headers("r-1", BODY), "X-Fal-Webhook-User-Id": "mallory"}
    for _ in range(20):
        with pytest.raises(WebhookRejected):
            verifier.verify(forged, BODY)
    assert session.gets == 2  # the cache fill, then one refetch for all twenty
    clock.now += 29
    for _ in range(20):
        with pytest.raises(WebhookRejected):
            verifier.verify({**forged, "X-Fal-Webhook-Timestamp": str(int(clock.now))}, BODY)
    assert session.gets == 2
    clock.now += 2
    for _ in range(20):
        with pytest.raises(WebhookRejected):
            verifier.verify({**forged, "X-Fal-Webhook-Timestamp": str(int(clock.now))}, BODY)
    assert session.gets == 3  # one refetch per 30 s, however many forgeries
    # A rotation right after a forced refetch is seen once the limit allows the next one
    # (meanwhile fal's delivery retries keep the genuine webhook coming).
    fal.rotate_key(keep_old=False)
    fresh = fal.signed_webhook_headers("r-3", BODY, timestamp=int(clock.now))
    with pytest.raises(WebhookRejected):
        verifier.verify(fresh, BODY)
    clock.now += 30
    fresh = fal.signed_webhook_headers("r-3", BODY, timestamp=int(clock.now))
    assert verifier.verify(fresh, BODY) == "r-3"
    assert session.gets == 4


def test_keys_are_refreshed_after_cache_seconds(fal: SandboxProvider) -> None:
    clock = Clock()
    verifier, session = verifier_for(fal, clock=clock, cache_seconds=3600)
    verifier.verify(fal.signed_webhook_headers("r-1", BODY, timestamp=int(clock.now)), BODY)
    clock.now += 3601
    verifier.verify(fal.signed_webhook_headers("r-1", BODY, timestamp=int(clock.now)), BODY)
    assert session.gets == 2


def test_unreachable_jwks_is_unavailable_not_rejected(fal: SandboxProvider) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    session = CountingSession()
    verifier = WebhookVerifier(f"http://127.0.0.1:{port}/.well-known/jwks.json",
                               session=session)
    headers = fal.signed_webhook_headers("r-1", BODY)
    for _ in range(3):
        with pytest.raises(JwksUnavailable) as caught:
            verifier.verify(headers, BODY)
        assert isinstance(caught.value, WebhookError)
        assert not isinstance(caught.value, WebhookRejected)  # answer 503: fal retries
    assert session.gets == 1  # the failed fetch is rate-limited too


def test_webhook_errors_carry_a_message_and_say_whether_retrying_may_help(
        fal: SandboxProvider) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = WebhookVerifier(f"http://127.0.0.1:{port}/.well-known/jwks.json")
    with pytest.raises(ExternalError) as down:
        unreachable.verify(fal.signed_webhook_headers("r-1", BODY), BODY)
    verifier, _ = verifier_for(fal)
    with pytest.raises(ExternalError) as forged:
        verifier.verify(fal.signed_webhook_headers("r-1", BODY), BODY + b" ")
    for caught, kind, retryable in ((down, JwksUnavailable, True),
                                    (forged, WebhookRejected, False)):
        assert type(caught.value) is kind and isinstance(caught.value, WebhookError)
        assert caught.value.retryable is retryable
        assert caught.value.message and caught.value.message == str(caught.value)


# ------------------------------------------------------------------ bodies

def test_error_webhooks_parse_to_readable_reasons(fal: SandboxProvider,
                                                  receiver: Receiver) -> None:
    rid, headers, body = deliver(fal, receiver, "[sandbox:model_error]")
    verifier, _ = verifier_for(fal)
    assert verifier.verify(headers, body) == rid
    event = parse_webhook(body, rid)
    assert not event.ok and event.error == "Invalid status code: 422"
    assert event_reason(event) == ("Model error (content_policy_violation): "
                                   "The content was flagged by a content checker.")

    rid, _, body = deliver(fal, receiver, "[sandbox:result_500]")
    event = parse_webhook(body, rid)
    assert not event.ok and event_reason(event) == "Provider timed out"

    rid, _, body = deliver(fal, receiver, "[sandbox:runner_error]")
    assert event_reason(parse_webhook(body, rid)) == (
        "Provider error (runner_disconnected): Runner disconnected")


def test_payload_error_means_fetch_the_result(fal: SandboxProvider, receiver: Receiver) -> None:
    rid, headers, body = deliver(fal, receiver, "[sandbox:webhook_payload_error]")
    event = parse_webhook(body, rid)
    assert event.payload is None and event.payload_error
    assert event.ok and event.fetch_result and event.video is None
    assert event_reason(event) == ""


def test_bad_bodies_are_rejected() -> None:
    for raw, reason in ((b"not json", "not JSON"), (b"\xff\xfe", "not JSON"),
                        (b"[1, 2]", "not a JSON object"), (b'{"status": "OK"}', "no request_id"),
                        (b'{"request_id": ""}', "no request_id")):
        with pytest.raises(WebhookRejected, match=reason):
            parse_webhook(raw)
    with pytest.raises(WebhookRejected, match="another request"):
        parse_webhook(BODY, expected_request_id="r-2")
    ok = parse_webhook(json.dumps({"request_id": "r-1", "status": "OK", "payload": {}}).encode())
    assert ok.ok and event_reason(ok) == "Provider returned no video"
    bare = parse_webhook(b'{"request_id": "r-1", "status": "ERROR", "error": "Boom"}')
    assert not bare.ok and event_reason(bare) == "Provider error: Boom"
