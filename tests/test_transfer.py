"""workers.transfer against real HTTP(S) servers on loopback, into both storage backends."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import ipaddress
import logging
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import requests

from app.external import ExternalError
from app.storage import (
    LocalStorage,
    S3Storage,
    Storage,
    StoredObject,
    job_video_key,
)
from workers.transfer import (
    AddressGuard,
    BadContentType,
    PermanentTransferError,
    RetryableTransferError,
    TooLarge,
    TooManyRedirects,
    TransferError,
    TransferLimits,
    UnsafeURL,
    check_url,
    download_to_storage,
    is_public_address,
    strip_query,
)

MiB = 1024 * 1024
KEY = job_video_key("0190a1b2c3d4e5f60718293a4b5c6d7e", "0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4")
VIDEO = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 1024
_PATTERN = bytes(range(251))  # a prime period: dropped or reordered chunks change the digest
_POOL = _PATTERN * (MiB // len(_PATTERN) + 2)
LIMITS = TransferLimits(max_bytes=8 * MiB, allow_private=True, connect_timeout=2,
                        read_timeout=5, total_timeout=30)
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def pattern_chunks(size: int) -> Iterator[memoryview]:
    """`size` deterministic bytes as 1 MiB views of one pool: nothing allocated per chunk."""
    view = memoryview(_POOL)
    pos = 0
    while pos < size:
        n = min(MiB, size - pos)
        offset = pos % len(_PATTERN)
        yield view[offset:offset + n]
        pos += n


def pattern_digest(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


# --- the test HTTP server --------------------------------------------------------------------


class VideoServer(ThreadingHTTPServer):
    """A misbehaving video host; remembers what it was asked and how much it managed to send."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        super().__init__((host, 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.host = host
        self.scheme = "https" if tls else "http"
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.sent: dict[str, int] = {}
        self.broken: dict[str, str] = {}
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str | None = None) -> str:
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{self.scheme}://{name}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]

    def done(self, path: str) -> threading.Event:
        with self._lock:
            return self._done.setdefault(path, threading.Event())

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # aborted connections are the point of most tests

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: VideoServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.seen.append((path, {k.lower(): v for k, v in self.headers.items()}))
        route, _, rest = path.strip("/").partition("/")
        args = rest.split("/") if rest else []
        handler = getattr(self, "route_" + route.replace("-", "_"), None)
        try:
            if handler is None:
                self.reply(404, b"no such route", "text/plain")
            else:
                handler(*args)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.server.broken[path] = type(exc).__name__
            self.close_connection = True
        finally:
            self.server.done(path).set()

    # helpers

    def head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def reply(self, status: int, body: bytes, content_type: str | None,
              **extra: str) -> None:
        headers = {"Content-Length": str(len(body)), **extra}
        if content_type is not None:
            headers["Content-Type"] = content_type
        self.head(status, headers)
        self.wfile.write(body)

    def stream(self, chunks: Iterator[memoryview | bytes], chunked: bool = False,
               delay: float = 0) -> None:
        """Write the chunks, counting what the socket accepted (errors propagate)."""
        path = self.path.split("?", 1)[0]
        self.server.sent[path] = 0
        for chunk in chunks:
            if chunked:
                self.wfile.write(b"%x\r\n" % len(chunk))
            self.wfile.write(chunk)
            if chunked:
                self.wfile.write(b"\r\n")
            self.server.sent[path] += len(chunk)
            if delay:
                time.sleep(delay)

    def cut(self) -> None:
        """Drop the connection without a proper end of body."""
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    # routes: /<route>/<args...>

    def route_video(self, *_: str) -> None:
        self.reply(200, VIDEO, "Video/MP4; codecs=\"avc1.42E01E\"")

    def route_typed(self, content_type: str, *_: str) -> None:
        self.reply(200, VIDEO, None if content_type == "-" else unquote(content_type))

    def route_sized(self, size: str, *_: str) -> None:
        self.head(200, {"Content-Type": "video/mp4", "Content-Length": size})
        self.stream(pattern_chunks(int(size)))

    def route_chunked(self, size: str, *_: str) -> None:
        self.head(200, {"Content-Type": "video/mp4", "Transfer-Encoding": "chunked"})
        self.stream(pattern_chunks(int(size)), chunked=True)
        self.wfile.write(b"0\r\n\r\n")

    def route_cut(self, total: str, sent: str, *_: str) -> None:
        self.head(200, {"Content-Type": "video/mp4", "Content-Length": total})
        self.stream(pattern_chunks(int(sent)))
        self.cut()

    def route_chunked_cut(self, sent: str, *_: str) -> None:
        self.head(200, {"Content-Type": "video/mp4", "Transfer-Encoding": "chunked"})
        self.stream(pattern_chunks(int(sent)), chunked=True)
        self.cut()

    def route_huge(self, *_: str) -> None:
        """Claims 10 GiB and tries to send 512 MiB: the client must hang up first."""
        self.head(200, {"Content-Type": "video/mp4", "Content-Length": str(10 * 1024 * MiB)})
        self.stream(pattern_chunks(512 * MiB))

    def route_endless(self, *_: str) -> None:
        self.head(200, {"Content-Type": "video/mp4", "Transfer-Encoding": "chunked"})
        self.stream(pattern_chunks(512 * MiB), chunked=True)

    def route_status(self, code: str, *_: str) -> None:
        self.reply(int(code), b"<html>nope</html>", "text/html", **{"Retry-After": "7"})

    def route_bare(self, code: str, *_: str) -> None:
        """A failing status without Retry-After."""
        self.reply(int(code), b"<html>nope</html>", "text/html")

    def route_redirect(self, code: str, target: str) -> None:
        self.reply(int(code), b"", "text/plain", Location=unquote(target))

    def route_noloc(self, *_: str) -> None:
        self.reply(302, b"", "text/plain")

    def route_loop(self, name: str) -> None:
        self.reply(302, b"", "text/plain", Location=f"/loop/{'b' if name == 'a' else 'a'}")

    def route_chain(self, n: str) -> None:
        """Every Location form: relative segment, absolute path, scheme-relative."""
        left = int(n)
        if left == 0:
            self.route_video()
            return
        location = {3: "2", 2: "/chain/1"}.get(left) or f"//{self.headers['Host']}/chain/0"
        self.reply(302, b"", "text/plain", Location=location)

    def route_empty(self, *_: str) -> None:
        self.reply(200, b"", "video/mp4")

    def route_gzip(self, *_: str) -> None:
        self.reply(200, gzip.compress(VIDEO), "video/mp4", **{"Content-Encoding": "gzip"})

    def route_stall(self, *_: str) -> None:
        self.head(200, {"Content-Type": "video/mp4", "Content-Length": "100000"})
        self.wfile.write(b"x" * 1000)
        time.sleep(3)
        self.cut()

    def route_slow_headers(self, *_: str) -> None:
        time.sleep(3)
        self.reply(200, VIDEO, "video/mp4")

    def route_trickle(self, *_: str) -> None:
        self.head(200, {"Content-Type": "video/mp4", "Transfer-Encoding": "chunked"})
        self.stream((b"t" * 4096 for _ in range(250)), chunked=True, delay=0.02)
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def server() -> Iterator[VideoServer]:
    srv = VideoServer()
    yield srv
    srv.stop()


