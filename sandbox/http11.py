"""A small threaded HTTP/1.1 WSGI server with persistent connections, for the sandbox.

fal's queue keeps connections alive, so a client's pooled connection carries many status
checks. Werkzeug's development server closes every connection after one answer (it cannot
drain a request body safely before reading the next request line), which made every check
pay for a new TCP connection. Here each request body is read in full before the app runs,
so the next request on the connection starts cleanly; an answer without Content-Length is
sent chunked; an idle connection is closed after `timeout` seconds. Good for loopback
tests and benchmarks, not for the internet (no TLS, no limits beyond the body cap).
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # a 20 MB image as a data: URI is ~27 MB


class KeepAliveServer(ThreadingHTTPServer):
    """One thread per connection; `app` is the WSGI callable."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        super().__init__(address, handler)


class KeepAliveHandler(BaseHTTPRequestHandler):
    """Serves every method through the WSGI app, many requests per connection."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds an idle kept-alive connection stays open
    server_version = "videojobs-sandbox"
    sys_version = ""
    server: KeepAliveServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: subclasses log requests (at DEBUG) in log_request."""

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.parse_request():
                return
            self._run_wsgi()
            self.wfile.flush()
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                total += size
                if total > MAX_BODY_BYTES:
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "", "PATH_INFO": unquote(path),
            "QUERY_STRING": query, "SERVER_NAME": str(host), "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(len(body)), "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False, "werkzeug.socket": self.connection,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _run_wsgi(self) -> None:
        body = self._read_body()
        if body is None:
            self.close_connection = True  # the rest of the body is still on the wire
            self.send_response(413)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        state: dict[str, Any] = {"status": None, "headers": [], "sent": False,
                                 "chunked": False, "length": None, "written": 0}

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            state["status"], state["headers"] = status, headers
            return write

        def send_headers() -> None:
            code = int(state["status"].split(" ", 1)[0])
            self.send_response(code, state["status"].split(" ", 1)[1]
                               if " " in state["status"] else None)
            names = set()
            for name, value in state["headers"]:
                names.add(name.lower())
                if name.lower() == "content-length":
                    state["length"] = int(value)
                self.send_header(name, value)
            no_body = self.command == "HEAD" or code < 200 or code in (204, 304)
            if "content-length" not in names and not no_body:
                state["chunked"] = True
                self.send_header("Transfer-Encoding", "chunked")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()  # (send_response logged the request)
            state["sent"] = True

        def write(data: bytes) -> None:
            if not state["sent"]:
                send_headers()
            if not data or self.command == "HEAD":
                return
            if state["chunked"]:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            else:
                self.wfile.write(data)
            state["written"] += len(data)

        result = self.server.app(self._environ(body), start_response)
        try:
            for chunk in result:
                write(chunk)
            if not state["sent"]:
                send_headers()
            if state["chunked"]:
                self.wfile.write(b"0\r\n\r\n")
        except (ConnectionError, OSError):
            self.close_connection = True  # the app dropped the connection on purpose
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if state["length"] is not None and state["written"] != state["length"] \
                and self.command != "HEAD":
            self.close_connection = True  # a cut-off answer: this connection is done
        try:
            self.connection.getpeername()
        except OSError:
            self.close_connection = True

