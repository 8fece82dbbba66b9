"""The fal client over real loopback HTTP against the sandbox provider (and a tiny fixed server)."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.external import ExternalError
from app.fal import (
    ALREADY_COMPLETED,
    CANCELLATION_REQUESTED,
    COMPLETED,
    NOT_FOUND,
    FalClient,
    FalError,
    FalNotFound,
    FalOutcomeUnknown,
    FalPermanent,
    FalRetryable,
    ProviderStatus,
    Submission,
    failure_reason,
)
from sandbox import SandboxProvider

KLING = "fal-ai/kling-video/v2.1/standard/image-to-video"
KEY = "test-key:SECRET-part"
IMAGE = "https://images.example.com/start.png"  # never fetched: render=False


@pytest.fixture(scope="module")
def _provider() -> Iterator[SandboxProvider]:
    with SandboxProvider(queue_seconds=0.05, run_seconds=0.15, render=False, api_key=KEY,
                         submit_timeout_seconds=1.0, slow_status_seconds=0.8,
                         webhook_retries=0) as provider:
        yield provider


@pytest.fixture
def fal(_provider: SandboxProvider) -> SandboxProvider:
    """The sandbox, reset for this test."""
    _provider.reset()
    return _provider


class Sleeps(list[float]):
    """A fake sleep that records what it was asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(fal: SandboxProvider | str, **options: Any) -> FalClient:
    url = fal if isinstance(fal, str) else fal.queue_url
    options.setdefault("sleep", Sleeps())
    return FalClient(url, options.pop("key", KEY), **options)


def model_input(prompt: str = "A slow push-in", **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "image_url": IMAGE, "duration": "5", **extra}


