"""schemathesis (pinned) against a real gunicorn server: every documented operation,
`--checks all`, bounded examples, a fixed seed: 0 server errors, 0 non-conformant answers.

The server runs the production entry point (`gunicorn app.wsgi:app`) on an embedded
SurrealKV store prepared with the admin CLI (a user with credits, the demo templates, a
bearer token that schemathesis sends), and this session's redis-server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port

BIN = Path(sys.executable).parent
CONFIG = ROOT / "tests" / "support" / "schemathesis.toml"
SEED = 8
MAX_EXAMPLES = 100


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN / "videojobs"), *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def served(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, str]]:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SURREALDB_", "STORAGE_", "FAL_", "S3_", "PUBLIC_"))}
    env.update(SECRET_KEY="conformance-secret-key", REDIS_URL=redis_url,
               SURREALDB_URL=f"surrealkv://{data / 'db'}", STORAGE_DIR=str(data / "storage"),
               RATE_LIMIT_PER_MINUTE="0")  # exercise the logic, not the limiter
    _cli(env, "users", "create", "api@example.com", "--password", "a-long-password",
         "--credits", "1000000")
    _cli(env, "templates", "load", str(ROOT / "app" / "demo" / "templates.yaml"))
    token = _cli(env, "tokens", "create", "api@example.com").splitlines()[-1]
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "--worker-class", "gthread", "--threads", "8",
                             "app.wsgi:app"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if requests.get(base + "/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.time() < deadline, (
                tmp_path / "gunicorn.log").read_text()
            time.sleep(0.2)
        yield base, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_the_api_conforms_to_its_openapi_document(served: tuple[str, str],
                                                  tmp_path: Path) -> None:
    base, token = served
    report = tmp_path / "report.json"
    done = subprocess.run(
        [str(BIN / "schemathesis"), "--config-file", str(CONFIG), "run",
         f"{base}/api/openapi.json", "--checks", "all",
         "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
         # One worker: Python < 3.11.9 can fail compiling ASTs from two threads at once
         # ("AST constructor recursion depth mismatch", CPython gh-106905).
         "--workers", "1",
         "--phases", "examples,coverage,fuzzing", "--generation-database", "none",
         "--request-timeout", "20", "--no-color", "-H", f"Authorization: Bearer {token}",
         "--report", "json", "--report-json-path", str(report)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-3000:]
    assert "No issues found" in done.stdout or "passed" in done.stdout, done.stdout[-4000:]


def test_the_document_declares_the_real_error_shape_and_statuses(client: object) -> None:
    spec = client.get("/api/openapi.json").get_json()  # type: ignore[attr-defined]
    schemas = spec["components"]["schemas"]
    assert "Error" not in schemas  # flask-smorest's {code, status, message, errors}
    error = schemas["ApiError"]
    assert set(error["properties"]) == {"error", "details", "message"}
    assert error["required"] == ["error"]
    ops = {(m.upper(), p): op for p, item in spec["paths"].items() for m, op in item.items()}
    assert all("default" not in op["responses"] for op in ops.values())
    assert {"400", "415", "404", "401", "503"} <= set(
        ops[("POST", "/api/templates/video/cancel")]["responses"])
    assert {"413", "415", "429"} <= set(ops[("POST", "/api/library")]["responses"])
    assert "Retry-After" in ops[("POST", "/api/auth/login")]["responses"]["429"]["headers"]
    for (method, path), op in ops.items():
        for status, answer in op["responses"].items():
            if int(status) >= 400:
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ApiError"), (method, path, status)
