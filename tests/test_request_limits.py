"""Request bodies are parsed with limits: any input gets a 4xx, never a 5xx, and a
store error is reported only when the store failed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.store import Store
from app.store.errors import StoreUnavailable, UnencodableParameters

DEEP = "[" * 1000 + "]" * 1000


def _post(client: Any, path: str, raw: str | bytes) -> Any:
    data = raw.encode() if isinstance(raw, str) else raw
    return client.post(path, data=data, content_type="application/json")


@pytest.mark.parametrize("path", ["/api/templates/video", "/api/templates/video/cancel",
                                  "/api/auth/login"])
@pytest.mark.parametrize("body", [
    DEEP,
    '{"templateSlug": "x", "startKey": "k", "variables": {"a": ' + DEEP + "}}",
    '{"jobId": "x", "email": "a@b.c", "password": "p", "deep": ' + DEEP + "}",
])
def test_deeply_nested_json_is_a_400(make_user: Any, path: str, body: str) -> None:
    user = make_user()
    resp = _post(user.client, path, body)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == "VALIDATION_ERROR"
    assert "_body" in resp.get_json()["details"]


@pytest.mark.parametrize("field", ["templateSlug", "startKey", "variables"])
def test_lone_surrogates_are_a_400_and_change_nothing(make_user: Any, store: Store,
                                                      field: str) -> None:
    user = make_user(credits=1000)
    key = user.upload()
    body: dict[str, Any] = {"templateSlug": "night-life-roller", "startKey": key}
    body[field] = {"mood": "\ud800"} if field == "variables" else "\ud800"
    resp = _post(user.client, "/api/templates/video", json.dumps(body))
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == "VALIDATION_ERROR"
    assert any(name.startswith(field) for name in resp.get_json()["details"])
    assert user.credits() == 1000
    assert store.jobs.count() == 0


def test_login_with_surrogates_is_a_400_not_a_false_outage(client: Any,
                                                           caplog: Any) -> None:
    for body in ('{"email": "\\ud800@x.io", "password": "p"}',
                 '{"email": "a@x.io", "password": "\\udfff"}',
                 '{"\\ud800": 1}'):
        resp = _post(client, "/api/auth/login", body)
        assert resp.status_code == 400, (body, resp.get_data(as_text=True))
        assert resp.get_json()["error"] == "VALIDATION_ERROR"
    assert "job store unreachable" not in caplog.text


@pytest.mark.parametrize("raw", [b'{"email": "a@x.io", "password": NaN}', b"\xff\xfe{}",
                                 b'{"email": ' + b"1" * 5000 + b"}", b'{"a": 1',
                                 b'{"email": "' + b"x" * 70_000 + b'"}'])
def test_malformed_or_oversized_bodies_are_a_400(client: Any, raw: bytes) -> None:
    resp = _post(client, "/api/auth/login", raw)
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "VALIDATION_ERROR"


def test_an_unencodable_parameter_is_not_reported_as_an_outage(store: Store) -> None:
    with pytest.raises(UnencodableParameters) as caught:
        store.users.get_by_email("\ud800@example.com")
    assert not isinstance(caught.value, StoreUnavailable)