# --- storage on both backends ----------------------------------------------------------------


def leftovers(storage: Storage) -> list[str]:
    """Everything the backend holds: files (temp and sidecars too), objects, open uploads."""
    if isinstance(storage, LocalStorage):
        return sorted(str(p.relative_to(storage.root)) for p in storage.root.rglob("*")
                      if p.is_file())
    assert isinstance(storage, S3Storage)
    objects = storage.client.list_objects_v2(Bucket=storage.bucket).get("Contents", [])
    uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
    return [o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads]


def assert_nothing_stored(storage: Storage) -> None:
    assert storage.head(KEY) is None
    assert leftovers(storage) == []


def read_back(storage: Storage) -> bytes:
    with storage.open_read(KEY) as body:
        return body.read()


def digest_of(storage: Storage) -> str:
    digest = hashlib.sha256()
    with storage.open_read(KEY) as body:
        while chunk := body.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, storage: Storage, guard: AddressGuard | None = None,
          session: requests.Session | None = None, **limits: Any) -> StoredObject:
    return download_to_storage(url, storage, KEY, replace(LIMITS, **limits), session,
                               guard=guard)


# --- fake DNS --------------------------------------------------------------------------------


def fake_dns(table: dict[str, Sequence[str]] | Callable[[str], Sequence[str]]
             ) -> Callable[..., list[tuple[Any, ...]]]:
    """A getaddrinfo stand-in answering from a table (or a function of the host name)."""
    def resolve(host: str, port: int | None, family: int = 0, type: int = 0,
                proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
        answers = table(host) if callable(table) else table.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port or 0, 0, 0))
                if ":" in a else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0))
                for a in answers]
    return resolve


