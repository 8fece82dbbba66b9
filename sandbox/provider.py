"""The sandbox provider: fal's queue protocol served locally, with real MP4s and scripted faults."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import math
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox import render
from sandbox.http11 import KeepAliveHandler, KeepAliveServer
from sandbox.jobs import (
    CANCELLED,
    CONTENT_POLICY,
    DECODE_FAILED,
    FETCH_FAILED,
    REQUEST_TIMEOUT,
    RUNNER_DISCONNECTED,
    SCENARIOS,
    SUBMIT_FAULTS,
    Failure,
    Job,
    UnknownScenario,
    new_request_id,
    parse_markers,
    validate_input,
)
from sandbox.journal import Journal
from sandbox.signing import public_jwk, sign_webhook

log = logging.getLogger(__name__)

MIB = 1024 * 1024
LOG_LIMIT = 100_000  # per observation list; old entries fall off in long benchmarks
_ZEROS = bytes(MIB)
_HTML = (b"<!DOCTYPE html><html><head><title>Access denied</title></head>"
         b"<body><h1>Access denied</h1><p>This object is not available.</p></body></html>")
_PAYLOAD_ERROR = ("Response payload is not JSON serializable. Either return a JSON serializable "
                  "object or use the queue endpoint to retrieve the response.")
_EXHAUSTED = ("User is locked. Reason: Exhausted balance. Top up your balance at "
              "fal.ai/dashboard/billing.")


@dataclass(slots=True)
class Reply:
    """A transport-neutral answer: status, JSON payload (or None), extra headers."""

    status: int
    payload: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    disconnect: bool = False  # close the connection instead of answering


@dataclass(slots=True)
class Download:
    """How to answer a video download: headers, a body stream, and whether to cut it short."""

    status: int
    headers: list[tuple[str, str]]
    chunks: Iterable[bytes]
    cut: bool = False  # close the socket after the body (which is shorter than announced)


@dataclass(slots=True)
class _Delivery:
    request_id: str
    url: str
    body: bytes
    generation: int
    copy: int = 1
    attempt: int = 0


def _count_connection(server: Any) -> None:
    provider = getattr(getattr(server, "app", None), "provider", None)
    if provider is not None:
        provider.count_connection()


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler minus per-request INFO lines, which would dominate benchmark CPU.
    It closes every connection after one answer (`keep_alive=False`)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s", self.command, self.path, code)

    def setup(self) -> None:
        super().setup()
        _count_connection(self.server)


class _KeepAliveHandler(KeepAliveHandler):
    """HTTP/1.1 with persistent connections, as fal's queue serves them (the default)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s", self.command, self.path, code)

    def setup(self) -> None:
        super().setup()
        _count_connection(self.server)


def _short(value: Any) -> Any:
    # Submit bodies are logged for tests; a data: URI image would make them huge.
    if isinstance(value, str) and len(value) > 300:
        return f"{value[:80]}...<{len(value)} chars>"
    return value


