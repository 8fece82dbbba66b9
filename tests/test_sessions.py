"""Sessions really end: logout and a password change void every copy of the cookie."""

from __future__ import annotations

from typing import Any

from app.passwords import hash_password
from app.store import Store
from tests.conftest import PASSWORD


def _copy_of(user: Any, app: Any) -> Any:
    """A second client replaying the user's exact cookie (a stolen or saved copy)."""
    cookie = user.client.get_cookie("videojobs_session")
    thief = app.test_client()
    thief.set_cookie("videojobs_session", cookie.value)
    return thief


def test_a_replayed_cookie_stops_working_after_logout(app: Any, make_user: Any) -> None:
    user = make_user()
    thief = _copy_of(user, app)
    assert thief.get("/api/me").status_code == 200
    assert user.client.post("/api/auth/logout").status_code == 204
    for client in (thief, user.client):
        resp = client.get("/api/me")
        assert resp.status_code == 401 and resp.get_json() == {"error": "UNAUTHORIZED"}
    assert thief.get("/api/library").status_code == 401


def test_logging_in_again_after_logout_works(app: Any, make_user: Any) -> None:
    user = make_user()
    old = _copy_of(user, app)
    user.client.post("/api/auth/logout")
    assert user.client.post("/api/auth/login", json={
        "email": user.email, "password": PASSWORD}).status_code == 200
    assert user.client.get("/api/me").status_code == 200
    assert old.get("/api/me").status_code == 401


def test_logout_ends_sessions_in_every_web_process(app: Any, make_user: Any, settings: Any,
                                                   store: Store) -> None:
    """Two app instances sharing the store and Redis, as two gunicorn processes do."""
    from app import create_app

    other = create_app(settings, store=store)
    user = make_user()
    elsewhere = other.test_client()
    elsewhere.set_cookie("videojobs_session",
                         user.client.get_cookie("videojobs_session").value)
    assert elsewhere.get("/api/me").status_code == 200  # its cache now holds the version
    user.client.post("/api/auth/logout")
    assert elsewhere.get("/api/me").status_code == 401


def test_a_password_change_ends_every_session(app: Any, make_user: Any) -> None:
    user = make_user()
    thief = _copy_of(user, app)
    sessions = app.extensions["videojobs"].sessions
    sessions.change_password(user.id, hash_password("a brand new password"))
    assert thief.get("/api/me").status_code == 401
    assert user.client.get("/api/me").status_code == 401
    assert user.client.post("/api/auth/login", json={
        "email": user.email, "password": "a brand new password"}).status_code == 200
