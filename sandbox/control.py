"""The test-facing control API: queued fault scenarios, and the /_sandbox/ endpoints over HTTP."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sandbox.jobs import SCENARIOS, UnknownScenario
from sandbox.server import NOT_FOUND, json_response, read_body

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from sandbox.provider import SandboxProvider


class Scenarios:
    """Provider-wide scenarios for the next submits whose prompt has no marker, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, str | None]] = deque()

    def queue(self, name: str, count: int = 1, value: str | None = None) -> None:
        """Apply scenario `name` to the next `count` submits whose prompt has no marker."""
        if name not in SCENARIOS:
            raise UnknownScenario(name)
        with self._lock:
            self._queue.extend([(name, value)] * count)

    def clear(self) -> None:
        """Forget queued scenarios."""
        with self._lock:
            self._queue.clear()

    def queued(self) -> list[str]:
        """Scenarios waiting for the next submits, in order (`name` or `name=value`)."""
        with self._lock:
            return [name if value is None else f"{name}={value}" for name, value in self._queue]

    def take(self) -> tuple[str, str | None] | None:
        """The next queued scenario and its value, removed; None if there is none."""
        with self._lock:
            return self._queue.popleft() if self._queue else None


class ControlEndpoints:
    """`/_sandbox/...` (a loopback tool: no authentication); each calls the provider's method."""

    def __init__(self, provider: SandboxProvider) -> None:
        self._provider = provider

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse, method: str,
                 parts: list[str]) -> Iterable[bytes]:
        """Answer `/_sandbox/<parts>`."""
        provider = self._provider
        route = "/".join(parts)
        respond = json_response
        if route == "health" and method == "GET":
            return respond(start_response, 200, {"ok": True, "base_url": provider.base_url})
        if route == "observations" and method == "GET":
            return respond(start_response, 200, provider.observations())
        if route == "requests" and method == "GET":
            return respond(start_response, 200, provider.requests_info())
        if len(parts) == 2 and parts[0] == "requests" and method == "GET":
            info = provider.request_info(parts[1])
            return respond(start_response, 200 if info else 404, info or NOT_FOUND)
        if route == "reset" and method == "POST":
            provider.reset()
            return respond(start_response, 200, {"ok": True})
        if route == "jwks" and method == "GET":
            return respond(start_response, 200, provider.jwks())
        if route == "scenarios":
            if method == "GET":
                return respond(start_response, 200, {"available": SCENARIOS,
                                                     "queued": provider.queued_scenarios()})
            if method == "DELETE":
                provider.clear_scenarios()
                return respond(start_response, 200, {"queued": []})
            if method == "POST":
                return self._queue_scenario(environ, start_response)
        return respond(start_response, 404, NOT_FOUND)

    def _queue_scenario(self, environ: WSGIEnvironment,
                        start_response: StartResponse) -> list[bytes]:
        try:
            data = json.loads(read_body(environ) or b"{}")
            name = str(data["name"])
            count = int(data.get("count", 1))
            value = data.get("value")
            self._provider.queue_scenario(name, count, None if value is None else str(value))
        except UnknownScenario as exc:
            return json_response(start_response, 422, {"detail": f"Unknown scenario '{exc}'"})
        except (ValueError, KeyError, TypeError, AttributeError):
            return json_response(start_response, 422,
                                 {"detail": 'Expected {"name": str, "count": int, "value": str?}'})
        return json_response(start_response, 200, {"queued": self._provider.queued_scenarios()})
