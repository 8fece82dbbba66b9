"""Stream a finished video from the provider's URL straight into storage, safely.

Exceptions (``.message`` is a short sentence fit for a job's ``error`` field; ``.retryable``
says which branch; both from ``app.external.ExternalError``)::

    TransferError                   the video could not be fetched
    ├── RetryableTransferError      worth another attempt from the same URL: connection
    │                               refused or reset, timeouts (connect, read, total),
    │                               a body cut off before Content-Length, 408, 429, 5xx
    │                               (``.retry_after``: the host's Retry-After, if any)
    └── PermanentTransferError      retrying the same URL will not help
        ├── UnsafeURL               not http(s), credentials in the URL, or a host that
        │                           resolves to a non-public address (any hop)
        ├── TooLarge                over ``max_bytes`` (by Content-Length, or while streaming)
        ├── BadContentType          not a video (the rule is below)
        └── TooManyRedirects        more than ``max_redirects`` hops
        (itself: other 4xx, empty or compressed body, invalid TLS certificate...)

Storage errors (``app.storage.StorageError``) propagate unchanged: they are not the URL's
fault. Whatever fails, nothing is left in storage (``put_stream`` guarantees it, because
our reader *raises* on a broken body instead of returning an early EOF).

Private addresses and DNS rebinding (the guard lives in app/netguard.py, shared with
outbound webhooks): every hop is checked with ``check_url`` (scheme, then
every address the host resolves to), and the check is also *binding*: connections are made
by a urllib3 connection class whose ``_new_conn`` resolves the host once, refuses the lot if
any address is non-public, and connects to exactly those checked addresses. A DNS answer
that changes between the check and the connect therefore cannot reach a private address;
TLS still uses the URL's hostname for SNI and certificate verification, because only the
socket's destination is pinned. Proxies from the environment are never used (a proxy would
do its own resolution and void the check). Residual risk: ``_new_conn`` is a urllib3 2.x
internal; tests/test_transfer.py fails if it stops being called (fake-DNS host names that
only the guard can resolve).

Content types: ``video/*`` is stored as sent (lower-cased, parameters dropped).
``application/octet-stream`` (also ``binary/octet-stream`` or no Content-Type) is accepted
only when the URL path ends in .mp4/.mov/.webm, and stored as that video type: object stores
serve untyped uploads that way, and a provider URL naming a video file is good evidence.
Everything else (HTML error pages, JSON, images) is BadContentType.

Time: ``total_timeout`` spans all hops and the body; a watchdog shuts the socket down at
the deadline, so even a host trickling a byte per ``read_timeout`` cannot hold a worker.
Logs name URLs through ``strip_query`` only. (urllib3's own DEBUG lines print request
targets with their query: keep the ``urllib3`` logger at INFO or above in production.)
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from urllib3.exceptions import ReadTimeoutError

from app.httpheaders import retry_after_seconds
from app.logs import strip_query
from app.netguard import (
    AddressGuard,
    GuardedAdapter,
    PermanentTransferError,
    RetryableTransferError,
    TransferError,
    UnsafeURL,
    check_url,
    check_url_with,
    is_public_address,
)
from app.storage import ObjectTooLarge, Storage, StoredObject

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
MiB = 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# application/octet-stream is accepted only for these paths, stored as the matching type.
OCTET_STREAM_EXTENSIONS = {".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}
# Headers a caller's session may set that must never travel to a video host.
_PRIVATE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_DEFAULT_HEADERS = {
    "User-Agent": "videojobs-transfer/1",
    "Accept": "video/*, application/octet-stream;q=0.5",
    "Accept-Encoding": "identity",  # videos do not compress; a decoded size is not capped early
}

# --- errors ------------------------------------------------------------------------------


class TooLarge(PermanentTransferError):
    """The video is over the size cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Video is larger than the {_describe_size(limit)} limit")
        self.limit = limit


class BadContentType(PermanentTransferError):
    """The response is not a video."""


class TooManyRedirects(PermanentTransferError):
    """The URL redirects too many times (or in a loop)."""


def _describe_size(size: int) -> str:
    if size >= MiB:
        return f"{size // MiB} MB" if size % MiB == 0 else f"{size / MiB:.1f} MB"
    return f"{size} bytes"


# --- limits and URL checks -----------------------------------------------------------------


@dataclass(frozen=True)
class TransferLimits:
    """Per-download bounds (MAX_VIDEO_BYTES, ALLOW_PRIVATE_DOWNLOADS; seconds).

    ``total_timeout`` covers every hop and the body (a watchdog ends a read in progress);
    waiting for a hop's headers is bounded by ``min(read_timeout, time left)``.
    """

    max_bytes: int
    allow_private: bool = False
    connect_timeout: float = 5
    read_timeout: float = 30
    max_redirects: int = 5
    total_timeout: float = 900


