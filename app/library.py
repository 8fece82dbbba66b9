"""The user's library: uploads (images, checked by content), listing and deletion.

Object first, record second on upload (a failed record write deletes the object); on
delete, object first, record second: a crash in between leaves a record whose object is
gone (listed, retryable delete), never an unlisted object.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from typing import IO, Any

from app.errors import ApiError, validation_error
from app.images import check_image
from app.jobs import iso
from app.storage import (
    EXTENSIONS,
    ObjectTooLarge,
    Storage,
    is_owned_key,
    library_key,
    sniff_image_type,
)
from app.store import Store

log = logging.getLogger(__name__)

ALLOWED_IMAGES = ("image/png", "image/jpeg", "image/webp")
_SNIFF_BYTES = 16


def _spool(head: bytes, rest: IO[bytes], max_bytes: int) -> tuple[IO[bytes], int]:
    """The upload in a temp file (memory up to 1 MiB), 413 as soon as it passes the cap."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115
    size = 0
    chunk = head
    while chunk:
        size += len(chunk)
        if size > max_bytes:
            spool.close()
            raise ApiError(413, "FILE_TOO_LARGE")
        spool.write(chunk)
        chunk = rest.read(1024 * 1024)
    return spool, size


def upload_image(store: Store, storage: Storage, user_id: str, stream: IO[bytes] | None,
                 max_bytes: int, max_pixels: int = 40_000_000) -> dict[str, Any]:
    """Store an uploaded png/jpeg/webp under the user's library and record it; the image
    is decoded first (app/images.py), so broken files, bombs and polyglots store nothing."""
    if stream is None:
        raise validation_error({"file": ["Missing data for required field."]})
    head = stream.read(_SNIFF_BYTES)
    content_type = sniff_image_type(head)
    if content_type not in ALLOWED_IMAGES:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE")
    spool, size = _spool(head, stream, max_bytes)
    with spool:
        check_image(spool, size, content_type, max_pixels)  # type: ignore[arg-type]
        key = library_key(user_id, EXTENSIONS[content_type])
        try:
            stored = storage.put_stream(key, spool, content_type, max_bytes=max_bytes)
        except ObjectTooLarge:
            raise ApiError(413, "FILE_TOO_LARGE") from None
    try:
        store.library.add(key=key, user_id=user_id, kind="image", content_type=content_type,
                          size=stored.size)
    except Exception:
        storage.delete(key)
        raise
    return {"key": key}


def library_item(row: dict[str, Any], download_url: Callable[[str], str]) -> dict[str, Any]:
    item = {"key": row["key"], "kind": row["kind"], "contentType": row["content_type"],
            "size": row["size"], "createdAt": iso(row.get("created_at")),
            "url": download_url(row["key"])}
    if row.get("job_id"):
        item["jobId"] = row["job_id"]
    return item


def list_library(store: Store, user_id: str,
                 download_url: Callable[[str], str]) -> dict[str, Any]:
    return {"items": [library_item(r, download_url) for r in store.library.list_for_user(user_id)]}


def delete_item(store: Store, storage: Storage, user_id: str, key: str | None) -> None:
    """Delete the caller's object; anything else is 'not found'."""
    if not key:
        raise validation_error({"key": ["Missing data for required field."]})
    row = store.library.get(key) if is_owned_key(user_id, key) else None
    if row is None or row.get("user_id") != user_id:
        raise ApiError(404, "Library item not found")
    storage.delete(key)
    store.library.delete(key)