def loopback_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Production rule, except that the test server's own address counts as public."""
    return address == LOOPBACK or is_public_address(address)


# --- check_url, is_public_address, strip_query -----------------------------------------------


@pytest.mark.parametrize("address", [
    "93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
])
def test_public_addresses_pass(address: str) -> None:
    check_url("https://cdn.example/v.mp4", False, fake_dns({"cdn.example": [address]}))
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "192.0.2.2", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd00::2", "ff02::1", "ff0e::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "64:ff9b::a00:1", "64:ff9b::7f00:1", "2002:7f00:1::1", "2002:a9fe:a9fe::1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    resolver = fake_dns({"cdn.example": [address]})
    with pytest.raises(UnsafeURL, match="not a public address"):
        check_url("https://cdn.example/v.mp4", False, resolver)
    assert not is_public_address(ipaddress.ip_address(address))
    check_url("https://cdn.example/v.mp4", True, resolver)  # ALLOW_PRIVATE_DOWNLOADS=true


def test_one_private_answer_among_public_ones_is_enough_to_refuse() -> None:
    resolver = fake_dns({"cdn.example": ["93.184.216.34", "2606:4700::1", "10.1.2.3"]})
    with pytest.raises(UnsafeURL):
        check_url("http://cdn.example/v.mp4", False, resolver)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/v.mp4", "http://127.1/v.mp4", "http://2130706433/v.mp4",
    "http://0x7f000001/v.mp4", "http://0177.0.0.1/v.mp4", "http://[::1]/v.mp4",
    "http://[::ffff:127.0.0.1]/v.mp4", "http://[::ffff:7f00:1]/v.mp4", "http://0/v.mp4",
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1%25eth0]/v.mp4",
])
def test_numeric_host_spellings_are_resolved_then_refused(url: str) -> None:
    """The real resolver, without DNS: every spelling the C library accepts is checked."""
    with pytest.raises(UnsafeURL):
        check_url(url, False)


@pytest.mark.parametrize("url, reason", [
    ("file:///etc/passwd", "http or https"),
    ("ftp://cdn.example/v.mp4", "http or https"),
    ("gopher://cdn.example:70/_x", "http or https"),
    ("data:video/mp4;base64,AAAA", "http or https"),
    ("javascript:alert(1)", "http or https"),
    ("//cdn.example/v.mp4", "http or https"),
    ("cdn.example/v.mp4", "http or https"),
    ("http:///v.mp4", "no host"),
    ("http://user:pw@cdn.example/v.mp4", "credentials"),
    ("http://cdn.example:99999/v.mp4", "not valid"),
    ("http://[::1/v.mp4", "not valid"),
])
def test_bad_urls_are_refused_before_any_lookup(url: str, reason: str) -> None:
    def no_lookups(*args: Any) -> list[tuple[Any, ...]]:
        raise AssertionError("must not resolve")

    for allow_private in (False, True):
        with pytest.raises(UnsafeURL, match=reason):
            check_url(url, allow_private, no_lookups)


