"""Security headers on every response, no version banner, links never from the Host
header, HSTS over https (directly or through trusted proxies), /metrics behind a token,
405 with Allow."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from app import create_app
from app.config import Settings
from app.store import Store
from tests.conftest import free_port

PATHS = ["/", "/healthz", "/api/me", "/api/templates", "/api/openapi.json", "/api/docs",
         "/api/nope", "/files/nope"]


@pytest.mark.parametrize("path", PATHS)
def test_every_response_carries_the_security_headers(client: Any, path: str) -> None:
    resp = client.get(path)
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in resp.headers  # plain http


def test_authenticated_json_is_never_cached(make_user: Any) -> None:
    user = make_user()
    user.upload()
    for path in ("/api/me", "/api/library", "/api/templates/video/jobs"):
        resp = user.client.get(path)
        assert resp.status_code == 200
        assert resp.headers["Cache-Control"] == "no-store", path


def test_pages_have_a_csp_without_inline_scripts(client: Any) -> None:
    for path in ("/", "/api/docs"):
        resp = client.get(path)
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split(
            "script-src")[1].split(";")[0]
        assert "<script>" not in resp.get_data(as_text=True)  # only <script src=...>
    assert client.get("/api/docs/init.js").status_code == 200


def test_hsts_over_https_and_only_trusted_proxies_count(settings: Settings, store: Store
                                                        ) -> None:
    direct = create_app(settings, store=store).test_client()
    assert "Strict-Transport-Security" in direct.get(
        "/healthz", base_url="https://videos.example").headers
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    # nobody is trusted by default: a client cannot claim https (or an address)
    assert "Strict-Transport-Security" not in direct.get("/healthz", headers=forwarded).headers
    proxied = create_app(settings.replace(trusted_proxy_count=1), store=store).test_client()
    resp = proxied.get("/healthz", headers=forwarded)
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")


def test_links_come_from_public_base_url_never_from_host(settings: Settings, store: Store,
                                                         templates_loaded: None) -> None:
    from tests.conftest import UserSession

    for base, prefix in ((None, "/files/"), ("https://videos.example.com",
                                             "https://videos.example.com/files/")):
        app = create_app(settings.replace(public_base_url=base), store=store)
        user = UserSession(app, store, f"links{int(bool(base))}@example.com", 0)
        user.upload()
        token = store.tokens.create(user.id, user.email)
        resp = app.test_client().get("/api/library", headers={
            "Host": "evil.example", "X-Forwarded-Host": "evil.example",
            "Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.get_json()
        url = resp.get_json()["items"][0]["url"]
        assert url.startswith(prefix) and "evil" not in url, url


def test_metrics_need_the_token(settings: Settings, store: Store) -> None:
    closed = create_app(settings, store=store).test_client()
    assert closed.get("/metrics").status_code == 404
    app = create_app(settings.replace(metrics_token="s3cret-metrics"), store=store)
    c = app.test_client()
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = c.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert ok.status_code == 200 and "videojobs_http_requests_total" in ok.get_data(True)


def test_405_says_which_methods_are_allowed(client: Any) -> None:
    resp = client.delete("/api/templates")
    assert resp.status_code == 405
    assert resp.get_json() == {"error": "METHOD_NOT_ALLOWED"}
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET"}


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            assert proc.poll() is None, "server exited"
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def test_no_version_banner_from_gunicorn(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "SECRET_KEY": "k" * 32, "SURREALDB_URL": "mem://", "REDIS_URL": redis_url,
           "STORAGE_DIR": str(tmp_path / "s")}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "--bind",
                             f"127.0.0.1:{port}", "--workers", "1", "app.wsgi:app"],
                            env=env, cwd=Path(__file__).parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{port}/healthz", proc)
        resp = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        server = resp.headers.get("Server", "")
        assert not any(ch.isdigit() for ch in server), server
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_no_version_banner_from_the_one_process_server(tmp_path: Path,
                                                       up_env: dict[str, str]) -> None:
    from tests.test_oneprocess import Up

    up = Up(tmp_path / "data", up_env)
    try:
        resp = requests.get(up.base + "/healthz", timeout=5)
        assert "Werkzeug" not in resp.headers.get("Server", "")
        assert "Python" not in resp.headers.get("Server", "")
    finally:
        up.stop()
