"""One SurrealDB connection for every URL scheme, with every statement's status checked.

The SDK's `query()` hides per-statement errors behind its builders; we use `query_raw()`
and check each statement ourselves, classify failures into `app.store.errors`, and retry
transaction conflicts (the engine says they "can be retried") with jittered backoff.
Embedded engines (`mem://`, `surrealkv://`) are one shared, thread-safe connection per
process; network ones (`ws://`, `wss://`, `http(s)://`) get one connection per thread,
since a blocking websocket connection serves one request at a time.

On the network path every wait is bounded: opening a socket (the SDK's 10 s), one call
(the SDK's 30 s), an idle socket's keepalive (`_PING_INTERVAL` + `_PING_TIMEOUT`), closing
a broken one (`_CLOSE_TIMEOUT`). A connection that failed is closed and forgotten; one
found closed before a call (the server restarted since the last call) is replaced before
anything is sent, so the first call after a restart succeeds instead of failing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.backoff import exponential, spread
from app.logs import strip_query
from app.store.errors import (
    AlreadyExists,
    ConflictRetryable,
    ConstraintViolation,
    StoreError,
    StoreLocked,
    StoreUnavailable,
    Thrown,
    UnencodableParameters,
)

log = logging.getLogger(__name__)

EMBEDDED_SCHEMES = ("mem://", "memory://", "surrealkv://", "file://", "rocksdb://")
_CONFLICT_RETRIES = 8
# A websocket peer gone silent (half-open TCP after a crash or a partition) is noticed
# within _PING_INTERVAL + _PING_TIMEOUT seconds of idleness rather than the SDK's 40.
_PING_INTERVAL = 10.0
_PING_TIMEOUT = 5.0
# Closing a broken socket must not hold the caller for the library's 10 s handshake wait.
_CLOSE_TIMEOUT = 1.0


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the store lives and how to sign in."""

    url: str
    namespace: str = "videojobs"
    database: str = "videojobs"
    user: str | None = None
    password: str | None = None

    @property
    def embedded(self) -> bool:
        return self.url.startswith(EMBEDDED_SCHEMES)


def _embedded_url(url: str) -> str:
    """Make `surrealkv://var/db` an absolute path and create its parent directory."""
    for scheme in ("surrealkv://", "file://", "rocksdb://"):
        if url.startswith(scheme):
            path = url[len(scheme) :]
            if not path:
                raise StoreError(f"{url!r} names no directory")
            abs_path = os.path.abspath(path)
            os.makedirs(os.path.dirname(abs_path), exist_ok=True)
            return scheme + abs_path
    return url


def _classify(status: Mapping[str, Any]) -> StoreError:
    """Turn one failed statement into a typed error."""
    kind = str(status.get("kind") or "")
    message = str(status.get("result") or status.get("message") or "unknown store error")
    if kind == "Thrown" or message.startswith("An error occurred: "):
        return Thrown(message.removeprefix("An error occurred: ").strip())
    if kind == "AlreadyExists" or "already exists" in message or "already contains" in message:
        return AlreadyExists(message)
    if "must conform to" in message:
        return ConstraintViolation(message)
    if "can be retried" in message or "conflict" in message.lower():
        return ConflictRetryable(message)
    return StoreError(message)


# Statements that only report "a previous statement failed": skip them when looking
# for the statement that explains a failed transaction.
_FOLLOW_ON = (
    "The query was not executed due to a failed transaction",
    "The query was not executed due to a cancelled transaction",
    "Cannot COMMIT: the transaction was aborted due to a prior error",
)


def check_statements(response: Mapping[str, Any]) -> list[Any]:
    """Every statement's result, or the most telling error if any statement failed."""
    if "error" in response and "result" not in response:
        err = response["error"]
        message = err.get("message") if isinstance(err, Mapping) else str(err)
        raise _classify({"result": message})
    results = response.get("result")
    if not isinstance(results, list):
        raise StoreError(f"unexpected response from SurrealDB: {type(results).__name__}")
    failures = [s for s in results if isinstance(s, Mapping) and s.get("status") == "ERR"]
    if failures:
        telling = [f for f in failures if str(f.get("result")) not in _FOLLOW_ON]
        raise _classify((telling or failures)[0])
    return [s.get("result") if isinstance(s, Mapping) else s for s in results]