def test_unresolvable_hosts() -> None:
    with pytest.raises(PermanentTransferError, match="does not exist") as info:
        check_url("https://nowhere.example/v.mp4", False, fake_dns({}))
    assert not isinstance(info.value, UnsafeURL)

    def flaky(*args: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(RetryableTransferError, match="Could not resolve"):
        check_url("https://cdn.example/v.mp4", False, flaky)


@pytest.mark.parametrize("url, expected", [
    ("https://v3.fal.media/files/abc/out.mp4?X-Amz-Signature=s3cr3t&X-Amz-Credential=c",
     "https://v3.fal.media/files/abc/out.mp4"),
    ("https://user:pw@cdn.example:8443/a/b.mp4#frag", "https://cdn.example:8443/a/b.mp4"),
    ("http://cdn.example/v.mp4", "http://cdn.example/v.mp4"),
    ("http://[::1/v.mp4?sig=1", "http://[::1/v.mp4"),
    # fal's and the store's log lines use it too: a bad port must not raise on an error path
    ("https://queue.example:99999/x/status?sig=1", "https://queue.example:99999/x/status"),
    ("ws://root:secret@db.example:8000/rpc", "ws://db.example:8000/rpc"),
])
def test_strip_query(url: str, expected: str) -> None:
    assert strip_query(url) == expected


# --- downloads that work ---------------------------------------------------------------------


def test_downloads_a_video_without_logging_the_query(
        server: VideoServer, storage: Storage, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="workers.transfer")
    stored = fetch(server.url("/video/clip.mp4?X-Amz-Signature=s3cr3t"), storage)
    assert stored == StoredObject(KEY, len(VIDEO), "video/mp4")  # normalised, no parameters
    assert storage.head(KEY) == stored
    assert read_back(storage) == VIDEO
    headers = server.seen[0][1]
    assert headers["accept-encoding"] == "identity"
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("workers.")]
    assert any("/video/clip.mp4" in line for line in ours)
    assert "s3cr3t" not in caplog.text


@pytest.mark.parametrize("content_type, name, stored_type", [
    ("video/webm", "anything", "video/webm"),
    ("Video/QuickTime; charset=binary", "x", "video/quicktime"),
    ("application/octet-stream", "clip.mp4", "video/mp4"),
    ("application/octet-stream", "CLIP.MOV", "video/quicktime"),
    ("binary/octet-stream", "clip.webm", "video/webm"),
    ("-", "clip.mp4", "video/mp4"),
])
def test_accepted_content_types(server: VideoServer, storage: Storage, content_type: str,
                                name: str, stored_type: str) -> None:
    stored = fetch(server.url(f"/typed/{quote(content_type, safe='')}/{name}?sig=.txt"),
                   storage)
    assert stored == StoredObject(KEY, len(VIDEO), stored_type)
    assert storage.head(KEY) == stored


@pytest.mark.parametrize("content_type, path_tail", [
    ("text/html; charset=utf-8", "clip.mp4"),
    ("application/json", "clip.mp4"),
    ("image/png", "clip.mp4"),
    ("video/", "clip.mp4"),
    ("video/mp4 x", "clip.mp4"),
    ("application/octet-stream", "clip.bin"),
    ("application/octet-stream", "clip?name=a.mp4"),
    ("-", "page"),
])
def test_refused_content_types(server: VideoServer, storage: Storage, content_type: str,
                               path_tail: str) -> None:
    with pytest.raises(BadContentType, match="not a video") as info:
        fetch(server.url(f"/typed/{quote(content_type, safe='')}/{path_tail}"), storage)
    assert isinstance(info.value, PermanentTransferError)
    assert_nothing_stored(storage)


