"""GET /api/templates."""

from __future__ import annotations

from typing import Any

from app.store import Store


def test_lists_active_templates_in_spec_shape(make_user: Any, store: Store) -> None:
    user = make_user()
    body = user.client.get("/api/templates").get_json()
    slugs = [t["slug"] for t in body["templates"]]
    assert "night-life-roller" in slugs and len(slugs) >= 3
    roller = next(t for t in body["templates"] if t["slug"] == "night-life-roller")
    assert set(roller) == {"slug", "name", "durations", "variables"}
    assert roller["durations"] == {"5": 500, "10": 1000}
    for variable in roller["variables"]:
        assert set(variable) == {"name", "required", "default", "choices", "max_length"}
    record = store.templates.get("night-life-roller")
    assert record is not None
    store.templates.upsert({**record, "active": False})
    slugs = [t["slug"] for t in user.client.get("/api/templates").get_json()["templates"]]
    assert "night-life-roller" not in slugs


def test_templates_need_a_login(client: Any) -> None:
    assert client.get("/api/templates").status_code == 401
