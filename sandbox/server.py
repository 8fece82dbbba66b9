"""The listening HTTP server and the WSGI plumbing every route shares (JSON answers, bodies)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.http11 import MAX_BODY_BYTES, KeepAliveHandler, KeepAliveServer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

STATUS = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
STATUS[499] = "499 Client Closed Request"
NOT_FOUND = {"detail": "Not Found"}


def json_response(start_response: StartResponse, status: int, payload: Any,
                  headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """Answer `payload` as JSON (an empty body for None) with a Content-Length."""
    body = b"" if payload is None else json.dumps(payload).encode()
    start_response(STATUS.get(status, f"{status} Unknown"),
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    *headers])
    return [body]


def read_body(environ: WSGIEnvironment) -> bytes | None:
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


def _count_connection(server: Any) -> None:
    # Both servers keep the WSGI app as `.app`; the sandbox's app counts connections.
    on_connection: Callable[[], None] | None = getattr(getattr(server, "app", None),
                                                       "on_connection", None)
    if on_connection is not None:
        on_connection()


class _Handler(BaseHTTPRequestHandler):
    """What both handlers add: per-request lines only at DEBUG (INFO lines would dominate
    benchmark CPU), and a count of every TCP connection accepted."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s", self.command, self.path, code)

    def setup(self) -> None:
        super().setup()
        _count_connection(self.server)


class _QuietHandler(_Handler, WSGIRequestHandler):
    """Werkzeug's handler: it closes every connection after one answer (`keep_alive=False`)."""


class _KeepAliveHandler(_Handler, KeepAliveHandler):
    """HTTP/1.1 with persistent connections, as fal's queue serves them (the default)."""


def listen(host: str, port: int, app: WSGIApplication, *,
           keep_alive: bool) -> BaseWSGIServer | KeepAliveServer:
    """A threaded server bound to host:port (0 = a free one), not yet serving; it calls
    `app.on_connection()`, if the app has one, for every TCP connection accepted."""
    if keep_alive:
        return KeepAliveServer((host, port), _KeepAliveHandler, app)
    return make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