@pytest.mark.parametrize("route", ["sized", "chunked"])
def test_exactly_the_cap_is_fine_one_more_byte_is_not(
        server: VideoServer, storage: Storage, route: str) -> None:
    cap = 3 * MiB + 17
    stored = fetch(server.url(f"/{route}/{cap}/clip.mp4"), storage, max_bytes=cap)
    assert stored == StoredObject(KEY, cap, "video/mp4")
    assert digest_of(storage) == pattern_digest(cap)
    storage.delete(KEY)
    with pytest.raises(TooLarge, match="larger than the 3.0 MB limit"):
        fetch(server.url(f"/{route}/{cap + 1}/clip.mp4"), storage, max_bytes=cap)
    assert_nothing_stored(storage)


def test_64_mib_streams_with_bounded_memory(server: VideoServer, storage: Storage) -> None:
    size = 64 * MiB
    storage.ping()  # warm the client before measuring
    tracemalloc.start()
    try:
        stored = fetch(server.url(f"/sized/{size}/clip.mp4"), storage, max_bytes=100 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stored == StoredObject(KEY, size, "video/mp4")
    assert peak < 40 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert digest_of(storage) == pattern_digest(size)


# --- bodies that break -----------------------------------------------------------------------


@pytest.mark.parametrize("total, sent", [(2 * MiB, MiB), (24 * MiB, 12 * MiB)],
                         ids=["single", "multipart"])
def test_body_shorter_than_content_length_is_retryable(
        server: VideoServer, storage: Storage, total: int, sent: int) -> None:
    with pytest.raises(RetryableTransferError, match=f"cut off after .* of {total} bytes"):
        fetch(server.url(f"/cut/{total}/{sent}/clip.mp4"), storage, max_bytes=32 * MiB)
    assert_nothing_stored(storage)


def test_chunked_body_without_its_end_is_retryable(server: VideoServer,
                                                   storage: Storage) -> None:
    with pytest.raises(RetryableTransferError, match="cut off"):
        fetch(server.url(f"/chunked-cut/{10 * MiB}/clip.mp4"), storage, max_bytes=32 * MiB)
    assert_nothing_stored(storage)


def test_huge_content_length_is_refused_before_reading(server: VideoServer,
                                                       storage: Storage) -> None:
    started = time.monotonic()
    with pytest.raises(TooLarge, match="larger than the 500 MB limit") as info:
        fetch(server.url("/huge/clip.mp4"), storage, max_bytes=500 * MiB)
    assert info.value.limit == 500 * MiB
    assert server.done("/huge/clip.mp4").wait(10), "the server is still sending"
    assert server.broken.get("/huge/clip.mp4"), "the client never hung up"
    # Only what the kernel's socket buffers swallowed: nothing like 500 MB, let alone 10 GiB.
    assert server.sent["/huge/clip.mp4"] < 32 * MiB
    assert time.monotonic() - started < 10
    assert_nothing_stored(storage)


def test_stream_over_the_cap_is_aborted_at_the_cap(server: VideoServer,
                                                   storage: Storage) -> None:
    cap = 20 * MiB  # over two S3 parts: a multipart upload is started, then aborted
    with pytest.raises(TooLarge, match="larger than the 20 MB limit"):
        fetch(server.url("/endless/clip.mp4"), storage, max_bytes=cap)
    assert server.done("/endless/clip.mp4").wait(10), "the server is still sending"
    assert server.broken.get("/endless/clip.mp4"), "the client never hung up"
    assert server.sent["/endless/clip.mp4"] < cap + 24 * MiB
    assert_nothing_stored(storage)


def test_empty_and_compressed_bodies_are_refused(server: VideoServer, storage: Storage) -> None:
    with pytest.raises(PermanentTransferError, match="empty"):
        fetch(server.url("/empty/clip.mp4"), storage)
    with pytest.raises(PermanentTransferError, match="gzip-encoded"):
        fetch(server.url("/gzip/clip.mp4"), storage)
    assert_nothing_stored(storage)


# --- status codes ----------------------------------------------------------------------------


@pytest.mark.parametrize("code, retryable", [
    (400, False), (401, False), (403, False), (404, False), (410, False), (204, False),
    (304, False), (408, True), (429, True), (500, True), (502, True), (503, True),
])
def test_status_codes(server: VideoServer, storage: Storage, code: int,
                      retryable: bool) -> None:
    with pytest.raises(TransferError, match=f"\\({code}\\)|answered {code}") as info:
        fetch(server.url(f"/status/{code}"), storage)
    assert isinstance(info.value, RetryableTransferError) is retryable
    assert isinstance(info.value, PermanentTransferError) is not retryable
    assert info.value.status == code
    if code in (429, 503):
        assert isinstance(info.value, RetryableTransferError) and info.value.retry_after == 7
    assert_nothing_stored(storage)


# --- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects_are_followed(server: VideoServer, storage: Storage, code: int) -> None:
    target = quote(server.url("/video/clip.mp4?sig=2"), safe="")
    stored = fetch(server.url(f"/redirect/{code}/{target}"), storage)
    assert stored == StoredObject(KEY, len(VIDEO), "video/mp4")
    assert server.paths() == [f"/redirect/{code}/{target}", "/video/clip.mp4"]


def test_redirect_chain_on_loopback_needs_allow_private(server: VideoServer,
                                                        storage: Storage) -> None:
    with pytest.raises(UnsafeURL, match="not a public address"):
        fetch(server.url("/chain/3"), storage, allow_private=False)
    assert server.seen == []  # refused before connecting
    assert_nothing_stored(storage)
    stored = fetch(server.url("/chain/3"), storage, allow_private=True)
    assert stored == StoredObject(KEY, len(VIDEO), "video/mp4")
    assert server.paths() == ["/chain/3", "/chain/2", "/chain/1", "/chain/0"]


def test_redirect_loop_and_long_chains(server: VideoServer, storage: Storage) -> None:
    with pytest.raises(TooManyRedirects, match="more than 5 times"):
        fetch(server.url("/loop/a"), storage)
    assert len(server.seen) == 6
    with pytest.raises(TooManyRedirects, match="more than 2 times"):
        fetch(server.url("/chain/3"), storage, max_redirects=2)
    with pytest.raises(PermanentTransferError, match="without a Location"):
        fetch(server.url("/noloc"), storage)
    assert_nothing_stored(storage)


@pytest.mark.parametrize("target", [
    "file:///etc/passwd", "ftp://127.0.0.1/v.mp4", "gopher://127.0.0.1:6379/_INFO",
    "http://user:pw@127.0.0.1/v.mp4",
])
def test_redirect_to_another_scheme_is_refused_even_with_allow_private(
        server: VideoServer, storage: Storage, target: str) -> None:
    with pytest.raises(UnsafeURL):
        fetch(server.url(f"/redirect/302/{quote(target, safe='')}"), storage)
    assert len(server.seen) == 1
    assert_nothing_stored(storage)


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://10.0.0.1/v.mp4",
    "http://[::1]:{port}/video/clip.mp4",
    "http://[::ffff:127.0.0.1]:{port}/video/clip.mp4",
    "http://127.0.0.2:{port}/video/clip.mp4",
    "http://0.0.0.0:{port}/video/clip.mp4",
])
def test_every_redirect_hop_is_address_checked(server: VideoServer, storage: Storage,
                                               target: str) -> None:
    """The first hop is allowed (the test server counts as public); the private hop is not."""
    guard = AddressGuard(allow_private=False, is_allowed=loopback_is_public)
    target = target.format(port=server.port)
    with pytest.raises(UnsafeURL, match="not a public address"):
        fetch(server.url(f"/redirect/302/{quote(target, safe='')}"), storage, guard=guard)
    assert len(server.seen) == 1
    assert_nothing_stored(storage)
    # Same guard, same server, no private hop: fine.
    assert fetch(server.url("/video/clip.mp4"), storage, guard=guard).size == len(VIDEO)


