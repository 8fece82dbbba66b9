"""Login, logout, /api/me, bearer tokens and the cookie's flags (docs/api.md §2)."""

from __future__ import annotations

from typing import Any

from app.store import Store
from tests.conftest import PASSWORD


def test_login_sets_httponly_lax_cookie_and_me_works(client: Any, make_user: Any) -> None:
    user = make_user(credits=42)
    resp = client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert resp.status_code == 200
    assert resp.get_json() == {"email": user.email, "credits": 42}
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    me = client.get("/api/me")
    assert me.status_code == 200 and me.get_json() == {"email": user.email, "credits": 42}


def test_cookie_is_secure_over_https(app: Any, make_user: Any) -> None:
    user = make_user()
    c = app.test_client()
    resp = c.post("/api/auth/login", json={"email": user.email, "password": PASSWORD},
                  base_url="https://localhost")
    assert resp.status_code == 200 and "Secure" in resp.headers["Set-Cookie"]


def test_wrong_password_and_unknown_email_answer_the_same(client: Any, make_user: Any) -> None:
    user = make_user()
    wrong = client.post("/api/auth/login", json={"email": user.email, "password": "nope"})
    unknown = client.post("/api/auth/login", json={"email": "ghost@example.com",
                                                   "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json() == {"error": "INVALID_CREDENTIALS"}
    assert "Set-Cookie" not in wrong.headers
    assert client.get("/api/me").status_code == 401


def test_login_validation_and_media_type(client: Any) -> None:
    resp = client.post("/api/auth/login", json={"email": "a@b.c"})
    assert resp.status_code == 400 and "password" in resp.get_json()["details"]
    resp = client.post("/api/auth/login", data="email=a&password=b",
                       content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 415


def test_logout_forgets_the_session(make_user: Any) -> None:
    user = make_user()
    assert user.client.get("/api/me").status_code == 200
    assert user.client.post("/api/auth/logout").status_code == 204
    resp = user.client.get("/api/me")
    assert resp.status_code == 401 and resp.get_json() == {"error": "UNAUTHORIZED"}


def test_tampered_cookie_is_rejected(app: Any, make_user: Any) -> None:
    user = make_user()
    cookie = user.client.get_cookie("videojobs_session")
    c = app.test_client()
    c.set_cookie("videojobs_session", cookie.value[:-2] + ("AA" if cookie.value[-2:] != "AA"
                                                           else "BB"))
    assert c.get("/api/me").status_code == 401


def test_bearer_token_is_stored_hashed(client: Any, make_user: Any, store: Store) -> None:
    user = make_user(credits=7)
    token = store.tokens.create(user.id, user.email)
    resp = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and resp.get_json()["credits"] == 7
    dump = str(store.db.query("SELECT * FROM api_token;"))
    assert token not in dump and token[3:] not in dump
    assert client.get("/api/me", headers={"Authorization": "Bearer vj_wrong"}).status_code == 401
    assert client.get("/api/me", headers={"Authorization": f"Token {token}"}).status_code == 401


def test_cross_site_logout_and_upload_are_rejected(make_user: Any) -> None:
    user = make_user()
    resp = user.client.post("/api/auth/logout", headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403 and resp.get_json() == {"error": "CSRF_REJECTED"}
    assert user.client.get("/api/me").status_code == 200
    resp = user.client.delete("/api/library?key=x", headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403
