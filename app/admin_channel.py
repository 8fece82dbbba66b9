"""Admin commands beside a running `videojobs up`: store calls over a private Unix socket.

The embedded store belongs to one process, so while `videojobs up` holds it an admin
command cannot open it. Instead the service listens on a Unix socket next to its store
(`<data-dir>/db.admin.sock`, mode 0600) and runs the store calls sent to it on the store
it holds. The command itself still runs in its own process, unchanged: its
`store.<repository>.<method>(...)` calls (any repository, any method, so commands added
later work too) travel over the socket and their results or exceptions come back. So the
output, exit codes and one-line errors are those of the same command with the service
stopped.

Only the data directory's owner can use it: the socket file is mode 0600, and the service
also checks the connecting process's uid (SO_PEERCRED) and refuses any other uid before
reading a byte. Frames are pickled; that is safe only because of that check: a peer with
the same uid could already do anything the service can.

    frame  = 4-byte big-endian length + pickle
    server → ("hello", pid) on connect, or ("error", why) and hang up
    client → ("call", ("users", "create"), args, kwargs)
    server → ("ok", value) | ("raise", exception) | ("error", text)
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import struct
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOCKET_SUFFIX = ".admin.sock"
_MAX_FRAME = 64 * 1024 * 1024
_SUN_PATH_LIMIT = 100  # sockaddr_un holds 108 bytes; longer paths go through /proc/self/fd
_CALL_TIMEOUT = 120.0


class AdminChannelError(Exception):
    """The running service's admin channel could not be used (message is one line)."""


def socket_path_for(surrealdb_url: str) -> Path | None:
    """Where a service holding this embedded store listens; None for other stores."""
    prefix = "surrealkv://"
    if not surrealdb_url.startswith(prefix):
        return None
    store_dir = Path(surrealdb_url[len(prefix):]).resolve()
    return store_dir.with_name(store_dir.name + SOCKET_SUFFIX)


def _address(path: Path) -> tuple[str, int | None]:
    """A bindable/connectable address for `path`, opening its directory when it is long."""
    if len(os.fsencode(str(path))) <= _SUN_PATH_LIMIT:
        return str(path), None
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def _send(sock: socket.socket, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(struct.pack(">I", len(data)) + data)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the admin channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> Any:
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > _MAX_FRAME:
        raise ConnectionError("admin channel frame too large")
    return pickle.loads(_recv_exact(sock, size))


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# ---- the service side ----------------------------------------------------------------------

class AdminServer:
    """Serves store calls to admin commands of this uid; one thread per connection."""

    def __init__(self, path: Path, store: Any) -> None:
        self.path = path
        self.store = store
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        with suppress(FileNotFoundError):
            # We hold the store's lock, so a socket file here is a dead service's leftover.
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address, fd = _address(self.path)
        old_umask = os.umask(0o177)  # created 0600: no window where others may connect
        try:
            listener.bind(address)
        finally:
            os.umask(old_umask)
            if fd is not None:
                os.close(fd)
        os.chmod(self.path, 0o600)
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept_loop, name="admin-channel", daemon=True).start()
        log.info("admin commands reach this process through %s", self.path)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with suppress(FileNotFoundError):
            self.path.unlink()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._serve, args=(conn,), name="admin-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            uid = _peer_uid(conn)
            if uid != os.getuid():
                log.warning("admin channel: refused a connection from uid %d", uid)
                with suppress(OSError):
                    _send(conn, ("error", "refused this admin command: only the data "
                                          "directory's owner may use its admin channel"))
                return
            try:
                _send(conn, ("hello", os.getpid()))
            except OSError:
                return
            while True:
                try:
                    request = _recv(conn)
                except (ConnectionError, OSError, EOFError):
                    return
                except Exception:  # a frame we cannot read: say so and hang up
                    with suppress(OSError):
                        _send(conn, ("error", "unreadable request"))
                    return
                with suppress(OSError):
                    _send(conn, self._answer(request))

    def _answer(self, request: Any) -> tuple[str, Any]:
        try:
            kind, path, args, kwargs = request
            target = self._resolve(kind, path)
        except (ValueError, TypeError, AttributeError) as exc:
            return "error", f"not a store call: {exc}"
        try:
            return "ok", target(*args, **kwargs)
        except Exception as exc:  # the command's own error handling decides what it means
            try:
                pickle.dumps(exc)
                return "raise", exc
            except Exception:
                return "error", f"{type(exc).__name__}: {exc}"

    def _resolve(self, kind: str, path: tuple[str, ...]) -> Any:
        if kind != "call" or not path or path[-1] == "close":
            raise ValueError(f"{kind} {'.'.join(map(str, path))}")
        target = self.store
        for name in path:
            if not isinstance(name, str) or name.startswith("_"):
                raise ValueError(f"private name {name!r}")
            target = getattr(target, name)
        if not callable(target):
            raise TypeError(f"{'.'.join(path)} is not callable")
        return target


# ---- the admin command side ----------------------------------------------------------------

class _RemoteAttribute:
    """`remote.users.create` builds the path; calling it sends the call."""

    def __init__(self, channel: RemoteStore, path: tuple[str, ...]) -> None:
        self._channel = channel
        self._path = path

    def __getattr__(self, name: str) -> _RemoteAttribute:
        if name.startswith("_"):
            raise AttributeError(name)
        return _RemoteAttribute(self._channel, (*self._path, name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.call(self._path, args, kwargs)


class RemoteStore:
    """Stands in for `Store` in an admin command while the service holds the store."""

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self._sock = sock
        self._path = path
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> _RemoteAttribute:
        if name.startswith("_"):
            raise AttributeError(name)
        return _RemoteAttribute(self, (name,))

    def call(self, path: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            try:
                _send(self._sock, ("call", path, args, kwargs))
                kind, value = _recv(self._sock)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                raise AdminChannelError(f"lost the running service's admin channel "
                                        f"({self._path}): {exc}") from None
        if kind == "ok":
            return value
        if kind == "raise" and isinstance(value, BaseException):
            raise value
        raise AdminChannelError(f"the running service's admin channel: {value}")

    def close(self) -> None:
        """Hang up; the service's own store stays open."""
        with suppress(OSError):
            self._sock.close()


def connect(path: Path) -> RemoteStore | None:
    """The running service's store, or None when no service listens at `path`."""
    try:
        if not path.is_socket():
            return None
    except PermissionError:
        raise AdminChannelError(f"cannot reach {path}: permission denied (only the data "
                                f"directory's owner may run admin commands)") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_CALL_TIMEOUT)
    try:
        address, fd = _address(path)
    except PermissionError:
        sock.close()
        raise AdminChannelError(f"cannot reach {path}: permission denied (only the data "
                                f"directory's owner may run admin commands)") from None
    try:
        sock.connect(address)
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        return None  # a leftover of a service that died: the store is free again
    except PermissionError:
        sock.close()
        raise AdminChannelError(f"cannot use the running service's admin channel {path}: "
                                f"permission denied (only the data directory's owner "
                                f"may)") from None
    finally:
        if fd is not None:
            os.close(fd)
    try:
        kind, detail = _recv(sock)
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        sock.close()
        raise AdminChannelError(f"the running service's admin channel {path} did not "
                                f"answer: {exc}") from None
    if kind != "hello":
        sock.close()
        raise AdminChannelError(f"the running service {detail}")
    return RemoteStore(sock, path)