# --- DNS: resolution is pinned ---------------------------------------------------------------


def test_connection_uses_the_checked_answer_not_a_second_lookup(
        server: VideoServer, storage: Storage) -> None:
    """`videos.test` exists only in the guard's resolver: success proves the pin is used."""
    guard = AddressGuard(allow_private=True, resolver=fake_dns({"videos.test": ["127.0.0.1"]}))
    stored = fetch(server.url("/video/clip.mp4", host="videos.test"), storage, guard=guard)
    assert stored.size == len(VIDEO)
    assert server.seen[0][1]["host"] == f"videos.test:{server.port}"


def test_dns_rebinding_between_check_and_connect_is_refused(storage: Storage) -> None:
    """The check sees an allowed address, the connect-time lookup a private one: no connect."""
    target = VideoServer("127.0.0.2")
    try:
        lookups: list[str] = []

        def rebinding(host: str) -> list[str]:
            lookups.append(host)
            return ["127.0.0.1"] if len(lookups) == 1 else ["127.0.0.2"]

        guard = AddressGuard(allow_private=False, resolver=fake_dns(rebinding),
                             is_allowed=loopback_is_public)
        with pytest.raises(UnsafeURL, match=r"not a public address \(127.0.0.2\)"):
            fetch(target.url("/video/clip.mp4", host="rebind.test"), storage, guard=guard)
        assert lookups == ["rebind.test", "rebind.test"]
        assert target.seen == []
        assert_nothing_stored(storage)
    finally:
        target.stop()