class SandboxProvider:
    """A local fal queue: submit/status/result/cancel, files, JWKS, webhooks, faults, logs."""

    def __init__(self, *, queue_seconds: float = 0.5, run_seconds: float = 2.0,
                 render: bool = True, user_id: str = "sandbox-user", webhook_retries: int = 3,
                 webhook_backoff: float = 0.2, webhook_timeout: float = 5.0,
                 api_key: str | None = None, public_url: str | None = None,
                 submit_timeout_seconds: float = 5.0, slow_status_seconds: float = 3.0,
                 private_redirect_url: str = "http://169.254.169.254/latest/meta-data",
                 huge_file_bytes: int = 640 * MIB, huge_chunked_bytes: int = 64 * 1024 * MIB,
                 width: int = 320, fps: int = 12, render_workers: int = 2,
                 image_timeout: float = 10.0, max_image_bytes: int = 50 * MIB,
                 state_dir: str | Path | None = None,
                 keep_alive: bool = True) -> None:
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.render = render
        self.user_id = user_id
        self.webhook_retries = webhook_retries
        self.webhook_backoff = webhook_backoff
        self.webhook_timeout = webhook_timeout
        self.api_key = api_key
        self.public_url = public_url.rstrip("/") if public_url else None
        self.submit_timeout_seconds = submit_timeout_seconds
        self.slow_status_seconds = slow_status_seconds
        self.private_redirect_url = private_redirect_url
        self.huge_file_bytes = huge_file_bytes
        self.huge_chunked_bytes = huge_chunked_bytes
        self.width = width
        self.fps = fps
        self.render_workers = render_workers
        self.image_timeout = image_timeout
        self.max_image_bytes = max_image_bytes
        # With a state directory, the port and accepted requests survive a restart.
        self._journal = Journal(Path(state_dir)) if state_dir is not None else None
        self.keep_alive = keep_alive

        self._keys = [Ed25519PrivateKey.generate()]
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queued: deque[float] = deque()  # start times of jobs still IN_QUEUE (positions)
        self._scenario_queue: deque[tuple[str, str | None]] = deque()
        self._faulted: set[str] = set()  # submit keys already refused once
        self._bases: dict[str, str] = {}
        self._generation = 0  # bumped by reset(): late webhooks of forgotten jobs are dropped
        self._new_logs()

        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._local = threading.local()
        self._server: BaseWSGIServer | KeepAliveServer | None = None
        self._threads: list[threading.Thread] = []
        self._render_pool: ThreadPoolExecutor | None = None
        self._webhook_pool: ThreadPoolExecutor | None = None
        self._workdir: Path | None = None
        self._stock_video = b""
        self._url = ""

    # ----------------------------------------------------------------- lifecycle

    def _make_server(self, host: str, port: int) -> Any:
        from sandbox.wsgi import SandboxApp

        if self.keep_alive:
            return KeepAliveServer((host, port), _KeepAliveHandler, SandboxApp(self))
        return make_server(host, port, SandboxApp(self), threaded=True,
                           request_handler=_QuietHandler)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on host:port (0 = a free port) from daemon threads; returns once listening."""
        self._stopping = False
        journal = self._journal
        self._workdir = (journal.files if journal is not None
                         else Path(tempfile.mkdtemp(prefix="vj-sandbox-")))
        if not self.render:
            # One real clip made up front: thousands of benchmark jobs all serve these bytes.
            stock = self._workdir / "stock.mp4"
            render.render_clip(render.make_png(self.width, self.width * 9 // 16), stock,
                               seconds=1.0, width=self.width, fps=self.fps)
            self._stock_video = stock.read_bytes()
        self._render_pool = ThreadPoolExecutor(self.render_workers,
                                               thread_name_prefix="sandbox-render")
        self._webhook_pool = ThreadPoolExecutor(4, thread_name_prefix="sandbox-webhook")
        wanted = port or (journal.saved_port() if journal is not None else 0)
        try:
            self._server = self._make_server(host, wanted)
        except OSError:
            if not wanted or port:
                raise
            log.warning("sandbox port %s is taken; stored status URLs of earlier requests "
                        "will not answer", wanted)
            self._server = self._make_server(host, 0)
        if journal is not None:
            journal.save_port(self._server.server_port)
        bound = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self._url = self.public_url or f"http://{bound}:{self._server.server_port}"
        server = self._server
        self._threads = [
            threading.Thread(target=partial(server.serve_forever, poll_interval=0.05),
                             name="sandbox-http", daemon=True),
            threading.Thread(target=self._run_scheduler, name="sandbox-scheduler", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if journal is not None:
            self._restore(journal)
        log.info("sandbox provider listening on %s (render=%s, queue=%ss, run=%ss)",
                 self._url, self.render, self.queue_seconds, self.run_seconds)

    def stop(self) -> None:
        """Stop serving, drop pending work and delete rendered files."""
        with self._wake:
            self._stopping = True
            self._heap.clear()
            self._wake.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for pool in (self._render_pool, self._webhook_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        if self._workdir is not None:
            if self._journal is None:  # a state directory keeps its rendered files
                shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        log.info("sandbox provider stopped")

    def __enter__(self) -> SandboxProvider:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Root URL of the server, e.g. http://127.0.0.1:40123."""
        return self._url

    @property
    def queue_url(self) -> str:
        """What FAL_QUEUE_URL should be set to (same as base_url)."""
        return self._url

    @property
    def jwks_url(self) -> str:
        """What FAL_JWKS_URL should be set to."""
        return f"{self._url}/.well-known/jwks.json"

    # ----------------------------------------------------------------- signing

    def jwks(self) -> dict[str, Any]:
        """The JWKS document: every live key, newest first."""
        return {"keys": [public_jwk(key) for key in reversed(self._keys)]}

    def rotate_key(self, *, keep_old: bool = True) -> None:
        """Sign from now on with a new key (tests for clients that cache the JWKS)."""
        key = Ed25519PrivateKey.generate()
        self._keys = [*self._keys, key] if keep_old else [key]

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The key webhooks are signed with now."""
        return self._keys[-1]

    def signed_webhook_headers(self, request_id: str, body: bytes,
                               timestamp: int | None = None) -> dict[str, str]:
        """Headers fal would send with this raw body (tests use it to forge or replay)."""
        stamp = int(time.time()) if timestamp is None else int(timestamp)
        return {
            "Content-Type": "application/json",
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self.user_id,
            "X-Fal-Webhook-Timestamp": str(stamp),
            "X-Fal-Webhook-Signature": sign_webhook(self.private_key, request_id, self.user_id,
                                                    stamp, body),
        }

    # ----------------------------------------------------------------- control API

    def queue_scenario(self, name: str, count: int = 1, value: str | None = None) -> None:
        """Apply scenario `name` to the next `count` submits whose prompt has no marker."""
        if name not in SCENARIOS:
            raise UnknownScenario(name)
        with self._lock:
            self._scenario_queue.extend([(name, value)] * count)

    def clear_scenarios(self) -> None:
        """Forget queued provider-wide scenarios."""
        with self._lock:
            self._scenario_queue.clear()

    def queued_scenarios(self) -> list[str]:
        """Scenarios waiting for the next submits, in order."""
        with self._lock:
            return [name if value is None else f"{name}={value}"
                    for name, value in self._scenario_queue]

    def reset(self) -> None:
        """Forget every job, log, queued scenario and refused submit; delete rendered files."""
        with self._lock:
            paths = [job.video_path for job in self._jobs.values() if job.video_path]
            self._jobs.clear()
            self._queued.clear()
            self._scenario_queue.clear()
            self._faulted.clear()
            self._generation += 1
            self._new_logs()
        for path in paths:
            Path(path).unlink(missing_ok=True)

    def _new_logs(self) -> None:
        self._submits: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._cancels: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._webhooks: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._downloads: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._fetches: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._totals = {"submits": 0, "accepted": 0, "status_calls": 0, "result_calls": 0,
                        "cancels": 0, "downloads": 0, "webhook_attempts": 0,
                        "connections": 0}

    def count_connection(self) -> None:
        """A TCP connection was accepted (observations' totals: keep-alive at work)."""
        with self._lock:
            self._totals["connections"] += 1

    def submits(self) -> list[dict[str, Any]]:
        """Every submit received: time, endpoint, webhook, headers, body, status, request_id."""
        with self._lock:
            return list(self._submits)

    def cancels(self) -> list[dict[str, Any]]:
        """Every cancel call: time, request_id, status code, outcome."""
        with self._lock:
            return list(self._cancels)

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every webhook attempt: time, request_id, url, copy, attempt, status_code, error."""
        with self._lock:
            return list(self._webhooks)

    def downloads(self) -> list[dict[str, Any]]:
        """Every video download started: time, request_id, attempt, mode."""
        with self._lock:
            return list(self._downloads)

    def image_fetches(self) -> list[dict[str, Any]]:
        """Every image_url fetch: time, request_id, url (shortened), ok, error."""
        with self._lock:
            return list(self._fetches)

    def status_call_count(self, request_id: str) -> int:
        """Status calls received for one request (0 if unknown)."""
        job = self._jobs.get(request_id)
        return 0 if job is None else job.status_calls

    def status_call_counts(self) -> dict[str, int]:
        """Status calls per request id, for requests that got any."""
        with self._lock:
            return {rid: job.status_calls for rid, job in self._jobs.items() if job.status_calls}

    def request_info(self, request_id: str) -> dict[str, Any] | None:
        """What the sandbox knows about one request, or None."""
        job = self._jobs.get(request_id)
        return None if job is None else self._describe(job, time.monotonic())

    def requests_info(self) -> list[dict[str, Any]]:
        """request_info for every request, oldest first."""
        now = time.monotonic()
        with self._lock:
            jobs = list(self._jobs.values())
        return [self._describe(job, now) for job in jobs]

    def observations(self) -> dict[str, Any]:
        """Everything observed, in one JSON-ready document (also GET /_sandbox/observations)."""
        with self._lock:
            return {
                "submits": list(self._submits), "cancels": list(self._cancels),
                "webhooks": list(self._webhooks), "downloads": list(self._downloads),
                "image_fetches": list(self._fetches),
                "status_calls": {r: j.status_calls for r, j in self._jobs.items()
                                 if j.status_calls},
                "result_calls": {r: j.result_calls for r, j in self._jobs.items()
                                 if j.result_calls},
                "totals": {**self._totals, "jobs": len(self._jobs)},
                "queued_scenarios": [n if v is None else f"{n}={v}"
                                     for n, v in self._scenario_queue],
            }

    def wait_for_webhooks(self, count: int, timeout: float = 10.0, *,
                          ok_only: bool = True) -> list[dict[str, Any]]:
        """Block until `count` (2xx, unless ok_only=False) deliveries happened; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            seen = [d for d in self.webhook_deliveries()
                    if not ok_only or (d["status_code"] or 0) // 100 == 2]
            if len(seen) >= count or time.monotonic() >= deadline:
                return seen
            time.sleep(0.02)

    def _describe(self, job: Job, now: float) -> dict[str, Any]:
        phase = self._phase(job, now)
        failure = job.failure if phase == "COMPLETED" else None
        return {
            "request_id": job.request_id, "endpoint": job.endpoint, "status": phase,
            "scenarios": dict(job.scenarios or {}), "webhook_url": job.webhook,
            "seconds": job.seconds, "status_calls": job.status_calls,
            "result_calls": job.result_calls, "downloads": job.downloads,
            "cancelled": job.failure is CANCELLED,
            "error": failure.message if failure else None,
            "error_type": failure.error_type if failure else None,
            "video_size": job.video_size,
        }

    # ----------------------------------------------------------------- protocol operations

    def base_for(self, host: str | None) -> str:
        """URL root for links in answers: public_url, else the Host the client used."""
        if self.public_url or not host:
            return self._url
        base = self._bases.get(host)
        if base is None:
            base = self._bases[host] = f"http://{host}" if len(self._bases) < 64 else self._url
        return base

    def authorized(self, header: str | None) -> bool:
        """`Authorization: Key <key>`, with the configured key when one is set."""
        if not header or not header.startswith("Key "):
            return False
        key = header[4:].strip()
        return bool(key) and (self.api_key is None or key == self.api_key)

    def submit_request(self, endpoint: str, raw_body: bytes, *, webhook: str | None = None,
                       query: str = "", host: str | None = None,
                       headers: dict[str, str] | None = None) -> Reply:
        """POST {queue}/{endpoint_id}: validate, apply submit faults, enqueue."""
        entry: dict[str, Any] = {
            "time": time.time(), "endpoint": endpoint, "webhook": webhook,
            "headers": headers or {}, "body_sha256": hashlib.sha256(raw_body).hexdigest(),
            "body": None, "status_code": 422, "accepted": False, "request_id": None,
            "scenarios": [],
        }
        try:
            body = json.loads(raw_body)
        except ValueError:
            body = raw_body.decode("utf-8", "replace")[:200]
        entry["body"] = ({k: _short(v) for k, v in body.items()} if isinstance(body, dict)
                         else _short(body))
        reply = self._submit(endpoint, raw_body, body, webhook, query, host, entry)
        entry["status_code"] = 200 if reply.disconnect else reply.status
        with self._lock:
            self._submits.append(entry)
            self._totals["submits"] += 1
            self._totals["accepted"] += entry["accepted"]
        if entry["accepted"]:
            log.info("sandbox accepted %s for %s (scenarios=%s)", entry["request_id"], endpoint,
                     entry["scenarios"] or "-")
        else:
            log.info("sandbox refused a submit for %s with %s", endpoint, entry["status_code"])
        if entry["accepted"] and "submit_timeout" in entry["scenarios"]:
            time.sleep(self._submit_delay(entry["request_id"]))
        return reply

    def _submit_delay(self, request_id: str) -> float:
        job = self._jobs.get(request_id)
        value = job.param("submit_timeout") if job else None
        return float(value) if value else self.submit_timeout_seconds

    def _submit(self, endpoint: str, raw_body: bytes, body: Any, webhook: str | None,
                query: str, host: str | None, entry: dict[str, Any]) -> Reply:
        if endpoint.count("/") < 1 or "" in endpoint.split("/"):
            return Reply(404, {"detail": f"Application '{endpoint}' not found"})
        seconds, errors = validate_input(endpoint, body)
        if errors:
            return Reply(422, {"detail": errors})
        try:
            scenarios = parse_markers(body["prompt"])
        except UnknownScenario as exc:
            return Reply(422, {"detail": [{"loc": ["body", "prompt"], "type": "value_error",
                                           "msg": f"Unknown sandbox scenario '{exc}'"}]})
        key = hashlib.sha256(f"{endpoint}\n{query}\n".encode() + raw_body).hexdigest()
        fault: str | None = None
        with self._lock:
            retried = key in self._faulted
            if retried:
                self._faulted.discard(key)  # the refused submit came back: accept it now
            elif not scenarios and self._scenario_queue:
                name, value = self._scenario_queue.popleft()
                scenarios = {name: value}
            if not retried:
                fault = next((name for name in scenarios if name in SUBMIT_FAULTS), None)
                if fault is not None:
                    self._faulted.add(key)
        entry["scenarios"] = sorted(scenarios)
        if "submit_403" in scenarios:
            return Reply(403, {"detail": _EXHAUSTED})
        if not retried and fault is not None:
            if fault == "submit_429":
                return Reply(429, {"detail": "Too many requests"}, [("Retry-After", "1")])
            return Reply(500, {"detail": "Internal Server Error"})
        return self._enqueue(endpoint, body, seconds, webhook, scenarios or None, host, entry)

    def _enqueue(self, endpoint: str, body: dict[str, Any], seconds: float, webhook: str | None,
                 scenarios: dict[str, str | None] | None, host: str | None,
                 entry: dict[str, Any]) -> Reply:
        owner, app = endpoint.split("/", 2)[:2]
        app_path = f"{owner}/{app}"
        base = self.base_for(host)
        request_id = new_request_id()
        now = time.monotonic()
        started = now + self.queue_seconds
        due = started + self.run_seconds
        with self._lock:
            queued = self._queued
            while queued and queued[0] <= now:
                queued.popleft()
            ahead = len(queued)
            queued.append(started)
            job = Job(request_id, endpoint, app_path, base, seconds,
                      body["image_url"] if self.render else None, webhook, scenarios,
                      now, started, due, ahead)
            if not self.render:
                # No render step: the outcome is known now, status is pure arithmetic.
                job.failure = self._scripted_failure(job)
                job.done_at = None if job.has("never_finish") else due
            self._jobs[request_id] = job
        if self._journal is not None:
            self._journal.record(request_id, {
                "endpoint": endpoint, "app_path": app_path, "base": base, "seconds": seconds,
                "image_url": body.get("image_url"), "webhook": webhook,
                "scenarios": scenarios})
        if self.render:
            self._schedule(started, partial(self._start_render, request_id))
        elif job.webhook and job.done_at is not None:
            self._schedule(due, partial(self._finish, request_id))
        entry["accepted"] = True
        entry["request_id"] = request_id
        if job.has("submit_disconnect"):
            return Reply(200, disconnect=True)
        url = f"{base}/{app_path}/requests/{request_id}"
        return Reply(200, {
            "status": "IN_QUEUE", "request_id": request_id, "response_url": url,
            "status_url": f"{url}/status", "cancel_url": f"{url}/cancel",
            "logs": None, "metrics": {}, "queue_position": ahead,
        })

    @staticmethod
    def _scripted_failure(job: Job) -> Failure | None:
        if job.has("model_error"):
            return CONTENT_POLICY
        if job.has("runner_error"):
            return RUNNER_DISCONNECTED
        return None

    def _job(self, app_path: str, request_id: str) -> Job | None:
        job = self._jobs.get(request_id)
        return job if job is not None and job.app_path == app_path else None

    @staticmethod
    def _phase(job: Job, now: float) -> str:
        done_at = job.done_at
        if done_at is not None and now >= done_at:
            return "COMPLETED"
        return "IN_QUEUE" if now < job.started else "IN_PROGRESS"

    def request_status(self, app_path: str, request_id: str, *, logs: bool = False) -> Reply:
        """GET .../requests/{id}/status: computed from timestamps, no per-job timers."""
        job = self._job(app_path, request_id)
        with self._lock:
            self._totals["status_calls"] += 1
            if job is not None:
                job.status_calls += 1
        if job is None or job.has("status_404"):
            return Reply(404, {"detail": "Request not found"})
        if job.has("slow_status"):
            value = job.param("slow_status")
            time.sleep(float(value) if value else self.slow_status_seconds)
        now = time.monotonic()
        phase = self._phase(job, now)
        response_url = f"{job.base}/{job.app_path}/requests/{request_id}"
        if phase == "IN_QUEUE":
            left = (job.started - now) / self.queue_seconds if self.queue_seconds > 0 else 0.0
            position = min(job.ahead, math.ceil(job.ahead * left))
            return Reply(202, {"status": "IN_QUEUE", "request_id": request_id,
                               "queue_position": position, "response_url": response_url})
        if phase == "IN_PROGRESS":
            return Reply(202, {"status": "IN_PROGRESS", "request_id": request_id,
                               "response_url": response_url,
                               "logs": self._logs(job, now) if logs else None})
        done_at = job.done_at or now
        payload: dict[str, Any] = {
            "status": "COMPLETED", "request_id": request_id, "response_url": response_url,
            "logs": self._logs(job, done_at) if logs else None,
            "metrics": ({"inference_time": round(done_at - job.started, 3)}
                        if done_at > job.started else {}),
        }
        if job.failure is not None:
            payload["error"] = job.failure.message
            payload["error_type"] = job.failure.error_type
        return Reply(200, payload)

    @staticmethod
    def _logs(job: Job, until: float) -> list[dict[str, str]]:
        # A sliding window like fal's: the last few one-second progress lines.
        offset = time.time() - time.monotonic()
        elapsed = max(0, int(until - job.started))
        lines = []
        for second in range(max(0, elapsed - 4), elapsed + 1):
            stamp = time.gmtime(job.started + second + offset)
            lines.append({"message": "Generating..." if second == 0 else
                          f"Generating... {second}s elapsed", "level": "INFO",
                          "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", stamp)})
        return lines

    def _video(self, job: Job) -> dict[str, Any]:
        size = self.huge_file_bytes if job.has("huge_file") else self._file_size(job)
        return {"url": f"{job.base}/files/{job.request_id}/output.mp4",
                "content_type": "video/mp4", "file_name": "output.mp4", "file_size": size}

    def _file_size(self, job: Job) -> int:
        return job.video_size if self.render else len(self._stock_video)

    def request_result(self, app_path: str, request_id: str) -> Reply:
        """GET response_url: 200 output, the failure's own answer, or 400 while unfinished."""
        job = self._job(app_path, request_id)
        with self._lock:
            self._totals["result_calls"] += 1
            if job is not None:
                job.result_calls += 1
        if job is None:
            return Reply(404, {"detail": "Request not found"})
        if self._phase(job, time.monotonic()) != "COMPLETED":
            return Reply(400, {"detail": "Request is still in progress"})
        if job.failure is not None:
            failure = job.failure
            return Reply(failure.http_status, failure.result_body(), failure.result_headers())
        if job.has("result_500"):
            return Reply(504, REQUEST_TIMEOUT.result_body(), REQUEST_TIMEOUT.result_headers())
        return Reply(200, {"video": self._video(job)})

    def cancel_request(self, app_path: str, request_id: str) -> Reply:
        """PUT cancel_url: 202 and the job ends as cancelled, 400 if already done, 404 unknown."""
        job = self._job(app_path, request_id)
        now = time.monotonic()
        with self._lock:
            self._totals["cancels"] += 1
            if job is None:
                reply, outcome = Reply(404, {"status": "NOT_FOUND"}), "not_found"
            elif self._phase(job, now) == "COMPLETED":
                reply, outcome = Reply(400, {"status": "ALREADY_COMPLETED"}), "already_completed"
            else:
                reply = Reply(202, {"status": "CANCELLATION_REQUESTED"})
                outcome = "ignored" if job.has("ignore_cancel") else "cancelled"
                if outcome == "cancelled":
                    job.failure = CANCELLED
                    job.done_at = now
            self._cancels.append({"time": time.time(), "request_id": request_id,
                                  "status_code": reply.status, "outcome": outcome})
        if outcome == "cancelled":
            if self._journal is not None:
                self._journal.update(request_id, cancelled=True)
            log.info("sandbox cancelled %s", request_id)
            self._finish(request_id)
        return reply

    def open_download(self, request_id: str, *, direct: bool = False,
                      head: bool = False) -> Download:
        """GET /files/{id}/output.mp4, misbehaving as the job's scenario says."""
        job = self._jobs.get(request_id)
        now = time.monotonic()
        if job is None or job.failure is not None or self._phase(job, now) != "COMPLETED":
            body = b'{"detail":"Not Found"}'
            return Download(404, [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))], [body])
        with self._lock:
            if not head:
                job.downloads += 1
                self._totals["downloads"] += 1
            attempt = job.downloads
        download, mode = self._plan_download(job, attempt, direct)
        if head:
            download.chunks, download.cut, mode = [], False, "head"
        with self._lock:
            self._downloads.append({"time": time.time(), "request_id": request_id,
                                    "attempt": attempt, "mode": mode})
        return download

    def _plan_download(self, job: Job, attempt: int, direct: bool) -> tuple[Download, str]:
        if job.has("private_redirect"):
            target = job.param("private_redirect") or self.private_redirect_url
            return Download(302, [("Location", target), ("Content-Length", "0")], []), "redirect"
        if job.has("redirect") and not direct:
            target = f"{job.base}/files/{job.request_id}/output.mp4?direct=1"
            return Download(302, [("Location", target), ("Content-Length", "0")], []), "redirect"
        if job.has("wrong_content_type"):
            return Download(200, [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(_HTML)))], [_HTML]), "html"
        size = self._file_size(job)
        if job.has("huge_file"):
            total = self.huge_file_bytes
            return Download(200, [("Content-Type", "video/mp4"),
                                  ("Content-Length", str(total))],
                            self._padded(job, total)), "huge"
        if job.has("huge_file_chunked"):
            return Download(200, [("Content-Type", "video/mp4")],
                            self._padded(job, self.huge_chunked_bytes)), "huge_chunked"
        headers = [("Content-Type", "video/mp4"), ("Content-Length", str(size))]
        if job.has("cut_download") and attempt == 1:
            half = self._read_video(job)[: size // 2]
            return Download(200, headers, [half], cut=True), "cut"
        return Download(200, headers, self._video_chunks(job)), "full"

    def _read_video(self, job: Job) -> bytes:
        if not self.render:
            return self._stock_video
        return Path(job.video_path).read_bytes() if job.video_path else b""

    def _video_chunks(self, job: Job) -> Iterator[bytes]:
        if not self.render:
            yield self._stock_video
            return
        if job.video_path is None:
            return
        with open(job.video_path, "rb") as handle:
            while chunk := handle.read(256 * 1024):
                yield chunk

    def _padded(self, job: Job, total: int) -> Iterator[bytes]:
        # The real clip first (so sniffers see an MP4), then zeros up to `total` bytes.
        head = self._read_video(job)[:total]
        yield head
        sent = len(head)
        while sent < total:
            chunk = _ZEROS if total - sent >= MIB else _ZEROS[: total - sent]
            sent += len(chunk)
            yield chunk

    # ----------------------------------------------------------------- background work

    def _restore(self, journal: Journal) -> None:
        """Take back the requests accepted before a restart: a rendered one is done, a
        cancelled one stays cancelled, any other starts again (fetch, render, finish)."""
        now = time.monotonic()
        restored = 0
        for request_id, entry in journal.entries():
            if request_id in self._jobs:
                continue
            job = Job(request_id, entry["endpoint"], entry["app_path"], entry["base"],
                      float(entry["seconds"]), entry.get("image_url") if self.render else None,
                      entry.get("webhook"), entry.get("scenarios"), now, now,
                      now + self.run_seconds, 0)
            video = self._workdir / f"{request_id}.mp4" if self._workdir else None
            if entry.get("cancelled"):
                job.failure, job.done_at, job.finished = CANCELLED, now, True
            elif self.render and entry.get("video_size") and video and video.exists():
                job.video_path, job.video_size = str(video), int(entry["video_size"])
                job.started = job.due = job.done_at = now
            elif not self.render:
                job.failure = self._scripted_failure(job)
                job.done_at = None if job.has("never_finish") else job.due
            with self._lock:
                self._jobs[request_id] = job
            restored += 1
            if job.done_at is None and self.render:
                self._schedule(now, partial(self._start_render, request_id))
            elif job.webhook and job.done_at is not None and not job.finished:
                self._schedule(job.done_at, partial(self._finish, request_id))
        if restored:
            log.info("sandbox restored %s request(s) from %s", restored, journal.root)

    def _schedule(self, when: float, action: Callable[[], None]) -> None:
        with self._wake:
            heapq.heappush(self._heap, (when, next(self._seq), action))
            if self._heap[0][2] is action:
                self._wake.notify()

    def _run_scheduler(self) -> None:
        """One thread runs every timed step (render starts, completions, webhook retries)."""
        while True:
            with self._wake:
                while not self._stopping:
                    if not self._heap:
                        self._wake.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._wake.wait(delay)
                if self._stopping:
                    return
                action = heapq.heappop(self._heap)[2]
            try:
                action()
            except RuntimeError:  # a pool shut down under us while stopping
                log.debug("sandbox scheduler step skipped", exc_info=True)
            except Exception:
                log.exception("sandbox scheduler step failed")

    def _start_render(self, request_id: str) -> None:
        if self._render_pool is not None and request_id in self._jobs:
            self._render_pool.submit(self._render_job, request_id)

    def _render_job(self, request_id: str) -> None:
        """Fetch image_url like fal, render the clip, then settle when the job is due."""
        job = self._jobs.get(request_id)
        if job is None or job.failure is CANCELLED or self._workdir is None:
            return
        url, job.image_url = job.image_url or "", None
        failure: Failure | None = None
        path = self._workdir / f"{request_id}.mp4"
        size = 0
        try:
            image = render.fetch_image(url, timeout=self.image_timeout,
                                       max_bytes=self.max_image_bytes)
            self._record_fetch(request_id, url, None)
            failure = self._scripted_failure(job)
            if failure is None:
                size = render.render_clip(image, path, seconds=job.seconds, width=self.width,
                                          fps=self.fps)
        except render.FetchError as exc:
            self._record_fetch(request_id, url, str(exc))
            failure = FETCH_FAILED
        except render.DecodeError as exc:
            log.info("sandbox %s: %s", request_id, exc)
            failure = DECODE_FAILED
        except Exception:
            log.exception("sandbox render of %s failed", request_id)
            failure = RUNNER_DISCONNECTED
        now = time.monotonic()
        with self._lock:
            if job.failure is CANCELLED or self._jobs.get(request_id) is not job:
                path.unlink(missing_ok=True)
                return
            job.failure = failure
            if failure is None:
                job.video_path, job.video_size = str(path), size
                if self._journal is not None:
                    self._journal.update(request_id, video_size=size)
            job.done_at = None if job.has("never_finish") else max(job.due, now)
            done_at = job.done_at
        if done_at is not None:
            self._schedule(done_at, partial(self._finish, request_id))

    def _record_fetch(self, request_id: str, url: str, error: str | None) -> None:
        with self._lock:
            self._fetches.append({"time": time.time(), "request_id": request_id,
                                  "url": _short(url), "ok": error is None, "error": error})

    def _finish(self, request_id: str) -> None:
        """Run completion side effects once the job is due: its webhook(s)."""
        job = self._jobs.get(request_id)
        if job is None:
            return
        with self._lock:
            done_at = job.done_at
            if job.finished or done_at is None or time.monotonic() < done_at:
                return
            job.finished = True
        if not job.webhook or job.has("no_webhook"):
            return
        body = json.dumps(self._webhook_payload(job)).encode()
        copies = 2 if job.has("duplicate_webhooks") else 1
        for copy in range(1, copies + 1):
            delivery = _Delivery(request_id, job.webhook, body, self._generation, copy=copy)
            self._schedule(time.monotonic() + 0.25 * (copy - 1),
                           partial(self._send_webhook, delivery))

    def _webhook_payload(self, job: Job) -> dict[str, Any]:
        rid = job.request_id
        if job.has("webhook_payload_error"):
            return {"request_id": rid, "gateway_request_id": rid, "status": "ERROR",
                    "payload": None, "payload_error": _PAYLOAD_ERROR}
        failure = job.failure
        if failure is None and job.has("result_500"):
            failure = REQUEST_TIMEOUT
        if failure is None:
            return {"request_id": rid, "gateway_request_id": rid, "status": "OK",
                    "payload": {"video": self._video(job)}, "error": None}
        return {"request_id": rid, "gateway_request_id": rid, "status": "ERROR",
                "error": f"Invalid status code: {failure.http_status}",
                "payload": failure.result_body()}

    def _send_webhook(self, delivery: _Delivery) -> None:
        if self._webhook_pool is not None:
            self._webhook_pool.submit(self._deliver, delivery)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _deliver(self, delivery: _Delivery) -> None:
        """POST one signed webhook; on failure retry later with doubling backoff."""
        if delivery.generation != self._generation:
            return
        delivery.attempt += 1
        headers = self.signed_webhook_headers(delivery.request_id, delivery.body)
        code: int | None = None
        error: str | None = None
        try:
            response = self._session().post(delivery.url, data=delivery.body, headers=headers,
                                            timeout=(3.0, self.webhook_timeout),
                                            allow_redirects=False)
            code = response.status_code
            response.close()
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            if delivery.generation != self._generation:
                return  # reset() happened while this was in flight
            self._totals["webhook_attempts"] += 1
            self._webhooks.append({
                "time": time.time(), "request_id": delivery.request_id, "url": delivery.url,
                "copy": delivery.copy, "attempt": delivery.attempt, "status_code": code,
                "error": error,
            })
        if code is not None and 200 <= code < 300:
            return
        if delivery.attempt <= self.webhook_retries and not self._stopping:
            wait = self.webhook_backoff * 2 ** (delivery.attempt - 1)
            log.info("sandbox webhook for %s failed (%s), retrying in %.2fs",
                     delivery.request_id, code or error, wait)
            self._schedule(time.monotonic() + wait, partial(self._send_webhook, delivery))
        else:
            log.warning("sandbox webhook for %s gave up after %d attempts",
                        delivery.request_id, delivery.attempt)
