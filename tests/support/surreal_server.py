"""A SurrealDB server for tests and benchmarks: the real embedded engine behind `/rpc`.

No SurrealDB server binary can be installed on the development machines, but the
embedded engine (`surrealdb_embedded`) speaks the server's wire protocol: its
`execute(bytes) -> bytes` takes the very CBOR RPC frames that the SDK's WebSocket
transport sends and returns the server's answer frames. This module puts a WebSocket
endpoint at `/rpc` (subprotocol `cbor`) in front of one engine, in its own process, so
several processes (gunicorn workers, Celery workers, benchmarks) share one store over
`ws://` exactly as they would share a real `surreal start`.

It is a test part, like the S3 endpoint; production uses SurrealDB's own server.
Its limits, on purpose:
- one session shared by every connection: `use`, `let` and sign-in state are the
  engine's single session, so every client must use the same namespace and database;
- no auth: `signin`/`authenticate`/`invalidate` are answered with success and check
  nothing (so clients configured with credentials still connect);
- no live queries (LIVE SELECT does not work on the embedded engine);
- one call at a time: frames are handed to the engine one by one under a lock
  (concurrent `execute` calls wedged the engine under a burst of transactions), so a
  long query delays every client;
- loopback only, plain `ws://`.

Restartable on the same data directory (`surrealkv://DIR`) and port: `kill()` then
`start()` is a store outage and recovery; data written before survives.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_READY_PREFIX = "SURREAL SERVER PORT "
_AUTH_METHODS = ("signin", "signup", "authenticate", "invalidate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SurrealServer:
    """One server process on 127.0.0.1; `url` stays the same across restarts."""

    def __init__(self, data_dir: str | Path | None = None, port: int | None = None) -> None:
        # `mem://` when no directory: fast, but nothing survives a restart.
        self.engine_url = f"surrealkv://{Path(data_dir).resolve()}" if data_dir else "mem://"
        self.port = port or _free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"vj-surreal-{self.port}.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/rpc"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 60.0) -> SurrealServer:
        """Start (or restart) on the same port and data; return once it accepts frames."""
        if self.pid is not None:
            return self
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, "a") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-u", __file__, "--port", str(self.port),
                     "--engine", self.engine_url],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
            assert proc.stdout is not None
            line = proc.stdout.readline()  # blocks until bound (or the child died)
            if line.startswith(_READY_PREFIX):
                self.proc = proc
                return self
            proc.kill()
            proc.wait(timeout=10)
            # Right after a kill the old process may still hold the port or the
            # directory's lock for a moment: try again until the deadline.
            if time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-800:]
                raise RuntimeError(f"surreal test server did not start: {tail}")
            time.sleep(0.2)

    def kill(self) -> None:
        """kill -9: the store disappears mid-call, as a crashed server would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Orderly stop (closes its stdin, then the engine), or kill after 10 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> SurrealServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# ---------------------------------------------------------------- the child process


def _auth_answer(frame: bytes) -> bytes | None:
    """The success answer to a sign-in call (no auth here), or None for other calls."""
    if not any(m.encode() in frame for m in _AUTH_METHODS):
        return None  # cheap pre-check: almost every frame is a query
    from surrealdb.cbor import dumps, loads

    try:
        request = loads(frame)
    except Exception:
        return None
    if not isinstance(request, dict) or request.get("method") not in _AUTH_METHODS:
        return None
    result: Any = None if request["method"] == "invalidate" else "test-server-no-auth"
    return bytes(dumps({"id": request.get("id"), "result": result}))


async def _serve(port: int, engine_url: str) -> None:
    from surrealdb_embedded import AsyncEmbeddedDB
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Request, Response

    engine = AsyncEmbeddedDB(engine_url)
    await engine.connect()
    lock = asyncio.Lock()

    async def call(frame: bytes) -> bytes:
        answer = _auth_answer(frame)
        if answer is not None:
            return answer
        async with lock:
            return bytes(await engine.execute(frame))

    async def handler(ws: ServerConnection) -> None:
        try:
            async for frame in ws:
                data = frame if isinstance(frame, bytes) else frame.encode()
                await ws.send(await call(data))
        except ConnectionClosed:
            pass

    def only_rpc(ws: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != "/rpc":
            return ws.respond(404, "only /rpc is served here\n")
        return None

    stop = asyncio.get_running_loop().create_future()

    def on_stdin_closed() -> None:
        if not stop.done():
            stop.set_result(None)

    def on_stdin_readable() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            on_stdin_closed()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stdin_closed)
    async with serve(handler, "127.0.0.1", port, subprotocols=["cbor"],  # type: ignore[list-item]
                     process_request=only_rpc, max_size=None, compression=None,
                     ping_interval=None):
        print(f"{_READY_PREFIX}{port}", flush=True)
        # Stop when the parent closes our stdin (stop(), or the parent's own exit).
        loop.add_reader(sys.stdin.fileno(), on_stdin_readable)
        await stop
    async with lock:
        await engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", default="mem://", help="mem:// or surrealkv://DIR")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.engine))


if __name__ == "__main__":
    main()
