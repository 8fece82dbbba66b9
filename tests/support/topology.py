"""The production topology as processes: the Procfile's own lines, a restartable Redis.

`procfile_commands()` reads the Procfile; `ProcfileProcess` runs one of its lines through
the shell (as honcho or foreman would: `${VAR:-default}` expanded from the environment),
in a session of its own so that kill -9 takes the whole process (a Celery worker and its
pool children) down the way a crashed host or container would. Nothing here retypes a
command: a Procfile that does not start fails the tests that use it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import redis as redis_lib

ROOT = Path(__file__).resolve().parents[2]


def procfile_commands(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """`name: command` lines of a Procfile (comments and blank lines skipped)."""
    commands: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep:
            raise ValueError(f"not a Procfile line: {line!r}")
        commands[name.strip()] = command.strip()
    return commands


class ProcfileProcess:
    """One Procfile line running as a process group; its stdout and stderr go to a file."""

    def __init__(self, name: str, command: str, env: Mapping[str, str], log_dir: Path,
                 cwd: Path) -> None:
        self.name, self.command, self.env = name, command, dict(env)
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> ProcfileProcess:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {self.starts}: {self.command}\n".encode())
            log.flush()
            # `exec`: the shell becomes the command, so our pid is the process itself.
            self.proc = subprocess.Popen(
                ["bash", "-c", f"exec {self.command}"], env=self.env, cwd=self.cwd,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def group_pids(self) -> set[int]:
        """This process and its children (same process group)."""
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == self.pid:
                        pids.add(int(entry.name))
                except (ProcessLookupError, PermissionError):
                    continue
        return pids

    def kill9(self) -> None:
        """kill -9 of the whole group: the host went away mid-work."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 120) -> int | None:
        """SIGTERM to the process (what a supervisor sends on a deploy); wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def stop(self) -> None:
        """Teardown: SIGTERM to the group, kill -9 after 20 s."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server on a fixed free port, restartable (empty: nothing persisted)."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (.ci/run installs it)")
        self.exe = exe
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="vj-topology-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(
                [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.dir],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            client = redis_lib.Redis(port=self.port, socket_connect_timeout=1)
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    client.ping()
                    return
                except redis_lib.RedisError:
                    time.sleep(0.05)
            if time.monotonic() >= deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.2)  # the old one still held the port: try again

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart_empty(self, down_seconds: float = 1.0) -> None:
        """kill -9, stay down a moment, come back with nothing in it."""
        self.kill()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def client(self) -> redis_lib.Redis:
        return redis_lib.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
