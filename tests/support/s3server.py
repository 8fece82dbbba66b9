"""A real S3-compatible HTTP endpoint on loopback: moto's ThreadedMotoServer.

The server runs in a child process so that its in-memory copy of every object does not
count against this process (tests measure our upload's memory with tracemalloc). It
exits when stopped or as soon as its parent goes away (its stdin closes).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

_READY_PREFIX = "S3SERVER PORT "


def start_s3_server(timeout: float = 60.0) -> tuple[str, Callable[[], None]]:
    """Start moto on 127.0.0.1:<free port>; return its endpoint URL and a stop function."""
    proc = subprocess.Popen(
        [sys.executable, "-u", __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()  # blocks until the server has bound its port
    if not line.startswith(_READY_PREFIX):
        proc.kill()
        proc.wait(timeout=timeout)
        raise RuntimeError(f"moto server did not start (said {line!r})")
    port = int(line[len(_READY_PREFIX):])

    def stop() -> None:
        if proc.poll() is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    return f"http://127.0.0.1:{port}", stop


def _serve() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(f"{_READY_PREFIX}{server.get_host_and_port()[1]}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (stop() or its own exit)
    server.stop()


if __name__ == "__main__":
    _serve()
