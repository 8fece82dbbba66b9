"""A webhook receiver for the tests: a real HTTP server on 127.0.0.1 that records every
request and answers from a per-path script (a status, a redirect, or hanging)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def verify(self, secret: str) -> Any:
        """The payload, if the reference library accepts the signature (else it raises)."""
        return Webhook(secret).verify(self.body, self.headers)


# An action: an HTTP status, ("redirect", location), or ("hang", seconds) before a 200.
Action = int | tuple[str, Any]


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._scripts: dict[str, deque[Action]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                        time.time()))
                    script = receiver._scripts.get(self.path)
                    action: Action = script.popleft() if script else 200
                if isinstance(action, tuple) and action[0] == "hang":
                    receiver._stop.wait(float(action[1]))
                    action = 200
                try:
                    if isinstance(action, tuple) and action[0] == "redirect":
                        self.send_response(302)
                        self.send_header("Location", str(action[1]))
                    else:
                        self.send_response(action if isinstance(action, int) else 200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up (timeout test)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *actions: Action) -> None:
        with self._lock:
            self._scripts[path] = deque(actions)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.at(path))} of {count} deliveries arrived")

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
