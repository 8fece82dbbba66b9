"""Video transfer benchmark: download_to_storage beside a raw copy of the same bytes.

A child process serves a generated body (deterministic, made per chunk, never held whole)
over HTTP on loopback. Each measured transfer runs in a fresh child process that reports
wall time and its peak RSS growth (VmHWM after minus VmRSS before, with the high-water mark
reset through /proc/self/clear_refs), so imports and warm-up are not counted:

- raw copy → file: ``requests`` ``iter_content(1 MiB)`` into a file, fsync (the reference)
- download_to_storage → LocalStorage (which also fsyncs, then renames)
- raw copy → S3: the response's raw stream handed straight to boto3 ``upload_fileobj``
- download_to_storage → S3Storage; S3 is moto's server (tests/support/s3server.py) in its
  own process, so its memory is not ours.

    .venv/bin/python bench/transfer.py [--size-mib 1024] [--s3-size-mib 1024] [--repeat 3]

Target (README, Performance): ≥ 50 % of the raw copy's speed, peak RSS growth ≤ 64 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
_PATTERN = bytes(range(251))
_POOL = _PATTERN * (MiB // len(_PATTERN) + 2)
KEY = "users/bench/library/0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4.mp4"
READY = "BODY SERVER PORT "


# --- the body server (child process) ---------------------------------------------------------


def body_chunks(size: int) -> Iterator[memoryview]:
    """Chunk i is a 1 MiB window of a 1 MiB pool at a shifting offset: deterministic, cheap."""
    view = memoryview(_POOL)
    pos = index = 0
    while pos < size:
        n = min(MiB, size - pos)
        offset = (index * 7) % len(_PATTERN)
        yield view[offset:offset + n]
        pos += n
        index += 1


class _BodyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        size = int(self.path.split("?", 1)[0].strip("/").split("/")[1])  # /body/<size>/x.mp4
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            for chunk in body_chunks(size):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def serve() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BodyHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdout.write(f"{READY}{server.server_address[1]}\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the parent closes our stdin
    server.shutdown()


# --- one measured transfer (fresh child process) ---------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _s3_client(endpoint: str) -> Any:
    from app.config import Settings
    from app.storage import make_s3_client

    return make_s3_client(Settings(s3_endpoint_url=endpoint, s3_region="us-east-1",
                                   aws_access_key_id="bench", aws_secret_access_key="bench"))


def measure(mode: str, url: str, size: int, workdir: str, endpoint: str, bucket: str) -> None:
    import requests

    from app.storage import LocalStorage, S3Storage, _s3_transfer_config
    from workers.transfer import TransferLimits, download_to_storage

    limits = TransferLimits(max_bytes=size + MiB, allow_private=True)
    client = _s3_client(endpoint) if mode.endswith("s3") else None
    if client is not None:
        client.head_bucket(Bucket=bucket)  # warm: endpoint, models, connection pool
    local = LocalStorage(Path(workdir), "bench")
    s3 = S3Storage(bucket, client) if client is not None else None
    requests.get(url.replace(f"/{size}/", "/1/"), timeout=5).close()  # warm the HTTP stack

    reset = True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        reset = False
    rss_before = _status_kib("VmRSS")
    started = time.perf_counter()
    if mode == "raw-local":
        target = Path(workdir) / "raw.bin"
        with requests.get(url, stream=True, timeout=(5, 30)) as resp, open(target, "wb") as out:
            resp.raise_for_status()
            for chunk in resp.iter_content(MiB):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        stored_size = target.stat().st_size
    elif mode == "transfer-local":
        stored_size = download_to_storage(url, local, KEY, limits).size
    elif mode == "raw-s3":
        assert client is not None
        with requests.get(url, stream=True, timeout=(5, 30)) as resp:
            resp.raise_for_status()
            client.upload_fileobj(resp.raw, bucket, KEY, ExtraArgs={"ContentType": "video/mp4"},
                                  Config=_s3_transfer_config())
        stored_size = int(client.head_object(Bucket=bucket, Key=KEY)["ContentLength"])
    elif mode == "transfer-s3":
        assert s3 is not None
        stored_size = download_to_storage(url, s3, KEY, limits).size
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - started
    hwm_after = _status_kib("VmHWM")
    if stored_size != size:
        raise SystemExit(f"{mode}: stored {stored_size} bytes, expected {size}")
    print(json.dumps({"mode": mode, "bytes": size, "seconds": seconds,
                      "rss_growth_kib": hwm_after - rss_before, "hwm_reset": reset}))


# --- the driver ------------------------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-u", __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _run(mode: str, url: str, size: int, workdir: Path, endpoint: str,
         bucket: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", mode, "--url", url, "--size", str(size),
         "--dir", str(workdir), "--endpoint", endpoint, "--bucket", bucket],
        check=True, capture_output=True, text=True, timeout=1800)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--s3-size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds (modes interleaved); the median round is reported")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.measure:
        measure(args.measure, args.url, args.size, args.dir, args.endpoint, args.bucket)
        return

    from tests.support.s3server import start_s3_server

    body = _child("--serve")
    assert body.stdout is not None and body.stdin is not None
    line = body.stdout.readline()
    if not line.startswith(READY):
        raise SystemExit(f"body server did not start: {line!r}")
    base = f"http://127.0.0.1:{int(line[len(READY):])}"
    endpoint, stop_s3 = start_s3_server()
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client = _s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    local_size, s3_size = args.size_mib * MiB, args.s3_size_mib * MiB
    plan = [("raw-local", "raw copy → file, fsync (reference)", local_size),
            ("transfer-local", "download_to_storage → LocalStorage", local_size),
            ("raw-s3", "raw stream → boto3 → moto S3 (reference)", s3_size),
            ("transfer-s3", "download_to_storage → S3Storage (moto)", s3_size)]
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode, _, _ in plan}
    try:
        with tempfile.TemporaryDirectory(prefix="vj-bench-") as tmp:
            workdir = Path(tmp)

            def once(mode: str, size: int) -> dict[str, Any]:
                url = f"{base}/body/{size}/video.mp4?X-Amz-Signature=bench"
                result = _run(mode, url, size, workdir, endpoint, bucket)
                for leftover in workdir.rglob("*"):
                    if leftover.is_file():
                        leftover.unlink()
                if mode.endswith("s3"):
                    client.delete_object(Bucket=bucket, Key=KEY)  # frees moto's memory
                return result

            for mode in ("raw-local", "transfer-local"):  # warm-up: page cache, disk, imports
                once(mode, min(local_size, 256 * MiB))
            for round_ in range(args.repeat):
                order = plan if round_ % 2 == 0 else plan[::-1]
                for mode, _, size in order:
                    sys.stderr.write(f"round {round_ + 1}: {mode} ({size // MiB} MiB)\n")
                    results[mode].append(once(mode, size))
    finally:
        stop_s3()
        body.stdin.close()
        body.wait(timeout=10)

    def rate(r: dict[str, Any]) -> float:
        return float(r["bytes"]) / float(r["seconds"]) / 1e6

    median = {mode: sorted(runs, key=rate)[len(runs) // 2] for mode, runs in results.items()}
    print(f"{args.repeat} interleaved rounds, median by speed; RSS growth is the worst round.")
    print()
    print("| transfer | size | seconds | MB/s | vs raw copy → file | vs same-target raw "
          "| peak RSS growth |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, label, size in plan:
        r = median[mode]
        same = median["raw-s3" if mode.endswith("s3") else "raw-local"]
        growth = max(run["rss_growth_kib"] for run in results[mode]) / 1024
        print(f"| {label} | {size // MiB} MiB | {r['seconds']:.2f} | {rate(r):.0f} "
              f"| {100 * rate(r) / rate(median['raw-local']):.0f} % "
              f"| {100 * rate(r) / rate(same):.0f} % | {growth:.1f} MiB |")
    if not all(run["hwm_reset"] for runs in results.values() for run in runs):
        print("\n(VmHWM could not be reset: growth measured against the import-time peak)")


if __name__ == "__main__":
    main()
