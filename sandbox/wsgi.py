"""WSGI routing for the sandbox provider: fal's queue URLs, files, JWKS and the /_sandbox/ API."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from sandbox.jobs import SCENARIOS, UnknownScenario

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from sandbox.provider import Download, Reply, SandboxProvider

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # a 20 MB image as a data: URI is ~27 MB
_STATUS = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
_STATUS[499] = "499 Client Closed Request"
_UNAUTHORIZED = {"detail": "Missing or invalid credentials: use 'Authorization: Key <FAL_KEY>'"}
_NOT_FOUND = {"detail": "Not Found"}


def _json(start_response: StartResponse, status: int, payload: Any,
          headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = b"" if payload is None else json.dumps(payload).encode()
    start_response(_STATUS.get(status, f"{status} Unknown"),
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    *headers])
    return [body]


def _read_body(environ: WSGIEnvironment) -> bytes | None:
    """The request body, or None when it exceeds MAX_BODY_BYTES."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        return None
    stream = environ["wsgi.input"]
    if length:
        return bytes(stream.read(length))
    if environ.get("wsgi.input_terminated"):  # chunked upload
        data = stream.read(MAX_BODY_BYTES + 1)
        return None if len(data) > MAX_BODY_BYTES else bytes(data)
    return b""


def _cut_after(chunks: Iterable[bytes], sock: socket.socket | None) -> Iterator[bytes]:
    # Send what we have, then drop the TCP connection: the client sees fewer bytes than
    # Content-Length promised, like a CDN connection dying mid-transfer.
    yield from chunks
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class SandboxApp:
    """The WSGI callable; a hand-rolled router keeps status polling cheap."""

    def __init__(self, provider: SandboxProvider) -> None:
        self.provider = provider

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._route(environ, start_response)
        except Exception:
            log.exception("sandbox request failed: %s %s", environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"))
            return _json(start_response, 500, {"detail": "Internal Server Error"})

    def _route(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO") or "/"
        method: str = environ["REQUEST_METHOD"]
        parts = path.strip("/").split("/")
        if method == "POST" and not path.startswith("/_sandbox/"):
            return self._submit(environ, start_response, path.strip("/"))
        if len(parts) >= 4 and parts[2] == "requests":
            return self._queue_call(environ, start_response, method, parts)
        if parts[0] == "files" and len(parts) == 3 and method in ("GET", "HEAD"):
            return self._download(environ, start_response, parts[1], method == "HEAD")
        if path == "/.well-known/jwks.json" and method == "GET":
            return _json(start_response, 200, self.provider.jwks(),
                         [("Cache-Control", "max-age=300")])
        if parts[0] == "_sandbox":
            return self._control(environ, start_response, method, parts[1:])
        return _json(start_response, 404, _NOT_FOUND)

    def _reply(self, environ: WSGIEnvironment, start_response: StartResponse,
               reply: Reply) -> Iterable[bytes]:
        if reply.disconnect:
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            # Headers go to a dead socket: werkzeug sees a dropped connection and stays quiet.
            start_response(_STATUS[200], [("Content-Length", "0")])
            return []
        return _json(start_response, reply.status, reply.payload, reply.headers)

    def _submit(self, environ: WSGIEnvironment, start_response: StartResponse,
                endpoint: str) -> Iterable[bytes]:
        provider = self.provider
        if not provider.authorized(environ.get("HTTP_AUTHORIZATION")):
            return _json(start_response, 401, _UNAUTHORIZED)
        raw = _read_body(environ)
        if raw is None:
            return _json(start_response, 413, {"detail": "Request body too large"})
        query = environ.get("QUERY_STRING", "")
        webhook = None
        if query:
            values = parse_qs(query).get("fal_webhook")
            webhook = values[0] if values else None
        headers = {key[5:].replace("_", "-").title(): str(environ[key])
                   for key in environ if key.startswith("HTTP_X_FAL_")}
        reply = provider.submit_request(endpoint, raw, webhook=webhook, query=query,
                                        host=environ.get("HTTP_HOST"), headers=headers)
        return self._reply(environ, start_response, reply)

    def _queue_call(self, environ: WSGIEnvironment, start_response: StartResponse,
                    method: str, parts: list[str]) -> Iterable[bytes]:
        provider = self.provider
        app_path = f"{parts[0]}/{parts[1]}"
        request_id = parts[3]
        tail = parts[4:]
        if not provider.authorized(environ.get("HTTP_AUTHORIZATION")):
            return _json(start_response, 401, _UNAUTHORIZED)
        if not tail and method == "GET":
            reply = provider.request_result(app_path, request_id)
        elif tail == ["status"] and method == "GET":
            query = environ.get("QUERY_STRING", "")
            logs = "logs=1" in query or "logs=true" in query
            reply = provider.request_status(app_path, request_id, logs=logs)
        elif tail == ["cancel"] and method == "PUT":
            reply = provider.cancel_request(app_path, request_id)
        elif not tail or tail in (["status"], ["cancel"]):
            return _json(start_response, 405, {"detail": "Method Not Allowed"})
        else:
            return _json(start_response, 404, _NOT_FOUND)
        return self._reply(environ, start_response, reply)

    def _download(self, environ: WSGIEnvironment, start_response: StartResponse,
                  request_id: str, head: bool) -> Iterable[bytes]:
        direct = "direct=1" in environ.get("QUERY_STRING", "")
        download: Download = self.provider.open_download(request_id, direct=direct, head=head)
        start_response(_STATUS[download.status], download.headers)
        if download.cut:
            return _cut_after(download.chunks, environ.get("werkzeug.socket"))
        return download.chunks

    def _control(self, environ: WSGIEnvironment, start_response: StartResponse, method: str,
                 parts: list[str]) -> Iterable[bytes]:
        """The test-facing /_sandbox/ API (loopback tool: no authentication)."""
        provider = self.provider
        route = "/".join(parts)
        respond: Callable[..., list[bytes]] = _json
        if route == "health" and method == "GET":
            return respond(start_response, 200, {"ok": True, "base_url": provider.base_url})
        if route == "observations" and method == "GET":
            return respond(start_response, 200, provider.observations())
        if route == "requests" and method == "GET":
            return respond(start_response, 200, provider.requests_info())
        if len(parts) == 2 and parts[0] == "requests" and method == "GET":
            info = provider.request_info(parts[1])
            return respond(start_response, 200 if info else 404, info or _NOT_FOUND)
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
        return respond(start_response, 404, _NOT_FOUND)

    def _queue_scenario(self, environ: WSGIEnvironment,
                        start_response: StartResponse) -> list[bytes]:
        try:
            data = json.loads(_read_body(environ) or b"{}")
            name = str(data["name"])
            count = int(data.get("count", 1))
            value = data.get("value")
            self.provider.queue_scenario(name, count, None if value is None else str(value))
        except UnknownScenario as exc:
            return _json(start_response, 422, {"detail": f"Unknown scenario '{exc}'"})
        except (ValueError, KeyError, TypeError, AttributeError):
            return _json(start_response, 422,
                         {"detail": 'Expected {"name": str, "count": int, "value": str?}'})
        return _json(start_response, 200, {"queued": self.provider.queued_scenarios()})