class Database:
    """Runs SurrealQL; the only object in the code base holding a SurrealDB connection."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self._shared: Any = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._network_conns: set[Any] = set()  # every thread's, so close() closes them all

    def _open(self) -> Any:
        from surrealdb import Surreal

        url = _embedded_url(self.config.url) if self.config.embedded else self.config.url
        conn = None
        try:
            conn = Surreal(url, ping_interval=_PING_INTERVAL, ping_timeout=_PING_TIMEOUT)
            conn.connect()
            if self.config.user and not self.config.embedded:
                conn.signin({"username": self.config.user, "password": self.config.password or ""})
            conn.use(self.config.namespace, self.config.database)
        except Exception as exc:  # the SDK raises many types; classify by message
            if conn is not None and not self.config.embedded:
                _close_quietly(conn)  # connected but sign-in or `use` failed: no leak
            text = str(exc)
            if "already locked" in text or "LOCK" in text:
                raise StoreLocked(
                    f"the embedded store at {self.config.url} is in use by another process; "
                    "stop it first, or use a SurrealDB server (ws://) for several processes"
                ) from exc
            raise StoreUnavailable(f"cannot open SurrealDB at {strip_query(url)}: {text}") from exc
        return conn

    def _connection(self) -> Any:
        if os.getpid() != self._pid:
            # A forked child must not reuse its parent's connection (it can hang): start over.
            self._pid = os.getpid()
            self._shared = None
            self._local = threading.local()
            self._network_conns = set()  # the parent's sockets: never close them here
        if self.config.embedded:
            if self._shared is None:
                with self._lock:
                    if self._shared is None:
                        self._shared = self._open()
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is not None and not _socket_open(conn):
            # Closed since our last call (server restarted, keepalive gave up): nothing
            # has been sent on it yet, so replacing it is safe and the call goes through.
            self._drop_thread_connection()
            conn = None
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._network_conns.add(conn)
        return conn

    def connect(self) -> None:
        """Open now (fail fast at start) rather than at the first query."""
        self._connection()

    def close(self) -> None:
        """Release the connection (and the embedded store's directory lock)."""
        with self._lock:
            if self._shared is not None:
                try:
                    self._shared.close()
                finally:
                    self._shared = None
        with self._lock:
            conns, self._network_conns = self._network_conns, set()
        self._local = threading.local()
        for conn in conns:
            _close_quietly(conn)

    def _drop_thread_connection(self) -> None:
        """Close and forget this thread's network connection after it failed."""
        if self.config.embedded:
            return
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._network_conns.discard(conn)
            _close_quietly(conn)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Run `sql`, check every statement, retry conflicts; one result per statement."""
        attempt = 0
        while True:
            attempt += 1
            try:
                raw = self._connection().query_raw(sql, dict(params or {}))
            except StoreError:
                raise
            except (UnicodeError, RecursionError) as exc:  # our parameters, not the store
                raise UnencodableParameters(f"query parameters cannot be encoded: {exc}"
                                            ) from exc
            except Exception as exc:
                self._drop_thread_connection()
                raise StoreUnavailable(f"SurrealDB call failed: {exc}") from exc
            try:
                return check_statements(raw)
            except ConflictRetryable:
                if attempt >= _CONFLICT_RETRIES:
                    raise
                time.sleep(spread(exponential(attempt, base=0.005, cap=0.5), 0.5))

    def ping(self) -> None:
        """Raise StoreUnavailable unless a trivial query round-trips."""
        self.query("RETURN 1;")


def _socket_open(conn: Any) -> bool:
    """False once a websocket connection is known closed (http ones have no socket)."""
    if not hasattr(conn, "socket"):
        return True  # http(s): a request per call, nothing to go stale
    sock = conn.socket
    if sock is None:
        return False  # closed: the SDK would reconnect lazily without sign-in or `use`
    return getattr(getattr(sock, "state", None), "name", "OPEN") == "OPEN"


def _close_quietly(conn: Any) -> None:
    """Close a connection that may already be broken, without waiting long on it."""
    sock = getattr(conn, "socket", None)
    if sock is not None and hasattr(sock, "close_timeout"):
        sock.close_timeout = _CLOSE_TIMEOUT
    try:
        conn.close()
    except Exception as exc:  # already broken: closing it is best effort
        log.debug("closing a broken SurrealDB connection failed: %s", exc)

