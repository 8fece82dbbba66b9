"""API load benchmark: POST /api/templates/video and GET .../status beside /healthz.

Runs the real server process the README documents (gunicorn, one process, gthread) on an
embedded SurrealKV store and a private redis-server, drives it with wrk (a standard HTTP
load tool, Debian package `wrk`) at the same concurrency for each endpoint, and prints
requests/s and p50/p95/p99 with the ratios DESIGN.md section 6 sets as targets.

    .venv/bin/python bench/api_load.py [--seconds 10] [--connections 16] [--threads 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

LUA_REPORT = """
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "seconds": %.3f, "errors": %d, "non2xx": %d, '
    .. '"p50_ms": %.2f, "p95_ms": %.2f, "p99_ms": %.2f}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server did not come up at {url}")


def wrk(url: str, lua: str, seconds: int, connections: int, workdir: Path) -> dict:
    script = workdir / f"s{abs(hash(lua))}.lua"
    script.write_text(lua + LUA_REPORT)
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
                          "-s", str(script), url], capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    result = json.loads(line)
    result["rps"] = result["requests"] / result["seconds"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=16, help="gunicorn gthread threads")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="vj-bench-"))
    redis_port, port = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "SECRET_KEY": "bench-secret", "SURREALDB_URL":
           f"surrealkv://{work / 'db'}", "STORAGE_DIR": str(work / "storage"),
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "RATE_LIMIT_PER_MINUTE": "0"}
    try:
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL))
        cli = [str(BIN / "videojobs")]
        subprocess.run(cli + ["users", "create", "bench@example.com", "--password",
                              "bench-password", "--credits", "1000000000"], env=env, check=True)
        subprocess.run(cli + ["templates", "load", str(ROOT / "app/demo/templates.yaml")],
                       env=env, check=True)
        procs.append(subprocess.Popen(
            [str(BIN / "gunicorn"), "--workers", "1", "--worker-class", "gthread",
             "--threads", str(args.threads), "--bind", f"127.0.0.1:{port}",
             "--log-level", "warning", "app.wsgi:app"],
            env=env, cwd=ROOT, stderr=open(work / "gunicorn.log", "w")))
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz")

        session = requests.Session()
        assert session.post(base + "/api/auth/login", json={
            "email": "bench@example.com", "password": "bench-password"}).status_code == 200
        cookie = f"videojobs_session={session.cookies['videojobs_session']}"
        png = (ROOT / "app/demo/sample-design.png")
        data = png.read_bytes() if png.exists() else _tiny_png()
        key = session.post(base + "/api/library", files={"file": ("d.png", data)}).json()["key"]
        job_id = session.post(base + "/api/templates/video", json={
            "templateSlug": "night-life-roller", "startKey": key}).json()["jobId"]

        body = json.dumps({"templateSlug": "night-life-roller", "startKey": key})
        scenarios = {
            "GET /healthz (reference)": (base + "/healthz", ""),
            "POST /api/templates/video": (base + "/api/templates/video", (
                'wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(body)}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["Cookie"] = "{cookie}"\n')),
            "GET /api/templates/video/status": (
                base + f"/api/templates/video/status?jobId={job_id}",
                f'wrk.headers["Cookie"] = "{cookie}"\n'),
        }
        wrk(base + "/healthz", "", 2, args.connections, work)  # warm-up
        results = {name: wrk(url, lua, args.seconds, args.connections, work)
                   for name, (url, lua) in scenarios.items()}
        ref = results["GET /healthz (reference)"]
        print(f"\n{args.connections} connections, {args.seconds} s each, gunicorn 1 process "
              f"x {args.threads} threads, embedded SurrealKV, {os.cpu_count()} cores\n")
        print("| endpoint | req/s | p50 ms | p95 ms | p99 ms | errors | vs /healthz req/s "
              "| vs /healthz p99 |")
        print("|---|---|---|---|---|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} | {r['errors'] + r['non2xx']} | "
                  f"{100 * r['rps'] / ref['rps']:.0f} % | {r['p99_ms'] / ref['p99_ms']:.1f}x |")
        post, status = (results["POST /api/templates/video"],
                        results["GET /api/templates/video/status"])
        print("\ntargets: POST >= 30 % and p99 <= 4x; status >= 60 % and p99 <= 2x")
        post_ok = post["rps"] >= 0.3 * ref["rps"] and post["p99_ms"] <= 4 * ref["p99_ms"]
        status_ok = status["rps"] >= 0.6 * ref["rps"] and status["p99_ms"] <= 2 * ref["p99_ms"]
        print(f"POST:   {'met' if post_ok else 'MISSED'}")
        print(f"status: {'met' if status_ok else 'MISSED'}")
        return 0
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def _tiny_png() -> bytes:
    sys.path.insert(0, str(ROOT))
    from app.demo.sample import solid_png

    return solid_png(64, 64)


if __name__ == "__main__":
    sys.exit(main())
