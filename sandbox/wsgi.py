"""WSGI routing for the sandbox provider: fal's queue URLs, its files and JWKS, then /_sandbox/."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from sandbox.server import NOT_FOUND, STATUS, json_response, read_body

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from sandbox.control import ControlEndpoints
    from sandbox.files import Files
    from sandbox.protocol import QueueApi, Reply

log = logging.getLogger(__name__)

_UNAUTHORIZED = {"detail": "Missing or invalid credentials: use 'Authorization: Key <FAL_KEY>'"}


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

    def __init__(self, queue: QueueApi, files: Files, jwks: Callable[[], dict[str, Any]],
                 control: ControlEndpoints, on_connection: Callable[[], None]) -> None:
        self.queue = queue
        self.files = files
        self.jwks = jwks
        self.control = control
        self.on_connection = on_connection  # the server calls it for each TCP connection

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._route(environ, start_response)
        except Exception:
            log.exception("sandbox request failed: %s %s", environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"))
            return json_response(start_response, 500, {"detail": "Internal Server Error"})

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
            return json_response(start_response, 200, self.jwks(),
                                 [("Cache-Control", "max-age=300")])
        if parts[0] == "_sandbox":
            return self.control(environ, start_response, method, parts[1:])
        return json_response(start_response, 404, NOT_FOUND)

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
            start_response(STATUS[200], [("Content-Length", "0")])
            return []
        return json_response(start_response, reply.status, reply.payload, reply.headers)

    def _submit(self, environ: WSGIEnvironment, start_response: StartResponse,
                endpoint: str) -> Iterable[bytes]:
        queue = self.queue
        if not queue.authorized(environ.get("HTTP_AUTHORIZATION")):
            return json_response(start_response, 401, _UNAUTHORIZED)
        raw = read_body(environ)
        if raw is None:
            return json_response(start_response, 413, {"detail": "Request body too large"})
        query = environ.get("QUERY_STRING", "")
        webhook = None
        if query:
            values = parse_qs(query).get("fal_webhook")
            webhook = values[0] if values else None
        headers = {key[5:].replace("_", "-").title(): str(environ[key])
                   for key in environ if key.startswith("HTTP_X_FAL_")}
        reply = queue.submit_request(endpoint, raw, webhook=webhook, query=query,
                                     host=environ.get("HTTP_HOST"), headers=headers)
        return self._reply(environ, start_response, reply)

    def _queue_call(self, environ: WSGIEnvironment, start_response: StartResponse,
                    method: str, parts: list[str]) -> Iterable[bytes]:
        queue = self.queue
        app_path = f"{parts[0]}/{parts[1]}"
        request_id = parts[3]
        tail = parts[4:]
        if not queue.authorized(environ.get("HTTP_AUTHORIZATION")):
            return json_response(start_response, 401, _UNAUTHORIZED)
        if not tail and method == "GET":
            reply = queue.request_result(app_path, request_id)
        elif tail == ["status"] and method == "GET":
            query = environ.get("QUERY_STRING", "")
            logs = "logs=1" in query or "logs=true" in query
            reply = queue.request_status(app_path, request_id, logs=logs)
        elif tail == ["cancel"] and method == "PUT":
            reply = queue.cancel_request(app_path, request_id)
        elif not tail or tail in (["status"], ["cancel"]):
            return json_response(start_response, 405, {"detail": "Method Not Allowed"})
        else:
            return json_response(start_response, 404, NOT_FOUND)
        return self._reply(environ, start_response, reply)

    def _download(self, environ: WSGIEnvironment, start_response: StartResponse,
                  request_id: str, head: bool) -> Iterable[bytes]:
        direct = "direct=1" in environ.get("QUERY_STRING", "")
        download = self.files.open_download(request_id, direct=direct, head=head)
        start_response(STATUS[download.status], download.headers)
        if download.cut:
            return _cut_after(download.chunks, environ.get("werkzeug.socket"))
        return download.chunks