# --- the download --------------------------------------------------------------------------


class _Deadline:
    """The total_timeout budget of one download: every hop, and the body via a watchdog."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.fired = False
        self._timer: threading.Timer | None = None

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0 or self.fired:
            raise self.error()
        return left

    def over(self) -> bool:
        return self.fired or time.monotonic() >= self.at

    def error(self) -> RetryableTransferError:
        return RetryableTransferError(f"Video download took longer than {self.seconds:g} seconds")

    def watch(self, raw: urllib3.BaseHTTPResponse) -> None:
        """At the deadline, shut the body's socket down: a blocked read returns at once.

        A per-read check alone would let a host trickling one byte per read_timeout hold a
        download for hours; the watchdog also lets reads be whole parts (no joining copies).
        """
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if not isinstance(sock, socket.socket):
            return  # the per-read check still applies
        self._timer = threading.Timer(max(0.0, self.at - time.monotonic()), self._fire, (sock,))
        self._timer.daemon = True
        self._timer.start()

    def _fire(self, sock: socket.socket) -> None:
        self.fired = True
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also for TLS: SSLSocket.shutdown drops its SSL
            # object, which a reading thread may still be using.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _BodyReader:
    """The response body as a ``read(n)`` source: raises on any failure, never a short EOF."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, expected: int | None, max_bytes: int,
                 deadline: _Deadline) -> None:
        self._raw = raw
        self._expected = expected
        self._max = max_bytes
        self._deadline = deadline
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        if size == 0:
            return b""
        if size is None or size < 0:
            size = CHUNK_BYTES
        self._deadline.remaining()
        try:
            # Exactly `size` bytes unless the body ends: one allocation, no per-piece copies.
            data = self._raw.read(size, decode_content=False)
        except ReadTimeoutError:
            if self._deadline.over():
                raise self._deadline.error() from None
            raise RetryableTransferError("Video host stopped sending (read timeout)") from None
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError):
            if self._deadline.over():
                raise self._deadline.error() from None
            raise RetryableTransferError(self._cut_message()) from None
        self.count += len(data)
        if self.count > self._max:
            raise TooLarge(self._max)  # at once: not one more read
        if not data:
            if self._deadline.over():
                raise self._deadline.error()
            if self._expected is not None and self.count < self._expected:
                raise RetryableTransferError(self._cut_message())
            if self.count == 0:
                raise PermanentTransferError("Video host sent an empty file")
        return data

    def _cut_message(self) -> str:
        total = f" of {self._expected}" if self._expected is not None else ""
        return f"Video download was cut off after {self.count}{total} bytes"


def download_to_storage(url: str, storage: Storage, key: str, limits: TransferLimits,
                        session: requests.Session | None = None, *,
                        guard: AddressGuard | None = None) -> StoredObject:
    """Stream ``url`` into ``storage`` under ``key``, following redirects by hand.

    ``session`` only lends its headers (minus credentials), ``verify`` and ``cert``: its
    adapters and proxies are bypassed so that every connection is pinned by the guard
    (default: ``AddressGuard(limits.allow_private)``).
    """
    guard = guard or AddressGuard(limits.allow_private)
    deadline = _Deadline(limits.total_timeout)
    adapter = GuardedAdapter(guard)
    started = time.monotonic()
    try:
        resp, final_url = _open(url, adapter, guard, limits, deadline, session)
        try:
            content_type, expected = _check_response(resp, final_url, limits)
            reader = _BodyReader(resp.raw, expected, limits.max_bytes, deadline)
            deadline.watch(resp.raw)
            try:
                stored = storage.put_stream(key, reader, content_type,
                                            max_bytes=limits.max_bytes)
            except ObjectTooLarge:
                raise TooLarge(limits.max_bytes) from None
        finally:
            deadline.cancel()
            resp.close()  # unread bytes: the connection is dropped, not drained
    finally:
        adapter.close()
    log.debug("Stored %d bytes (%s) from %s in %.1f s", stored.size, content_type,
              strip_query(final_url), time.monotonic() - started)
    return stored


