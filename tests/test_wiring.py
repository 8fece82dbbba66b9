"""app/wiring.py: the web app, the workers and the CLI build their collaborators from the
same Settings the same way."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from app.config import Settings
from app.passwords import hash_password
from app.store import DatabaseConfig, Store
from app.wiring import WEB_REDIS, WORKER_REDIS, database_config
from tests.conftest import PASSWORD
from workers.celery_app import make_celery
from workers.context import build_context


def embedded_settings(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env({
        "SURREALDB_URL": f"surrealkv://{tmp_path / 'db'}", "SURREALDB_USER": "root",
        "SURREALDB_PASS": "root-pass", "REDIS_URL": "memory://", "SECRET_KEY": "wiring-key",
        "STORAGE_DIR": str(tmp_path / "storage"), "RATE_LIMIT_PER_MINUTE": "0", **extra})


def test_a_worker_and_the_web_app_from_one_settings_share_the_store(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    ctx = build_context(settings, make_celery(settings, broker_url="memory://"))
    try:
        ctx.store.users.create("ana@example.com", hash_password(PASSWORD), credits=7)
        assert ctx.secret_box is not None and ctx.schedule is not None
        assert ctx.fal.queue_url == settings.fal_queue_url
    finally:
        ctx.close()  # the embedded store is one process's at a time
    app = create_app(settings, redis_client=False)
    try:
        login = app.test_client().post("/api/auth/login",
                                       json={"email": "ana@example.com", "password": PASSWORD})
        assert login.status_code == 200, login.get_json()
        assert login.get_json()["credits"] == 7
    finally:
        app.extensions["videojobs"].store.close()


class Opened(Exception):
    """Stops an entry point right after it opened its store."""


@pytest.mark.parametrize("entry", ["web", "worker", "cli", "up"])
def test_every_entry_point_opens_the_store_with_the_credentials(
        entry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SURREALDB_URL": f"surrealkv://{tmp_path / 'db'}",
                        "SURREALDB_NAMESPACE": "ns", "SURREALDB_DATABASE": "db",
                        "SURREALDB_USER": "root", "SURREALDB_PASS": "root-pass",
                        "SECRET_KEY": "wiring-key", "REDIS_URL": "memory://"}.items():
        monkeypatch.setenv(name, value)
    opened: list[DatabaseConfig] = []

    def recording_open(config: DatabaseConfig, **_: Any) -> Store:
        opened.append(config)
        raise Opened

    monkeypatch.setattr(Store, "open", recording_open)
    settings = Settings.from_env(data_dir=str(tmp_path), embedded=True)
    with pytest.raises(Opened):
        if entry == "web":
            create_app(settings)
        elif entry == "worker":
            build_context(settings, make_celery(settings))
        elif entry == "cli":
            from app.cli import cmd_db_migrate

            cmd_db_migrate(argparse.Namespace(data_dir=str(tmp_path)))
        else:
            from app.oneprocess import run_all_in_one

            run_all_in_one(data_dir=str(tmp_path))
    assert opened == [database_config(settings)]
    assert opened[0] == DatabaseConfig(f"surrealkv://{tmp_path / 'db'}", "ns", "db", "root",
                                       "root-pass")


def test_web_and_workers_keep_their_own_redis_timeouts(tmp_path: Path, store: Store,
                                                       redis_url: str) -> None:
    settings = embedded_settings(tmp_path, REDIS_URL=redis_url)
    web = create_app(settings, store=store).extensions["videojobs"].limiter.redis
    worker = build_context(settings, make_celery(settings), store=store).enqueuer.redis
    for client, timeouts in ((web, WEB_REDIS), (worker, WORKER_REDIS)):
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (
            timeouts.connect, timeouts.read)
    assert (WEB_REDIS.read, WORKER_REDIS.read) == (0.5, 1.0)


def test_the_web_app_is_wired_without_importing_the_workers(tmp_path: Path) -> None:
    """The web side enqueues by task name: building it must not load `workers/`."""
    code = ("import sys\nfrom app import create_app\nfrom app.config import Settings\n"
            f"create_app(Settings(secret_key='k', surrealdb_url='mem://', "
            f"redis_url='memory://', storage_dir={str(tmp_path / 'storage')!r}))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'workers'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
