"""The OpenAPI document declares how to authenticate, so Swagger UI's Authorize works."""

from __future__ import annotations

from typing import Any

from app.store import Store

PUBLIC = {("/api/auth/login", "post"), ("/api/auth/logout", "post")}


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items()
            for method, op in item.items() if method in {"get", "post", "put", "delete"}]


def test_security_schemes_are_declared_on_every_protected_operation(client: Any) -> None:
    spec = client.get("/api/openapi.json").get_json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http" and schemes["bearerAuth"]["scheme"] == "bearer"
    cookie = schemes["cookieAuth"]
    assert cookie["type"] == "apiKey" and cookie["in"] == "cookie"
    assert cookie["name"] == client.application.config["SESSION_COOKIE_NAME"]
    protected = 0
    for path, method, op in operations(spec):
        if (path, method) in PUBLIC:
            assert "security" not in op, (path, method)
            continue
        assert op.get("security") == [{"bearerAuth": []}, {"cookieAuth": []}], (path, method)
        protected += 1
    assert protected >= 7


def test_declared_schemes_are_the_ones_the_api_accepts(client: Any, make_user: Any,
                                                       store: Store) -> None:
    """Every protected GET answers 401 without credentials and 2xx with the bearer scheme
    the document names (what Swagger UI sends after Authorize)."""
    user = make_user()
    token = store.tokens.create(user.id, user.email)
    spec = client.get("/api/openapi.json").get_json()
    gets = [path for path, method, op in operations(spec)
            if method == "get" and op.get("security") and "{" not in path]
    assert "/api/me" in gets and "/api/library" in gets
    for path in gets:
        query = {"jobId": "nope"} if path.endswith("/status") else {}
        bare = client.get(path, query_string=query)
        assert bare.status_code == 401, path
        authorized = client.get(path, query_string=query,
                                headers={"Authorization": f"Bearer {token}"})
        assert authorized.status_code in (200, 404), (path, authorized.get_json())
