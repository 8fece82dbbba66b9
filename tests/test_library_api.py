"""/api/library: uploads checked by content and size, listing with URLs, deletion."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from app.store import Store
from tests.conftest import make_png


def _encoded(fmt: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (16, 9), (200, 40, 90)).save(out, fmt)
    return out.getvalue()


JPEG = _encoded("JPEG")
WEBP = _encoded("WEBP")


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("data, content_type, ext", [
    (make_png(), "image/png", "png"), (JPEG, "image/jpeg", "jpg"), (WEBP, "image/webp", "webp")])
def test_upload_recognises_images_by_content(make_user: Any, data: bytes, content_type: str,
                                             ext: str) -> None:
    user = make_user()
    key = user.upload(data, filename="whatever.bin")
    assert key.startswith(f"users/{user.id}/library/") and key.endswith("." + ext)
    items = user.client.get("/api/library").get_json()["items"]
    assert len(items) == 1
    item = items[0]
    assert item["key"] == key and item["kind"] == "image"
    assert item["contentType"] == content_type and item["size"] == len(data)
    assert item["createdAt"] and "jobId" not in item
    download = user.client.get(item["url"].replace("http://localhost", ""))
    assert download.status_code == 200 and download.data == data


def test_upload_rejects_non_images_even_when_named_png(make_user: Any, settings: Any) -> None:
    user = make_user()
    resp = user.client.post("/api/library", data={
        "file": (io.BytesIO(b"<html>not an image</html>"), "fake.png")},
        content_type="multipart/form-data")
    assert resp.status_code == 415 and resp.get_json() == {"error": "UNSUPPORTED_MEDIA_TYPE"}
    assert user.client.get("/api/library").get_json()["items"] == []
    assert files_under(Path(settings.storage_dir)) == []


def test_upload_too_large_is_413_and_stores_nothing(make_user: Any, settings: Any) -> None:
    user = make_user()
    big = make_png() + b"\x00" * (settings.max_upload_bytes + 10)
    resp = user.client.post("/api/library", data={"file": (io.BytesIO(big), "big.png")},
                            content_type="multipart/form-data")
    assert resp.status_code == 413 and resp.get_json() == {"error": "FILE_TOO_LARGE"}
    just_over = make_png() + b"\x00" * (settings.max_upload_bytes - len(make_png()) + 1)
    resp = user.client.post("/api/library", data={"file": (io.BytesIO(just_over), "b.png")},
                            content_type="multipart/form-data")
    assert resp.status_code == 413 and resp.get_json() == {"error": "FILE_TOO_LARGE"}
    assert user.client.get("/api/library").get_json()["items"] == []
    assert files_under(Path(settings.storage_dir)) == []


def test_upload_without_file_or_multipart(make_user: Any) -> None:
    user = make_user()
    resp = user.client.post("/api/library", data={"other": "x"},
                            content_type="multipart/form-data")
    assert resp.status_code == 400 and "file" in resp.get_json()["details"]
    resp = user.client.post("/api/library", json={"file": "x"})
    assert resp.status_code == 415


def test_upload_needs_login(client: Any) -> None:
    resp = client.post("/api/library", data={"file": (io.BytesIO(make_png()), "a.png")},
                       content_type="multipart/form-data")
    assert resp.status_code == 401


def test_delete_removes_object_and_record(make_user: Any, settings: Any, store: Store) -> None:
    user = make_user()
    key = user.upload()
    assert len(files_under(Path(settings.storage_dir))) >= 1
    resp = user.client.delete("/api/library", query_string={"key": key})
    assert resp.status_code == 204
    assert user.client.get("/api/library").get_json()["items"] == []
    assert store.library.get(key) is None
    assert not any(p.name.endswith(".png") for p in files_under(Path(settings.storage_dir)))
    again = user.client.delete("/api/library", query_string={"key": key})
    assert again.status_code == 404


def test_cannot_see_or_delete_someone_elses_items(make_user: Any, store: Store) -> None:
    me, other = make_user(), make_user()
    theirs = other.upload()
    assert me.client.get("/api/library").get_json()["items"] == []
    for key in (theirs, f"users/{me.id}/library/../../{theirs}", "/" + theirs):
        resp = me.client.delete("/api/library", query_string={"key": key})
        assert resp.status_code == 404
    assert store.library.get(theirs) is not None
    assert len(other.client.get("/api/library").get_json()["items"]) == 1


def test_download_links_are_signed(make_user: Any, app: Any) -> None:
    user = make_user()
    user.upload()
    url = user.client.get("/api/library").get_json()["items"][0]["url"]
    path = url.replace("http://localhost", "")
    anonymous = app.test_client()
    assert anonymous.get(path).status_code == 200  # the signature is the permission
    tampered = path.replace("sig=", "sig=0")
    assert anonymous.get(tampered).status_code == 403
