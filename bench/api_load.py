"""API load benchmark: POST /api/templates/video and GET .../status beside /healthz.

Runs the real server process the README documents (gunicorn, gthread) and a private
redis-server, drives it with wrk (a standard HTTP load tool, Debian package `wrk`) at the
same concurrency for each endpoint, and prints requests/s and p50/p95/p99 with the
ratios to `/healthz` of the same processes in the same run.

    .venv/bin/python bench/api_load.py [--seconds 10] [--connections 16] [--threads 16]
    .venv/bin/python bench/api_load.py --store ws --web-processes 1,2

`--store embedded` (default): one gunicorn process on an embedded SurrealKV store.
`--store ws`: the multi-process deployment: gunicorn with 1, then 2 processes on a
SurrealDB server over ws:// (the test server `tests/support/surreal_server.py`, the real
engine behind /rpc, one call at a time; or the server named by SURREALDB_TEST_URL).
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
    parser.add_argument("--store", choices=("embedded", "ws"), default="embedded")
    parser.add_argument("--test-server-engine", choices=("surrealkv", "mem"),
                        default="surrealkv", help="the test server's engine (--store ws)")
    parser.add_argument("--web-processes", default=None,
                        help="comma-separated gunicorn process counts (default: 1 embedded, "
                        "1,2 on ws)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required: apt-get install wrk")
    counts = [int(n) for n in (args.web_processes or (
        "1" if args.store == "embedded" else "1,2")).split(",")]
    if args.store == "embedded" and counts != [1]:
        raise SystemExit("an embedded store belongs to one process: use --store ws")
    rows: list[tuple[int, dict[str, dict]]] = []
    for n in counts:
        rows.append((n, run_one(args, n)))
    server = ("SURREALDB_TEST_URL" if os.environ.get("SURREALDB_TEST_URL") else
              f"test server: embedded {args.test_server_engine} engine behind /rpc")
    where = ("embedded SurrealKV" if args.store == "embedded"
             else f"SurrealDB over ws:// ({server})")
    print(f"\n{args.connections} connections, {args.seconds} s each, gunicorn gthread x "
          f"{args.threads} threads, {where}, {os.cpu_count()} cores\n")
    print("| web processes | endpoint | req/s | p50 ms | p95 ms | p99 ms | errors "
          "| vs /healthz req/s | vs /healthz p99 | CPU (cores): web / store / redis |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for n, results in rows:
        ref = results["GET /healthz (reference)"]
        for name, r in results.items():
            print(f"| {n} | {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} | {r['errors'] + r['non2xx']} | "
                  f"{100 * r['rps'] / ref['rps']:.0f} % | {r['p99_ms'] / ref['p99_ms']:.1f}x | "
                  f"{_cpu_cell(r['cpu'])} |")
        post, status = (results["POST /api/templates/video"],
                        results["GET /api/templates/video/status"])
        status_share = 0.6 if args.store == "ws" else 0.7
        post_ok = post["rps"] >= 0.3 * ref["rps"] and post["p99_ms"] <= 4 * ref["p99_ms"]
        status_ok = (status["rps"] >= status_share * ref["rps"]
                     and status["p99_ms"] <= 2 * ref["p99_ms"])
        verdicts.append(f"{n} process(es): POST {'met' if post_ok else 'MISSED'}, "
                        f"status {'met' if status_ok else 'MISSED'}")
    print(f"\ntargets: POST >= 30 % and p99 <= 4x; status >= "
          f"{60 if args.store == 'ws' else 70} % and p99 <= 2x")
    for line in verdicts:
        print(line)
    return 0


def _cpu_cell(cpu: dict[str, float]) -> str:
    return " / ".join(f"{cpu[g]:.2f}" if g in cpu else "-" for g in ("web", "store", "redis"))


def run_one(args: argparse.Namespace, web_processes: int) -> dict[str, dict]:
    """Start redis, the store and gunicorn with `web_processes` processes; measure."""

    work = Path(tempfile.mkdtemp(prefix="vj-bench-"))
    redis_port, port = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    surreal = None
    store_url = f"surrealkv://{work / 'db'}"
    database = "videojobs"
    if args.store == "ws":
        store_url = os.environ.get("SURREALDB_TEST_URL", "")
        if store_url:
            database = f"bench{os.getpid()}x{web_processes}"
        else:
            sys.path.insert(0, str(ROOT))
            from tests.support.surreal_server import SurrealServer

            surreal = SurrealServer(
                work / "surreal" if args.test_server_engine == "surrealkv" else None).start()
            store_url = surreal.url
    env = {**os.environ, "SECRET_KEY": "bench-secret", "SURREALDB_URL": store_url,
           "SURREALDB_DATABASE": database, "STORAGE_DIR": str(work / "storage"),
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
            [str(BIN / "gunicorn"), "--workers", str(web_processes), "--worker-class", "gthread",
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
        # Warm-up: every process and thread opens its store connection first.
        wrk(base + "/api/templates/video/status?jobId=" + job_id,
            f'wrk.headers["Cookie"] = "{cookie}"\n', 2, args.connections, work)
        groups = {"web": [procs[-1].pid], "redis": [procs[0].pid]}
        if surreal is not None and surreal.pid is not None:
            groups["store"] = [surreal.pid]
        results = {}
        for name, (url, lua) in scenarios.items():
            before = {g: _cpu_seconds(pids) for g, pids in groups.items()}
            results[name] = wrk(url, lua, args.seconds, args.connections, work)
            results[name]["cpu"] = {g: (_cpu_seconds(pids) - before[g]) / results[name]["seconds"]
                                    for g, pids in groups.items()}
        return results
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if surreal is not None:
            surreal.stop()
        shutil.rmtree(work, ignore_errors=True)


def _cpu_seconds(roots: list[int]) -> float:
    """CPU time used so far by these processes and their children (gunicorn's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        stats[pid] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, list(roots)
    while todo:
        pid = todo.pop()
        total += stats.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _tiny_png() -> bytes:
    sys.path.insert(0, str(ROOT))
    from app.demo.sample import solid_png

    return solid_png(64, 64)


if __name__ == "__main__":
    sys.exit(main())
