"""Operators' endpoints and the generated OpenAPI document."""

from __future__ import annotations

from typing import Any

from app import create_app
from tests.conftest import free_port


def test_healthz_and_readyz(client: Any) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"store": "ok", "broker": "ok"}


def test_readyz_names_a_dead_broker(settings: Any, store: Any) -> None:
    app = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"),
                     store=store)
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["store"] == "ok"
    assert resp.get_json()["checks"]["broker"].startswith("unavailable")


def test_metrics_count_requests_jobs_and_credits(settings: Any, store: Any,
                                                 templates_loaded: None) -> None:
    from tests.conftest import UserSession

    app = create_app(settings.replace(metrics_token="m-token"), store=store)
    user = UserSession(app, store, "metrics@example.com", 1000)
    assert user.start(user.upload()).status_code == 200
    text = app.test_client().get("/metrics", headers={"Authorization": "Bearer m-token"}
                                 ).get_data(as_text=True)
    assert "videojobs_http_requests_total" in text
    assert 'route="/api/templates/video"' in text
    assert "videojobs_http_request_seconds_bucket" in text
    assert 'videojobs_jobs_created_total{template="night-life-roller"}' in text
    assert "videojobs_credits_charged_total" in text


def test_openapi_document_and_docs_page(client: Any) -> None:
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in ("/api/templates/video", "/api/templates/video/status",
                 "/api/templates/video/jobs", "/api/templates/video/cancel", "/api/templates",
                 "/api/library", "/api/auth/login", "/api/me"):
        assert path in paths, path
    post = paths["/api/templates/video"]["post"]
    schema_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert set(schema["required"]) == {"templateSlug", "startKey"}
    for code in ("200", "400", "402", "404", "409", "415", "429"):
        assert code in post["responses"], code
    page = client.get("/api/docs")
    assert page.status_code == 200 and b"swagger-ui" in page.data
    assert client.get("/api/docs/static/swagger-ui-bundle.js").status_code == 200


def test_unknown_api_path_is_json_404(client: Any) -> None:
    resp = client.get("/api/nope")
    assert resp.status_code == 404 and resp.get_json() == {"error": "Not found"}
