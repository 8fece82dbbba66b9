"""Real answers of every documented operation, validated against /api/openapi.json.

schemathesis (tests/test_openapi_conformance.py) fuzzes requests but rarely reaches a
completed job or a filled library; here every operation is driven into its successful
answers (each job status, a video with a poster, a delivery that was attempted, a second
page of jobs) and each recorded body is checked with jsonschema against the operation's
documented response, made strict: no undocumented field, `nullable` honoured, formats
checked. Error answers are checked against the statuses the operation declares.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import jsonschema

from app import jobs, library, outbound
from app.api import schemas
from app.store import Store
from app.video_templates import load_template_file
from tests.conftest import DEMO_TEMPLATES, PASSWORD, UserSession

PUBLIC_URL = "https://93.184.215.14/hooks/videojobs"  # an IP literal: no DNS lookup
Recorded = tuple[str, str, int, Any]


def _strict(node: Any, components: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as plain JSON Schema: refs inlined, `nullable` as a type,
    objects closed to fields they do not document."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _strict(components[node["$ref"].rsplit("/", 1)[-1]], components)
    out = dict(node)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key], components)
    for key in ("oneOf", "anyOf", "allOf"):
        if key in out:
            out[key] = [_strict(n, components) for n in out[key]]
    if "properties" in out:
        out["properties"] = {k: _strict(v, components) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


class Recorder:
    """A signed-in test client that keeps every answer it gets."""

    def __init__(self, user: UserSession) -> None:
        self.user = user
        self.seen: list[Recorded] = []

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.user.client.open(path, method=method, **kwargs)
        body = resp.get_json() if resp.data else None
        self.seen.append((method, path.split("?")[0], resp.status_code, body))
        return resp


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m.upper(), p): op for p, item in spec["paths"].items() for m, op in item.items()}


def test_every_operation_answers_as_documented(make_user: Callable[..., UserSession],
                                               store: Store, client: Any) -> None:
    spec = client.get("/api/openapi.json").get_json()
    components = spec["components"]["schemas"]
    ops = _operations(spec)
    rec = Recorder(make_user(credits=100_000))
    user = rec.user

    # Sign-in and account.
    login = {"email": user.email, "password": PASSWORD}
    assert rec.call("POST", "/api/auth/login", json=login).status_code == 200
    rec.call("GET", "/api/me")
    rec.call("GET", "/api/templates")

    # The library: an image upload, then (below) a video with its poster.
    key = rec.call("POST", "/api/library", data={"file": (io.BytesIO(_png()), "d.png")},
                   content_type="multipart/form-data").get_json()["key"]
    assert rec.call("PUT", "/api/webhook", json={"url": PUBLIC_URL}).status_code == 200
    rec.call("GET", "/api/webhook")
    rec.call("POST", "/api/webhook/rotate")

    body = {"templateSlug": "night-life-roller", "startKey": key}
    started = [rec.call("POST", "/api/templates/video", json=body).get_json()["jobId"]
               for _ in range(5)]
    replay = rec.call("POST", "/api/templates/video", json=body,
                      headers={"Idempotency-Key": "k-1"})
    assert replay.status_code == 200
    pending, processing, completed, failed, cancelled = started

    store.jobs.update_if(processing, ("pending",), {
        "status": "processing", "phase": "in_queue", "queue_position": 3})
    video_key = f"users/{user.id}/library/{completed}.mp4"
    poster_key = f"users/{user.id}/library/{completed}.poster.jpg"
    storage = user.client.application.extensions["videojobs.storage"]
    storage.put_stream(video_key, io.BytesIO(b"\x00\x00\x00\x18ftypmp42fake"), "video/mp4")
    storage.put_stream(poster_key, io.BytesIO(b"\xff\xd8\xff\xe0fake"), "image/jpeg")
    store.jobs.update_if(completed, ("pending",), {"status": "processing"})
    store.jobs.update_if(completed, ("processing",), {"status": "completed",
                                                      "result_key": video_key})
    store.library.add(key=video_key, user_id=user.id, kind="video", content_type="video/mp4",
                      size=16, job_id=completed, poster_key=poster_key,
                      template_slug="night-life-roller", template_name="Night life",
                      duration="5", start_key=key)
    store.jobs.fail_and_refund(failed, "Model said no")
    delivery_id = f"{failed}_failed"
    assert store.webhooks.claim(delivery_id, "conformance", 30) is not None
    store.webhooks.finish_attempt(delivery_id, "conformance", delivered=False, status=500,
                                  error="HTTP 500", retry_in=600)

    statuses = set()
    for job_id in (pending, processing, completed, failed):
        resp = rec.call("GET", f"/api/templates/video/status?jobId={job_id}")
        statuses.add(resp.get_json()["status"])
    assert statuses == set(jobs.STATUSES)
    assert rec.call("POST", "/api/templates/video/cancel",
                    json={"jobId": cancelled}).get_json()["error"] == jobs.CANCELLED
    page = rec.call("GET", "/api/templates/video/jobs?limit=2").get_json()
    assert page["nextCursor"] is not None
    rec.call("GET", f"/api/templates/video/jobs?cursor={page['nextCursor']}")
    deliveries = rec.call("GET", f"/api/templates/video/webhooks?jobId={failed}").get_json()
    assert deliveries["deliveries"][0]["lastStatus"] == 500
    items = rec.call("GET", "/api/library").get_json()["items"]
    assert {i["kind"] for i in items} == {"image", "video"}
    assert any("posterUrl" in i for i in items)

    # Error answers (their bodies must match the statuses each operation declares).
    rec.call("GET", "/api/templates/video/status?jobId=nope")
    rec.call("GET", "/api/templates/video/status")
    rec.call("POST", "/api/templates/video/cancel", json={"jobId": failed})
    rec.call("POST", "/api/templates/video", json={**body, "duration": "7"})
    rec.call("GET", "/api/templates/video/jobs?cursor=bogus")
    rec.call("DELETE", "/api/library?key=users/someone-else/library/x.png")

    # Deletions and sign-out last.
    assert rec.call("DELETE", f"/api/library?key={key}").status_code == 204
    assert rec.call("DELETE", "/api/webhook").status_code == 204
    rec.call("GET", "/api/webhook")
    assert rec.call("POST", "/api/auth/logout").status_code == 204
    rec.call("GET", "/api/me")

    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    succeeded = set()
    for method, path, status, answer in rec.seen:
        op = ops[(method, path)]
        documented = op["responses"].get(str(status))
        assert documented is not None, (method, path, status, answer)
        content = documented.get("content")
        if content is None:
            assert answer is None, (method, path, status, answer)
        else:
            schema = _strict(content["application/json"]["schema"], components)
            problems = [e.message for e in jsonschema.Draft7Validator(
                schema, format_checker=checker).iter_errors(answer)]
            assert not problems, (method, path, status, answer, problems)
        if status < 400:
            succeeded.add((method, path))
    assert succeeded == set(ops), set(ops) - succeeded


def _png() -> bytes:
    from tests.conftest import make_png

    return make_png()


# ---- the schemas dump the bodies the code builds, byte for byte ------------------------------

def _same_json(schema: Any, body: Any) -> None:
    dumped = schema.dump(body)
    assert json.dumps(dumped) == json.dumps(body), (dumped, body)


def test_schemas_keep_every_body_byte_for_byte() -> None:
    """Dumping through the documented schema changes neither a value nor the key order
    (marshmallow writes keys in declaration order; the views' dicts have always had the
    same order), so serialising through the schemas changed no answer."""
    url = "https://files.example/x?sig=1".__add__
    created = "2026-01-02T03:04:05Z"
    base = {"id": "j1", "user_id": "u1", "created_at": created, "credits": 500,
            "template_id": "night-life-roller", "duration": "5", "start_key": "k.png"}
    rows = [
        {**base, "status": "pending", "phase": "queued"},
        {**base, "status": "processing", "phase": "in_queue", "queue_position": 2,
         "progress": "40%"},
        {**base, "status": "completed", "result_key": "v.mp4", "completed_at": created,
         "phase": "finalizing"},
        {**base, "status": "failed", "error": "Cancelled", "refunded": True,
         "completed_at": None},
    ]
    for row in rows:
        _same_json(schemas.JobStatusSchema(), jobs.status_body(row, url))
        _same_json(schemas.JobListItemSchema(), jobs.list_item(row))
    _same_json(schemas.JobListSchema(), {"jobs": [jobs.list_item(r) for r in rows],
                                         "nextCursor": None})
    video = {"key": "v.mp4", "kind": "video", "content_type": "video/mp4", "size": 9,
             "created_at": created, "job_id": "j1", "poster_key": "p.jpg",
             "template_slug": "s", "template_name": "S", "duration": "5", "start_key": "k"}
    _same_json(schemas.LibraryListSchema(), {"items": [library.library_item(video, url)]})
    delivery = {"id": "j1_failed", "type": "video.failed", "url": PUBLIC_URL, "attempts": 2,
                "state": "pending", "last_status": 500, "last_error": "HTTP 500",
                "last_attempt_at": created, "next_attempt_at": None}
    _same_json(schemas.WebhookDeliverySchema(), outbound.delivery_view(delivery))
    templates = load_template_file(DEMO_TEMPLATES)
    _same_json(schemas.TemplateListSchema(),
               {"templates": [t.public_dict() for t in templates]})
    endpoint = schemas.WebhookEndpointSchema().dump(outbound.Endpoint(PUBLIC_URL, "whsec_x"))
    assert json.dumps(endpoint) == json.dumps({"url": PUBLIC_URL, "secret": "whsec_x"})
