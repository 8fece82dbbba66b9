"""Outbound webhook latency: job `completed` → the client's receiver has the signed event.

Runs the real pieces in one process: a private redis-server, a Celery worker (threads)
consuming the control, transfer and webhooks queues, the sweeper (every second, as in
production), the web app on a loopback HTTP server with PUBLIC_BASE_URL set (so fal calls
back), the sandbox provider (no rendering), an embedded store, and a receiver on 127.0.0.1
that verifies every delivery with `standardwebhooks`' `Webhook(secret).verify`. For each
job: latency = the receiver's arrival time of `video.completed` − `completed_at` on the
job record (the moment the status change, and with it the outbox row, was committed).

    .venv/bin/python bench/webhook_out.py [--jobs 100]

Target: p95 <= 1 s.
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUEUE_S, RUN_S = 0.2, 0.5


class Receiver:
    """Records when each verified event arrives; counts what fails verification."""

    def __init__(self, secret: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from standardwebhooks.webhooks import Webhook

        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        self.bad = 0
        hook, me = Webhook(secret), self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                try:
                    event = hook.verify(body, dict(self.headers.items()))
                except Exception:  # noqa: BLE001
                    me.bad += 1
                    event = None
                if event is not None:
                    job_id = event["data"]["jobId"]
                    if job_id in me.arrived:
                        me.duplicates += 1
                    me.arrived.setdefault(job_id, now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    from celery.contrib.testing.worker import start_worker
    from werkzeug.serving import make_server

    from app import create_app
    from app.config import Settings
    from app.demo.sample import car_design_png
    from app.outbound import set_endpoint
    from app.passwords import hash_password
    from app.storage import LocalStorage, library_key
    from app.store import DatabaseConfig, Store
    from app.video_templates import load_template_file
    from app.videos import Caller, start_video
    from app.webhook_secrets import SecretBox
    from sandbox import SandboxProvider
    from workers import pipeline
    from workers.celery_app import make_celery
    from workers.context import build_context, set_context

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="vj-webhook-out-"))
    redis_port, web_port = free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    sandbox = SandboxProvider(queue_seconds=QUEUE_S, run_seconds=RUN_S, render=False)
    sandbox.start()
    worker = server = receiver = None
    stop = threading.Event()
    try:
        time.sleep(0.5)
        settings = Settings(
            secret_key="bench", surrealdb_url="mem://", embedded=True,
            redis_url=f"redis://127.0.0.1:{redis_port}/0", storage_dir=str(work / "storage"),
            fal_key="bench:key", fal_queue_url=sandbox.queue_url, fal_jwks_url=sandbox.jwks_url,
            allow_private_downloads=True, status_check_interval=3600, rate_limit_per_minute=0,
            public_base_url=f"http://127.0.0.1:{web_port}", allow_private_webhooks=True)
        store = Store.open(DatabaseConfig("mem://"))
        storage = LocalStorage(work / "storage", "bench")
        for template in load_template_file(ROOT / "app/demo/templates.yaml"):
            store.templates.upsert(template.to_record())
        user = store.users.create("bench@example.com", hash_password("x" * 12),
                                  credits=10**9)
        key = library_key(user["id"], "png")
        stored = storage.put_stream(key, io.BytesIO(car_design_png(160, 90)), "image/png")
        store.library.add(key=key, user_id=user["id"], kind="image",
                          content_type="image/png", size=stored.size)
        endpoint = set_endpoint(store, SecretBox("bench"), user["id"], user["email"],
                                "http://127.0.0.1:1/placeholder", True)
        receiver = Receiver(endpoint.secret)
        set_endpoint(store, SecretBox("bench"), user["id"], user["email"], receiver.url, True)
        celery = make_celery(settings)
        ctx = build_context(settings, celery, store=store, storage=storage)
        set_context(ctx)

        def sweeper() -> None:
            while not stop.wait(pipeline.SWEEP_PERIOD_SECONDS):
                pipeline.sweep(ctx)

        threading.Thread(target=sweeper, daemon=True).start()
        app = create_app(settings, store=store, storage=storage, celery=celery)
        server = make_server("127.0.0.1", web_port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        worker = start_worker(celery, pool="threads", concurrency=8, perform_ping_check=False,
                              loglevel="WARNING",
                              queues=["control", "checks", "transfer", "webhooks"])
        worker.__enter__()

        from app.queue import Enqueuer

        caller = Caller(user["id"], user["email"])
        job_ids = []
        for _ in range(args.jobs):
            started = start_video(store, Enqueuer(celery), caller,
                                  {"templateSlug": "night-life-roller", "startKey": key,
                                   "duration": "5", "variables": {}}, None, 600)
            job_ids.append(started.job_id)
            time.sleep(0.02)
        deadline = time.time() + 60 + args.jobs * 0.1
        while time.time() < deadline:
            done = [store.jobs.get(j) for j in job_ids]
            if all(j and j["status"] in ("completed", "failed") for j in done) \
                    and len(receiver.arrived) >= len(job_ids):
                break
            time.sleep(0.2)
        time.sleep(2)  # late duplicates, if any, would arrive now
        latencies, failed = [], 0
        for job in done:
            if not job or job["status"] != "completed" or job["id"] not in receiver.arrived:
                failed += 1
                continue
            latencies.append(receiver.arrived[job["id"]] - job["completed_at"].timestamp())
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

        print(f"\n{len(latencies)} events received and verified ({failed} missing), "
              f"{receiver.duplicates} duplicates, {receiver.bad} failed verification\n")
        print("| measure | p50 ms | p95 ms | p99 ms | max ms | mean ms |")
        print("|---|---|---|---|---|---|")
        print(f"| job completed → outbound webhook received | {pct(50):.0f} | "
              f"{pct(95):.0f} | {pct(99):.0f} | {latencies[-1] * 1000:.0f} | "
              f"{statistics.mean(latencies) * 1000:.0f} |")
        print(f"\ntarget p95 <= 1000 ms: {'met' if pct(95) <= 1000 else 'MISSED'}")
        return 0 if not failed and not receiver.bad else 1
    finally:
        stop.set()
        if receiver is not None:
            receiver.server.shutdown()
        if worker is not None:
            worker.__exit__(None, None, None)
        if server is not None:
            server.shutdown()
        sandbox.stop()
        redis.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