def _headers_from(session: requests.Session | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if session is not None:
        headers.update((name, str(value)) for name, value in session.headers.items()
                       if name.lower() not in _PRIVATE_HEADERS and value is not None)
    headers.update(_DEFAULT_HEADERS)
    return headers


def _open(url: str, adapter: GuardedAdapter, guard: AddressGuard, limits: TransferLimits,
          deadline: _Deadline, session: requests.Session | None
          ) -> tuple[requests.Response, str]:
    """GET, following up to max_redirects redirects, each hop checked; returns the final one."""
    headers = _headers_from(session)
    verify = True if session is None or session.verify is None else session.verify
    cert = session.cert if session is not None else None
    for _hop in range(limits.max_redirects + 1):
        check_url_with(url, guard)
        left = deadline.remaining()
        timeout = (min(limits.connect_timeout, left), min(limits.read_timeout, left))
        try:
            request = requests.Request("GET", url, headers=headers).prepare()
        except requests.RequestException:
            raise UnsafeURL("Video URL is not valid") from None
        try:
            resp = adapter.send(request, stream=True, timeout=timeout, verify=verify,
                                cert=cert, proxies=None)
        except requests.RequestException as exc:
            log.debug("GET %s failed: %s", strip_query(url), type(exc).__name__)
            raise _request_error(exc) from None
        if resp.status_code not in REDIRECT_STATUSES:
            return resp, url
        location = resp.headers.get("Location")
        resp.close()
        if not location:
            raise PermanentTransferError(
                f"Video host answered {resp.status_code} without a Location")
        url = urljoin(url, location.strip())
        log.debug("Redirected (%d) to %s", resp.status_code, strip_query(url))
    raise TooManyRedirects(f"Video URL redirected more than {limits.max_redirects} times")


def _request_error(exc: requests.RequestException) -> TransferError:
    """Classify a failed request without quoting it (its text holds the full URL)."""
    if isinstance(exc, requests.exceptions.SSLError):
        if _caused_by(exc, ssl.SSLCertVerificationError):
            return PermanentTransferError("Video host's TLS certificate is not valid")
        return RetryableTransferError("TLS handshake with the video host failed")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return RetryableTransferError("Could not connect to the video host (timed out)")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return RetryableTransferError("Video host did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return RetryableTransferError("Could not connect to the video host")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader)):
        return UnsafeURL("Video URL is not valid")
    return RetryableTransferError(f"Video download failed ({type(exc).__name__})")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kind):
            return True
        stack.extend([item.__cause__, item.__context__, *item.args,
                      getattr(item, "reason", None)])
    return False


def _check_response(resp: requests.Response, url: str, limits: TransferLimits
                    ) -> tuple[str, int | None]:
    """Status, encoding, type and declared size, all before a byte of the body is read."""
    status = resp.status_code
    if status != 200:
        raise _status_error(status, resp.headers)
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise PermanentTransferError(f"Video host sent a {encoding}-encoded body")
    content_type = _video_type(resp.headers.get("Content-Type"), url)
    expected = _content_length(resp.headers.get("Content-Length"))
    if expected is not None and expected > limits.max_bytes:
        raise TooLarge(limits.max_bytes)
    if expected == 0:
        raise PermanentTransferError("Video host sent an empty file")
    return content_type, expected


def _status_error(status: int, headers: Mapping[str, str]) -> TransferError:
    if status == 429:
        return RetryableTransferError("Video host is rate limiting downloads (429)", status,
                                      retry_after_seconds(headers.get("Retry-After")))
    if status == 408 or status >= 500:
        return RetryableTransferError(f"Video host answered {status}", status,
                                      retry_after_seconds(headers.get("Retry-After")))
    return PermanentTransferError(f"Video host answered {status}", status)


def _video_type(header: str | None, url: str) -> str:
    """``video/*`` (lower-cased, parameters dropped); octet-stream only for video file names.

    Object stores and CDNs serve files uploaded without a type as application/octet-stream
    (or with no Content-Type at all); a path ending in .mp4/.mov/.webm is then the best
    evidence we have, and it is the provider's own URL. Anything else (HTML error pages,
    JSON, images) is refused.
    """
    value = (header or "").split(";", 1)[0].strip().lower()
    if value.startswith("video/") and len(value) > len("video/") and _is_token(value[6:]):
        return value
    if value in ("", "application/octet-stream", "binary/octet-stream"):
        path = urlsplit(url).path.lower()
        for extension, video_type in OCTET_STREAM_EXTENSIONS.items():
            if path.endswith(extension):
                return video_type
    shown = value or "no content type"
    raise BadContentType(f"Video host sent {shown[:60]}, not a video")


def _is_token(text: str) -> bool:
    return all(ch.isalnum() or ch in "!#$&^_.+-" for ch in text) and text.isascii()


def _content_length(value: str | None) -> int | None:
    """The declared size; repeated identical values (``"10, 10"``) are one value."""
    if value is None:
        return None
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1:
        raise PermanentTransferError("Video host sent conflicting Content-Length headers")
    text = values.pop()
    if not text.isdigit() or not text.isascii():
        raise PermanentTransferError("Video host sent an invalid Content-Length")
    return int(text)


__all__ = [
    "AddressGuard", "BadContentType", "PermanentTransferError", "RetryableTransferError",
    "TooLarge", "TooManyRedirects", "TransferError", "TransferLimits", "UnsafeURL",
    "check_url", "download_to_storage", "is_public_address", "strip_query",
]
