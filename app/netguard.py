"""Outbound HTTP address safety: which hosts a worker may connect to, checked and pinned.

Shared by video downloads (workers/transfer.py) and outbound webhooks (app/outbound.py,
and the API's check of a webhook URL). Every URL is checked with ``check_url_with``
(scheme, then every address the host resolves to), and the check is also *binding*:
``GuardedAdapter`` makes connections through a urllib3 connection class whose ``_new_conn``
resolves the host once, refuses the lot if any address is non-public, and connects to
exactly those checked addresses. A DNS answer that changes between the check and the
connect therefore cannot reach a private address; TLS still uses the URL's hostname for
SNI and certificate verification, because only the socket's destination is pinned.

Exceptions::

    TransferError                   the URL could not be used (``.message`` is a sentence)
    ├── RetryableTransferError      worth another attempt (DNS temporarily failing, ...);
    │                               ``.retryable`` is True, ``.retry_after`` from the host
    └── PermanentTransferError      retrying will not help
        └── UnsafeURL               not http(s), credentials in the URL, or a host that
                                    resolves to a non-public address
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from app.external import ExternalError

ALLOWED_SCHEMES = frozenset({"http", "https"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

# IPv6 prefixes that carry an IPv4 destination: judge them by that IPv4 address.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


# --- errors ---------------------------------------------------------------------------------


class TransferError(ExternalError):
    """The video could not be fetched; the message is fit for a job's error field."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableTransferError(TransferError):
    """A transient failure: fetching the same URL again may well work."""

    retryable = True

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class PermanentTransferError(TransferError):
    """Fetching the same URL again would fail the same way."""


class UnsafeURL(PermanentTransferError):
    """The URL (or a redirect) points somewhere a worker must never connect to."""


# --- URL checks -----------------------------------------------------------------------------


def is_public_address(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses (IPv4 embedded in IPv6 included)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local
        or address.is_multicast or address.is_reserved or address.is_unspecified)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class AddressGuard:
    """Which addresses downloads may reach; one instance drives both the check and the pin.

    ``resolver`` and ``is_allowed`` exist so tests can use fake DNS and treat their loopback
    server as public while every other address gets the production rule.
    """

    allow_private: bool = False
    resolver: Resolver = socket.getaddrinfo
    is_allowed: Callable[[IPAddress], bool] = field(default=is_public_address)
    subject: str = "Video"  # names the URL's role in error messages ("Webhook", ...)

    def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once; refuse if ANY answer is not allowed (rebinding-safe order)."""
        host = host.strip("[]")
        try:
            infos = self.resolver(host, port, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise RetryableTransferError(
                    f"Could not resolve {self.subject.lower()} host {host}") from None
            raise PermanentTransferError(f"{self.subject} host {host} does not exist") from None
        except UnicodeError:
            raise UnsafeURL(f"{self.subject} URL has an invalid host name") from None
        found: list[str] = []
        for info in infos:
            text = str(info[4][0])
            if text not in found:
                found.append(text)
        if not found:
            raise PermanentTransferError(f"{self.subject} host {host} has no address")
        if not self.allow_private:
            for text in found:
                try:
                    address = ipaddress.ip_address(text.split("%", 1)[0])
                except ValueError:
                    raise UnsafeURL(f"{self.subject} host {host} has an invalid address") from None
                if not self.is_allowed(address):
                    raise UnsafeURL(
                        f"{self.subject} host {host} is not a public address ({address})")
        return found


def check_url(url: str, allow_private: bool, resolver: Resolver = socket.getaddrinfo,
              subject: str = "Video") -> None:
    """Refuse (UnsafeURL) anything but http(s) to hosts whose every address is public."""
    check_url_with(url, AddressGuard(allow_private, resolver, subject=subject))


def check_url_with(url: str, guard: AddressGuard) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL(f"{guard.subject} URL is not valid") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeURL(f"{guard.subject} URL must be http or https, not {scheme or 'relative'}")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL(f"{guard.subject} URL must not carry credentials")
    if not parts.hostname:
        raise UnsafeURL(f"{guard.subject} URL has no host")
    host = parts.hostname
    if ":" in host:  # an IPv6 literal: its zone id arrives percent-encoded (%25eth0)
        host = unquote(host)
    guard.addresses(host, port or (443 if scheme == "https" else 80))


# --- pinned connections --------------------------------------------------------------------


def _connect_checked(conn: HTTPConnection, guard: AddressGuard) -> socket.socket:
    """urllib3's _new_conn, but only to addresses the guard just resolved and approved."""
    host = conn.host
    last: OSError | None = None
    for address in guard.addresses(host, conn.port):
        try:
            return urllib3_connection.create_connection(
                (address, conn.port), conn.timeout, source_address=conn.source_address,
                socket_options=conn.socket_options)
        except TimeoutError:
            raise ConnectTimeoutError(
                conn, f"Connection to {host} timed out (connect timeout={conn.timeout})"
            ) from None
        except OSError as exc:
            last = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last}")


class _GuardedHTTPConnection(HTTPConnection):
    guard: ClassVar[AddressGuard]

    def _new_conn(self) -> socket.socket:
        return _connect_checked(self, self.guard)


class _GuardedHTTPSConnection(HTTPSConnection):
    guard: ClassVar[AddressGuard]

    def _new_conn(self) -> socket.socket:
        # Only the socket's destination changes: SNI and certificate checks use self.host.
        return _connect_checked(self, self.guard)


class GuardedAdapter(HTTPAdapter):
    """A transport whose every new connection goes through the guard."""

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard
        super().__init__(pool_connections=4, pool_maxsize=1, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        attrs = {"guard": self._guard}
        http_conn = type("GuardedHTTPConnection", (_GuardedHTTPConnection,), attrs)
        https_conn = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,), attrs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,),
                          {"ConnectionCls": https_conn}),
        }
