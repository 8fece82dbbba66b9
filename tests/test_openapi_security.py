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
        query = {"jobId": "nope"} if path.endswith(("/status", "/webhooks")) else {}
        bare = client.get(path, query_string=query)
        assert bare.status_code == 401, path
        authorized = client.get(path, query_string=query,
                                headers={"Authorization": f"Bearer {token}"})
        assert authorized.status_code in (200, 404), (path, authorized.get_json())


def test_swagger_ui_authorize_then_try_it_out_in_chromium(app: Any, make_user: Any,
                                                          store: Store) -> None:
    """In Swagger UI: Authorize with an API token, then "Try it out" on GET /api/me."""
    import threading

    from werkzeug.serving import make_server

    from tests.conftest import free_port
    from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, sync_playwright

    user = make_user()
    token = store.tokens.create(user.id, user.email)
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert sync_playwright is not None, "playwright is a dev dependency"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.set_default_timeout(20_000)
                page.goto(base + "/api/docs")
                page.locator(".btn.authorize").first.click()
                bearer = page.locator(".auth-container").filter(has_text="bearerAuth")
                bearer.locator("input").fill(token)
                bearer.locator("button.authorize").click()
                page.locator(".btn-done").first.click()
                page.locator(".opblock-summary-path[data-path='/api/me']").first.click()
                page.locator(".try-out__btn").first.click()
                page.locator(".execute").first.click()
                live = page.locator(".live-responses-table tbody .response-col_status").first
                live.wait_for()
                assert live.inner_text().strip().startswith("200"), live.inner_text()
                body = page.locator(".live-responses-table tbody .response-col_description")
                assert user.email in body.first.inner_text()
            finally:
                browser.close()
    finally:
        server.shutdown()