def _tls_files(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A throwaway CA and a certificate for videos.test; returns the server context and CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "videojobs test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "videos.test")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("videos.test")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    cert_file.write_bytes(cert.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


def test_https_keeps_sni_and_certificate_checks_while_pinned(tmp_path: Path) -> None:
    context, ca_file = _tls_files(tmp_path)
    tls_server = VideoServer(tls=context)
    storage = LocalStorage(tmp_path / "root", "test-secret")
    try:
        guard = AddressGuard(allow_private=True, resolver=fake_dns(
            {"videos.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}))
        session = requests.Session()
        session.verify = str(ca_file)
        stored = fetch(tls_server.url("/video/clip.mp4?sig=1", host="videos.test"), storage,
                       guard=guard, session=session)
        assert stored == StoredObject(KEY, len(VIDEO), "video/mp4")
        storage.delete(KEY)
        # Same socket destination, a name the certificate does not cover: refused.
        with pytest.raises(PermanentTransferError, match="certificate is not valid"):
            fetch(tls_server.url("/video/clip.mp4", host="other.test"), storage, guard=guard,
                  session=session)
        # The total_timeout watchdog also ends a TLS read in progress.
        started = time.monotonic()
        with pytest.raises(RetryableTransferError, match="longer than 1 seconds"):
            fetch(tls_server.url("/trickle/clip.mp4", host="videos.test"), storage,
                  guard=guard, session=session, total_timeout=1)
        assert time.monotonic() - started < 2.5
        # And without our CA the certificate is not trusted at all.
        with pytest.raises(PermanentTransferError, match="certificate is not valid"):
            fetch(tls_server.url("/video/clip.mp4", host="videos.test"), storage, guard=guard)
        assert_nothing_stored(storage)
    finally:
        tls_server.stop()


def test_session_lends_headers_but_never_credentials(server: VideoServer,
                                                     storage: Storage) -> None:
    session = requests.Session()
    session.headers.update({"X-Trace": "abc", "Authorization": "Key secret",
                            "Cookie": "session=1"})
    fetch(server.url("/video/clip.mp4"), storage, session=session)
    headers = server.seen[0][1]
    assert headers["x-trace"] == "abc"
    assert "authorization" not in headers and "cookie" not in headers


# --- time limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("route, message", [
    ("/slow-headers/clip.mp4", "did not answer in time"),
    ("/stall/clip.mp4", "stopped sending"),
])
def test_read_timeouts_are_retryable(server: VideoServer, storage: Storage, route: str,
                                     message: str) -> None:
    started = time.monotonic()
    with pytest.raises(RetryableTransferError, match=message):
        fetch(server.url(route), storage, read_timeout=0.5)
    assert time.monotonic() - started < 2.5
    assert_nothing_stored(storage)


def test_total_timeout_stops_a_trickling_host(server: VideoServer, storage: Storage) -> None:
    """4 KiB every 20 ms: each 1 MiB read would take 5 s; the deadline ends it at 1 s."""
    started = time.monotonic()
    with pytest.raises(RetryableTransferError, match="longer than 1 seconds"):
        fetch(server.url("/trickle/clip.mp4"), storage, total_timeout=1)
    assert time.monotonic() - started < 2.5
    assert_nothing_stored(storage)


def test_connection_refused_is_retryable(storage: Storage) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RetryableTransferError, match="Could not connect"):
        fetch(f"http://127.0.0.1:{port}/v.mp4", storage)
    assert_nothing_stored(storage)


# --- one error shape; a retried copy waits for the host's Retry-After ------------------------


@pytest.mark.parametrize("route, limits, kind, retryable", [
    ("/status/503", {}, RetryableTransferError, True),
    ("/status/429", {}, RetryableTransferError, True),
    ("/cut/100000/1000/clip.mp4", {}, RetryableTransferError, True),
    ("/slow-headers/clip.mp4", {"read_timeout": 0.5}, RetryableTransferError, True),
    ("/status/404", {}, PermanentTransferError, False),
    ("/empty/clip.mp4", {}, PermanentTransferError, False),
    ("/typed/text%2Fhtml/clip.mp4", {}, BadContentType, False),
    ("/sized/2000/clip.mp4", {"max_bytes": 1000}, TooLarge, False),
    ("/loop/a", {}, TooManyRedirects, False),
    ("/video/clip.mp4?sig=secret", {"allow_private": False}, UnsafeURL, False),
])
def test_every_failure_is_an_external_error_with_message_and_retryable(
        server: VideoServer, tmp_path: Path, route: str, limits: dict[str, Any],
        kind: type[TransferError], retryable: bool) -> None:
    storage = LocalStorage(tmp_path / "storage", "k")
    with pytest.raises(ExternalError) as info:
        fetch(server.url(route), storage, **limits)
    error = info.value
    assert type(error) is kind and isinstance(error, TransferError)
    assert error.retryable is retryable
    assert error.message and error.message == str(error) and "secret" not in error.message


@pytest.mark.parametrize("route, lowest, highest", [
    ("/status/503", 7, 9),  # the host's Retry-After: 7
    ("/bare/503", 1, 2.5),  # the pipeline's own backoff after a first attempt: 1-2 s
])
def test_a_failed_copy_is_retried_no_sooner_than_the_hosts_retry_after(
        server: VideoServer, store: Any, tmp_path: Path, redis_url: str, route: str,
        lowest: float, highest: float) -> None:
    """The finalize step gives its lease back for as long as the host asked (the sweeper
    re-sends the finalize once it expires), the same rule as for fal's submit answers."""
    from app.config import Settings
    from tests.test_store import new_job
    from workers import pipeline
    from workers.celery_app import make_celery
    from workers.context import build_context

    settings = Settings(secret_key="k", surrealdb_url="mem://", redis_url=redis_url,
                        storage_dir=str(tmp_path / "storage"), embedded=True,
                        allow_private_downloads=True)
    ctx = build_context(settings, make_celery(settings), store=store,
                        storage=LocalStorage(tmp_path / "storage", "k"))
    user = store.users.create("retry-after@example.com", None, credits=300)
    job = new_job(user)
    store.jobs.create_with_charge(job)
    store.jobs.update_if(job.job_id, ("pending",), {
        "status": "processing", "phase": "finalizing", "video_url": server.url(route)})
    started = time.time()
    pipeline.finalize_job(ctx, job.job_id)
    after = store.jobs.get(job.job_id)
    assert server.paths() == [route]
    assert after is not None and after["status"] == "processing"
    assert after["phase"] == "finalizing" and after.get("lease_owner") is None
    assert lowest - 0.5 <= after["lease_until"].timestamp() - started <= highest
