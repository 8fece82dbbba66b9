"""The sandbox provider: fal's queue protocol served locally, with real MP4s and scripted faults.

`SandboxProvider` is the one object a test holds: it builds the parts, starts and stops
them, signs webhooks, and answers for them. The parts: `protocol` (submit, status, result,
cancel), `progress` (render, completion, restart), `scheduler` (timed steps), `webhooks`,
`files` (downloads), `control` (fault scenarios, `/_sandbox/`), `observations` (what tests
read back), `server` and `wsgi` (HTTP), all over one shared `state`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from werkzeug.serving import BaseWSGIServer

from sandbox import render
from sandbox.config import SandboxConfig
from sandbox.control import ControlEndpoints, Scenarios
from sandbox.files import Download, Files
from sandbox.http11 import KeepAliveServer
from sandbox.journal import Journal
from sandbox.observations import Observations
from sandbox.progress import JobRunner
from sandbox.protocol import QueueApi, Reply
from sandbox.scheduler import Scheduler
from sandbox.server import listen
from sandbox.signing import public_jwk, sign_webhook
from sandbox.state import State
from sandbox.webhooks import Webhooks
from sandbox.wsgi import SandboxApp

log = logging.getLogger(__name__)


class SandboxProvider:
    """A local fal queue: submit/status/result/cancel, files, JWKS, webhooks, faults, logs."""

    def __init__(self, config: SandboxConfig | None = None, /, **options: Any) -> None:
        """`SandboxProvider(SandboxConfig(...))`, or the config's fields as keywords."""
        config = replace(config or SandboxConfig(), **options)
        journal = Journal(config.state_dir) if config.state_dir is not None else None
        state = self._state = State(config, journal)
        self._keys = [Ed25519PrivateKey.generate()]
        self._scheduler = Scheduler()
        self._observed = Observations(state)
        self._scenarios = Scenarios()
        self._files = Files(state, self._observed)
        self._webhooks = Webhooks(state, self._scheduler, self._files, self._observed,
                                  self.signed_webhook_headers)
        self._runner = JobRunner(state, self._scheduler, self._observed, self._webhooks)
        self._queue = QueueApi(state, self._observed, self._scenarios, self._files, self._runner)
        self._app = SandboxApp(self._queue, self._files, self.jwks, ControlEndpoints(self),
                               self._observed.count_connection)
        self._server: BaseWSGIServer | KeepAliveServer | None = None
        self._http: threading.Thread | None = None

    @property
    def config(self) -> SandboxConfig:
        """How this provider behaves."""
        return self._state.config

    @property
    def queue_seconds(self) -> float:
        """Seconds a new job stays IN_QUEUE (settable: a test may lengthen the queue)."""
        return self._state.config.queue_seconds

    @queue_seconds.setter
    def queue_seconds(self, seconds: float) -> None:
        self._state.config = replace(self._state.config, queue_seconds=seconds)

    # ----------------------------------------------------------------- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on host:port (0 = a free port) from daemon threads; returns once listening."""
        state, config, journal = self._state, self._state.config, self._state.journal
        state.workdir = (journal.files if journal is not None
                         else Path(tempfile.mkdtemp(prefix="vj-sandbox-")))
        if not config.render:
            # One real clip made up front: thousands of benchmark jobs all serve these bytes.
            stock = state.workdir / "stock.mp4"
            render.render_clip(render.make_png(config.width, config.width * 9 // 16), stock,
                               seconds=1.0, width=config.width, fps=config.fps)
            state.stock_video = stock.read_bytes()
        self._runner.start()
        self._webhooks.start()
        wanted = port or (journal.saved_port() if journal is not None else 0)
        try:
            server = listen(host, wanted, self._app, keep_alive=config.keep_alive)
        except OSError:
            if not wanted or port:
                raise
            log.warning("sandbox port %s is taken; stored status URLs of earlier requests "
                        "will not answer", wanted)
            server = listen(host, 0, self._app, keep_alive=config.keep_alive)
        self._server = server
        if journal is not None:
            journal.save_port(server.server_port)
        bound = "127.0.0.1" if host in ("0.0.0.0", "") else host
        state.url = config.public_url or f"http://{bound}:{server.server_port}"
        self._http = threading.Thread(target=partial(server.serve_forever, poll_interval=0.05),
                                      name="sandbox-http", daemon=True)
        self._http.start()
        self._scheduler.start()
        if journal is not None:
            self._runner.restore(journal)
        log.info("sandbox provider listening on %s (render=%s, queue=%ss, run=%ss)",
                 state.url, config.render, config.queue_seconds, config.run_seconds)

    def stop(self) -> None:
        """Stop serving, drop pending work and delete rendered files."""
        self._scheduler.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._runner.stop()
        self._webhooks.stop()
        if self._http is not None:
            self._http.join(timeout=5)
            self._http = None
        self._scheduler.join(timeout=5)
        state = self._state
        if state.workdir is not None:
            if state.journal is None:  # a state directory keeps its rendered files
                shutil.rmtree(state.workdir, ignore_errors=True)
            state.workdir = None
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
        return self._state.url

    @property
    def queue_url(self) -> str:
        """What FAL_QUEUE_URL should be set to (same as base_url)."""
        return self._state.url

    @property
    def jwks_url(self) -> str:
        """What FAL_JWKS_URL should be set to."""
        return f"{self._state.url}/.well-known/jwks.json"

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
        user_id = self._state.config.user_id
        return {
            "Content-Type": "application/json",
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": user_id,
            "X-Fal-Webhook-Timestamp": str(stamp),
            "X-Fal-Webhook-Signature": sign_webhook(self.private_key, request_id, user_id,
                                                    stamp, body),
        }

    # ----------------------------------------------------------------- control

    def queue_scenario(self, name: str, count: int = 1, value: str | None = None) -> None:
        """Apply scenario `name` to the next `count` submits whose prompt has no marker."""
        self._scenarios.queue(name, count, value)

    def clear_scenarios(self) -> None:
        """Forget queued provider-wide scenarios."""
        self._scenarios.clear()

    def queued_scenarios(self) -> list[str]:
        """Scenarios waiting for the next submits, in order."""
        return self._scenarios.queued()

    def reset(self) -> None:
        """Forget every job, log, queued scenario and refused submit; delete rendered files."""
        state = self._state
        with state.lock:
            paths = [job.video_path for job in state.jobs.values() if job.video_path]
            state.jobs.clear()
            state.generation += 1  # first: a webhook in flight now is not recorded below
        self._queue.forget()
        self._scenarios.clear()
        self._observed.clear()
        for path in paths:
            Path(path).unlink(missing_ok=True)

    # ----------------------------------------------------------------- observations

    def observations(self) -> dict[str, Any]:
        """Everything observed, in one JSON-ready document (also GET /_sandbox/observations)."""
        return self._observed.snapshot(self._scenarios.queued())

    def submits(self) -> list[dict[str, Any]]:
        """Every submit received: time, endpoint, webhook, headers, body, status, request_id."""
        return self._observed.submits()

    def cancels(self) -> list[dict[str, Any]]:
        """Every cancel call: time, request_id, status code, outcome."""
        return self._observed.cancels()

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every webhook attempt: time, request_id, url, copy, attempt, status_code, error."""
        return self._observed.webhook_deliveries()

    def downloads(self) -> list[dict[str, Any]]:
        """Every video download started: time, request_id, attempt, mode."""
        return self._observed.downloads()

    def image_fetches(self) -> list[dict[str, Any]]:
        """Every image_url fetch: time, request_id, url (shortened), ok, error."""
        return self._observed.image_fetches()

    def status_call_count(self, request_id: str) -> int:
        """Status calls received for one request (0 if unknown)."""
        return self._observed.status_call_count(request_id)

    def status_call_counts(self) -> dict[str, int]:
        """Status calls per request id, for requests that got any."""
        return self._observed.status_call_counts()

    def request_info(self, request_id: str) -> dict[str, Any] | None:
        """What the sandbox knows about one request, or None."""
        return self._observed.request_info(request_id)

    def requests_info(self) -> list[dict[str, Any]]:
        """request_info for every request, oldest first."""
        return self._observed.requests_info()

    def wait_for_webhooks(self, count: int, timeout: float = 10.0, *,
                          ok_only: bool = True) -> list[dict[str, Any]]:
        """Block until `count` (2xx, unless ok_only=False) deliveries happened; return them all."""
        return self._observed.wait_for_webhooks(count, timeout, ok_only=ok_only)

    # ----------------------------------------------------------------- protocol, in-process

    def submit_request(self, endpoint: str, raw_body: bytes, *, webhook: str | None = None,
                       query: str = "", host: str | None = None,
                       headers: dict[str, str] | None = None) -> Reply:
        """POST {queue}/{endpoint_id} without HTTP (see QueueApi.submit_request)."""
        return self._queue.submit_request(endpoint, raw_body, webhook=webhook, query=query,
                                          host=host, headers=headers)

    def request_status(self, app_path: str, request_id: str, *, logs: bool = False) -> Reply:
        """GET .../requests/{id}/status without HTTP."""
        return self._queue.request_status(app_path, request_id, logs=logs)

    def request_result(self, app_path: str, request_id: str) -> Reply:
        """GET response_url without HTTP."""
        return self._queue.request_result(app_path, request_id)

    def cancel_request(self, app_path: str, request_id: str) -> Reply:
        """PUT cancel_url without HTTP."""
        return self._queue.cancel_request(app_path, request_id)

    def open_download(self, request_id: str, *, direct: bool = False,
                      head: bool = False) -> Download:
        """GET /files/{id}/output.mp4 without HTTP."""
        return self._files.open_download(request_id, direct=direct, head=head)