def until_done(fal_client: FalClient, status_url: str, timeout: float = 5.0
               ) -> list[ProviderStatus]:
    seen: list[ProviderStatus] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(fal_client.status(status_url, logs=True))
        if seen[-1].status == COMPLETED:
            return seen
        time.sleep(0.03)
    raise AssertionError(f"not COMPLETED in {timeout}s: {seen[-1]}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ the happy path

def test_submit_status_result(fal: SandboxProvider, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="app.fal")
    c = client(fal)
    hook = "http://127.0.0.1:9/api/webhooks/fal?jobId=job-1&x=a b"
    sub = c.submit(KLING, model_input(negative_prompt="blur"), webhook_url=hook)
    assert isinstance(sub, Submission)
    assert sub.status_url.endswith(f"/requests/{sub.request_id}/status")
    assert sub.cancel_url.endswith("/cancel") and sub.response_url in sub.status_url
    assert sub.queue_position == 0
    [seen] = fal.submits()
    assert seen["accepted"] and seen["webhook"] == hook  # url-encoded, decoded intact
    assert seen["body"]["negative_prompt"] == "blur"

    statuses = until_done(c, sub.status_url)
    order = {"IN_QUEUE": 0, "IN_PROGRESS": 1, COMPLETED: 2}
    ranks = [order[s.status] for s in statuses]
    assert ranks == sorted(ranks) and ranks[-1] == 2
    done = statuses[-1]
    assert not done.failed and done.error is None
    assert done.logs and all("message" in line for line in done.logs)
    assert fal.status_call_count(sub.request_id) == len(statuses)
    assert c.status(sub.status_url).logs == []  # logs=0

    video = c.result(sub.response_url)
    assert video.url.endswith(f"/files/{sub.request_id}/output.mp4")
    assert video.content_type == "video/mp4" and (video.file_size or 0) > 1000
    # Our lines never carry the key or the webhook's query string.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name == "app.fal")
    assert "SECRET" not in ours and "jobId" not in ours


def test_status_from_many_threads_shares_one_pool(fal: SandboxProvider,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    c = client(fal)
    subs = [c.submit(KLING, model_input(f"clip {i}")) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda s: c.status(s.status_url),
                                [s for s in subs for _ in range(8)]))
    assert len(answers) == 96
    assert {a.status for a in answers} <= {"IN_QUEUE", "IN_PROGRESS", COMPLETED}
    assert "Connection pool is full" not in caplog.text


# ------------------------------------------------------------------ submit: retried or not

def test_submit_429_is_retried_after_retry_after(fal: SandboxProvider) -> None:
    sleeps = Sleeps()
    fal.queue_scenario("submit_429")
    sub = client(fal, sleep=sleeps).submit(KLING, model_input())
    assert sleeps == [1.0]  # the sandbox's Retry-After, honoured exactly
    submits = fal.submits()
    assert [s["status_code"] for s in submits] == [429, 200]
    assert [s["request_id"] for s in submits if s["accepted"]] == [sub.request_id]


def test_submit_500_is_retried_with_jittered_backoff(fal: SandboxProvider) -> None:
    sleeps = Sleeps()
    fal.queue_scenario("submit_500")
    client(fal, sleep=sleeps, backoff_base=0.4).submit(KLING, model_input())
    assert len(sleeps) == 1 and 0.0 <= sleeps[0] <= 0.4
    assert [s["status_code"] for s in fal.submits()] == [500, 200]
    assert sum(s["accepted"] for s in fal.submits()) == 1


def test_retry_after_beyond_the_cap_is_left_to_the_caller(fal: SandboxProvider) -> None:
    sleeps = Sleeps()
    c = client(fal, sleep=sleeps, backoff_cap=0.5)
    fal.queue_scenario("submit_429")
    with pytest.raises(FalRetryable) as caught:
        c.submit(KLING, model_input())
    assert caught.value.retry_after == 1.0 and caught.value.status_code == 429
    assert sleeps == []  # no worker held for longer than the cap
    c.submit(KLING, model_input())  # what the caller does later: accepted once
    assert [s["status_code"] for s in fal.submits()] == [429, 200]


def test_connection_refused_is_retried_with_capped_backoff_then_retryable(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="app.fal")
    sleeps = Sleeps()
    c = client(f"http://127.0.0.1:{closed_port()}", sleep=sleeps, max_attempts=5,
               backoff_base=1.0, backoff_cap=3.0)
    with pytest.raises(FalRetryable) as caught:
        c.submit(KLING, model_input(), webhook_url="http://h/hook?jobId=secret-ish")
    assert len(sleeps) == 4
    for attempt, slept in enumerate(sleeps, start=1):
        assert 0.0 <= slept <= min(3.0, 1.0 * 2 ** (attempt - 1))
    assert caught.value.retry_after is None
    assert "connection failed" in caught.value.message
    assert "jobId" not in str(caught.value) and "127.0.0.1" not in str(caught.value)
    ours = [r.getMessage() for r in caplog.records if r.name == "app.fal"]
    assert len(ours) == 5  # four "retrying in", one "gave up"
    assert not any("SECRET" in line or "jobId" in line for line in ours)


def test_submit_403_is_permanent_and_says_balance(fal: SandboxProvider) -> None:
    sleeps = Sleeps()
    with pytest.raises(FalPermanent) as caught:
        client(fal, sleep=sleeps).submit(KLING, model_input("[sandbox:submit_403]"))
    assert caught.value.status_code == 403 and "balance" in caught.value.message.lower()
    assert sleeps == [] and len(fal.submits()) == 1 and not fal.submits()[0]["accepted"]


def test_submit_422_has_a_readable_detail(fal: SandboxProvider) -> None:
    c = client(fal)
    with pytest.raises(FalPermanent) as caught:
        c.submit(KLING, {"prompt": "x", "duration": 5})
    assert caught.value.status_code == 422
    assert caught.value.message == ("Invalid input for the provider: image_url: Field required; "
                                    "duration: Input should be '5' or '10'")
    assert len(fal.submits()) == 1


def test_wrong_key_is_permanent_401(fal: SandboxProvider) -> None:
    good = client(fal).submit(KLING, model_input())
    bad = client(fal, key="not-the-key")
    with pytest.raises(FalPermanent) as caught:
        bad.submit(KLING, model_input())
    assert caught.value.status_code == 401 and "key" in caught.value.message
    with pytest.raises(FalPermanent) as caught:
        bad.status(good.status_url)
    assert caught.value.status_code == 401 and not isinstance(caught.value, FalNotFound)
    assert [s["accepted"] for s in fal.submits()] == [True]


def test_submit_read_timeout_is_outcome_unknown_and_not_retried(fal: SandboxProvider) -> None:
    sleeps = Sleeps()
    started = time.monotonic()
    with pytest.raises(FalOutcomeUnknown):
        client(fal, sleep=sleeps, read_timeout=0.3).submit(
            KLING, model_input("[sandbox:submit_timeout=1]"))
    assert time.monotonic() - started < 0.9
    assert sleeps == []
    time.sleep(0.8)  # let the sandbox finish logging the delayed answer
    [seen] = fal.submits()
    assert seen["accepted"]  # fal *did* take it: resubmitting would make a second job


def test_submit_disconnect_is_outcome_unknown_and_not_retried(fal: SandboxProvider) -> None:
    sleeps = Sleeps()
    with pytest.raises(FalOutcomeUnknown):
        client(fal, sleep=sleeps).submit(KLING, model_input("[sandbox:submit_disconnect]"))
    assert sleeps == []
    assert [s["accepted"] for s in fal.submits()] == [True]


# ------------------------------------------------------------------ status, result, cancel

def test_status_404_is_not_found(fal: SandboxProvider) -> None:
    c = client(fal)
    sub = c.submit(KLING, model_input("[sandbox:status_404]"))
    with pytest.raises(FalNotFound) as caught:
        c.status(sub.status_url)
    assert isinstance(caught.value, FalPermanent) and caught.value.status_code == 404


def test_slow_status_is_retryable_without_waiting_twice(fal: SandboxProvider) -> None:
    c = client(fal, status_read_timeout=0.2)
    sub = c.submit(KLING, model_input("[sandbox:slow_status=0.8]"))
    started = time.monotonic()
    with pytest.raises(FalRetryable) as caught:
        c.status(sub.status_url)
    assert time.monotonic() - started < 0.6
    assert "read timeout" in caught.value.message
    time.sleep(0.7)
    assert fal.status_call_count(sub.request_id) == 1  # a timeout is not repeated in-call


def test_model_error_fails_with_a_readable_reason(fal: SandboxProvider) -> None:
    c = client(fal)
    sub = c.submit(KLING, model_input("[sandbox:model_error]"))
    done = until_done(c, sub.status_url)[-1]
    assert done.failed and done.error_type == "content_policy_violation"
    expected = ("Model error (content_policy_violation): "
                "The content was flagged by a content checker.")
    assert failure_reason(done) == expected
    with pytest.raises(FalPermanent) as caught:
        c.result(sub.response_url)
    assert caught.value.message == expected
    assert caught.value.status_code == 422
    assert caught.value.error_type == "content_policy_violation"


def test_result_504_request_timeout_is_provider_timed_out(fal: SandboxProvider) -> None:
    c = client(fal)
    sub = c.submit(KLING, model_input("[sandbox:result_500]"))
    assert not until_done(c, sub.status_url)[-1].failed  # status looks clean
    with pytest.raises(FalPermanent) as caught:
        c.result(sub.response_url)
    assert caught.value.message == "Provider timed out"
    assert caught.value.status_code == 504 and caught.value.error_type == "request_timeout"


def test_runner_error_is_a_permanent_failure(fal: SandboxProvider) -> None:
    # fal retried it on fresh runners before reporting it; its stored result won't change.
    c = client(fal)
    sub = c.submit(KLING, model_input("[sandbox:runner_error]"))
    done = until_done(c, sub.status_url)[-1]
    assert done.failed
    assert failure_reason(done) == "Provider error (runner_disconnected): Runner disconnected"
    with pytest.raises(FalPermanent) as caught:
        c.result(sub.response_url)
    assert not isinstance(caught.value, FalRetryable)
    assert caught.value.status_code == 503
    assert caught.value.message == "Provider error (runner_disconnected): Runner disconnected"


def test_result_before_completion_is_retryable_and_unknown_id_not_found(
        fal: SandboxProvider) -> None:
    c = client(fal)
    sub = c.submit(KLING, model_input("[sandbox:never_finish]"))
    with pytest.raises(FalRetryable):
        c.result(sub.response_url)
    gone = sub.response_url.replace(sub.request_id, "019e0000-0000-7000-8000-000000000000")
    with pytest.raises(FalNotFound):
        c.result(gone)
    with pytest.raises(FalNotFound):
        c.status(f"{gone}/status")


def test_cancel_outcomes(fal: SandboxProvider) -> None:
    c = client(fal)
    sub = c.submit(KLING, model_input("[sandbox:never_finish]"))
    assert c.cancel(sub.cancel_url) == CANCELLATION_REQUESTED
    done = until_done(c, sub.status_url)[-1]
    assert done.failed and done.error_type == "request_cancelled"
    assert c.cancel(sub.cancel_url) == ALREADY_COMPLETED
    gone = sub.cancel_url.replace(sub.request_id, "019e0000-0000-7000-8000-000000000000")
    assert c.cancel(gone) == NOT_FOUND
    assert [x["outcome"] for x in fal.cancels()] == ["cancelled", "already_completed",
                                                     "not_found"]


def test_cancel_and_status_on_a_dead_host_are_retryable() -> None:
    c = client(f"http://127.0.0.1:{closed_port()}")
    base = f"http://127.0.0.1:{closed_port()}/fal-ai/kling-video/requests/r1"
    for call in (lambda: c.cancel(f"{base}/cancel"), lambda: c.status(f"{base}/status"),
                 lambda: c.result(base)):
        with pytest.raises(FalRetryable):
            call()


# ------------------------------------------------------------------ answers the sandbox never gives

class Fixed:
    """A loopback HTTP server answering each request with the next scripted reply."""

    def __init__(self, *replies: tuple[int, dict[str, str], bytes]) -> None:
        self.replies = list(replies)
        self.calls = 0
        fixed = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fixed.calls += 1
                code, headers, body = fixed.replies.pop(0)
                self.send_response(code)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer  # noqa: N815 (http.server's naming)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fixed() -> Iterator[type[Fixed]]:
    servers: list[Fixed] = []

    def make(*replies: tuple[int, dict[str, str], bytes]) -> Fixed:
        servers.append(Fixed(*replies))
        return servers[-1]

    yield make  # type: ignore[misc]
    for server in servers:
        server.close()


JSON = {"Content-Type": "application/json"}


def test_gateway_timeout_on_submit_is_outcome_unknown(fixed: Any) -> None:
    server = fixed((504, {}, b"<html>nginx 504</html>"), (200, JSON, b"{}"))
    sleeps = Sleeps()
    with pytest.raises(FalOutcomeUnknown):
        client(server.url, sleep=sleeps).submit(KLING, model_input())
    assert server.calls == 1 and sleeps == []


def test_unexpected_submit_answer_is_permanent(fixed: Any) -> None:
    server = fixed((200, JSON, json.dumps({"request_id": "r1"}).encode()))
    with pytest.raises(FalPermanent, match="unexpected submit answer"):
        client(server.url).submit(KLING, model_input())


def test_transient_status_and_result_answers_are_retryable(fixed: Any) -> None:
    server = fixed((500, JSON, b'{"detail": "boom"}'),
                   (503, {"Retry-After": "7"}, b"<html>nginx</html>"),
                   (200, JSON, json.dumps({"video": {"content_type": "video/mp4"}}).encode()),
                   (200, JSON, b'{"unexpected": true}'))
    c = client(server.url)
    with pytest.raises(FalRetryable):
        c.status(f"{server.url}/a/b/requests/r/status")
    with pytest.raises(FalRetryable) as caught:
        c.result(f"{server.url}/a/b/requests/r")
    assert caught.value.retry_after == 7.0
    with pytest.raises(FalPermanent, match="Provider returned no video"):
        c.result(f"{server.url}/a/b/requests/r")
    with pytest.raises(FalRetryable, match="unexpected status answer"):
        c.status(f"{server.url}/a/b/requests/r/status")


def _refused(fal: SandboxProvider) -> None:
    client(f"http://127.0.0.1:{closed_port()}", max_attempts=1).submit(KLING, model_input())


def _busy_beyond_the_cap(fal: SandboxProvider) -> None:
    fal.queue_scenario("submit_429")
    client(fal, backoff_cap=0.5).submit(KLING, model_input())


def _slow_status(fal: SandboxProvider) -> None:
    c = client(fal, status_read_timeout=0.2)
    c.status(c.submit(KLING, model_input("[sandbox:slow_status=0.8]")).status_url)


def _out_of_balance(fal: SandboxProvider) -> None:
    client(fal).submit(KLING, model_input("[sandbox:submit_403]"))


def _wrong_key(fal: SandboxProvider) -> None:
    client(fal, key="not-the-key").submit(KLING, model_input())


def _unknown_request(fal: SandboxProvider) -> None:
    c = client(fal)
    c.status(c.submit(KLING, model_input("[sandbox:status_404]")).status_url)


def _model_error(fal: SandboxProvider) -> None:
    c = client(fal)
    sub = c.submit(KLING, model_input("[sandbox:model_error]"))
    until_done(c, sub.status_url)
    c.result(sub.response_url)


def _disconnected_submit(fal: SandboxProvider) -> None:
    client(fal).submit(KLING, model_input("[sandbox:submit_disconnect]"))


@pytest.mark.parametrize("provoke, kind, retryable", [
    (_refused, FalRetryable, True),
    (_busy_beyond_the_cap, FalRetryable, True),
    (_slow_status, FalRetryable, True),
    (_out_of_balance, FalPermanent, False),
    (_wrong_key, FalPermanent, False),
    (_unknown_request, FalNotFound, False),
    (_model_error, FalPermanent, False),
    (_disconnected_submit, FalOutcomeUnknown, False),
], ids=lambda value: getattr(value, "__name__", str(value)).strip("_"))
def test_every_failure_is_an_external_error_with_message_and_retryable(
        fal: SandboxProvider, provoke: Callable[[SandboxProvider], None],
        kind: type[FalError], retryable: bool) -> None:
    with pytest.raises(ExternalError) as caught:
        provoke(fal)
    error = caught.value
    assert type(error) is kind and isinstance(error, FalError)
    assert error.retryable is retryable
    assert error.message and error.message == str(error) and "\n" not in error.message
    assert "SECRET" not in error.message and "127.0.0.1" not in error.message


def test_exception_tree() -> None:
    assert issubclass(FalNotFound, FalPermanent)
    for cls in (FalRetryable, FalPermanent, FalOutcomeUnknown):
        assert issubclass(cls, FalError)
    assert not issubclass(FalOutcomeUnknown, FalRetryable | FalPermanent)
    assert "SECRET" not in repr(FalClient("http://x", KEY))


@pytest.mark.parametrize("keep_alive", [True, False])
def test_status_checks_reuse_one_pooled_connection(keep_alive: bool) -> None:
    """The sandbox serves HTTP/1.1 keep-alive as fal does, and the client's pool reuses the
    connection for every check (each new TCP connection cost us CPU per check)."""
    from app.demo.sample import solid_png
    from sandbox import SandboxProvider

    provider = SandboxProvider(queue_seconds=0.0, run_seconds=60, render=False,
                               keep_alive=keep_alive)
    provider.start()
    try:
        client = FalClient(provider.queue_url, "test:key")
        submission = client.submit("fal-ai/kling-video/v2.1/standard/image-to-video",
                                   {"prompt": "p", "duration": "5",
                                    "image_url": "data:image/png;base64,"
                                    + base64.b64encode(solid_png(4, 4)).decode()})
        for _ in range(20):
            assert client.status(submission.status_url).status in ("IN_QUEUE", "IN_PROGRESS")
        accepted = provider.observations()["totals"]["connections"]
        # Kept alive: one connection for the submit, one reused by all 20 status checks.
        assert accepted == (2 if keep_alive else 21)
        assert provider.status_call_count(submission.request_id) == 20
        client.close()
    finally:
        provider.stop()
