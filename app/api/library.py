"""`/api/library`: upload, list and delete the caller's images and videos."""

from __future__ import annotations

from typing import Any

from flask import Response, request

from app import library
from app.api.base import (
    Blueprint,
    absolute_url,
    principal,
    rate_limited,
    require_auth,
    services,
)
from app.api.errors import ApiError
from app.api.schemas import (
    CreatedKeySchema,
    LibraryKeyQuerySchema,
    LibraryListSchema,
)

bp = Blueprint("library", __name__, url_prefix="/api", description="The user's media library")


def _download_url(key: str) -> str:
    return absolute_url(services().storage.download_url(key))


@bp.route("/library", methods=["GET"])
@require_auth
@bp.response(200, LibraryListSchema)
@bp.errors(401, 503)
def library_list() -> dict[str, Any]:
    """The caller's images and videos, newest first, each with a fresh download URL."""
    return library.list_library(services().store, principal().user_id, _download_url)


@bp.route("/library", methods=["POST"])
@require_auth
@rate_limited
@bp.response(201, CreatedKeySchema)
@bp.doc(requestBody={"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
    "required": ["file"]}}}})
@bp.errors(400, 401, 403, 413, 415, 429, 503)
def library_upload() -> tuple[dict[str, Any], int]:
    """Upload a png, jpeg or webp image (recognised by content) in the field `file`."""
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE")
    svc = services()
    upload = request.files.get("file")
    body = library.upload_image(svc.store, svc.storage, principal().user_id,
                                upload.stream if upload else None,
                                svc.settings.max_upload_bytes, svc.settings.max_image_pixels)
    return body, 201


@bp.route("/library", methods=["DELETE"])
@require_auth
@bp.arguments(LibraryKeyQuerySchema, location="query")
@bp.response(204)
@bp.errors(400, 401, 403, 404, 503, _404="Library item not found")
def library_delete(query: dict[str, Any]) -> Response:
    """Delete one of the caller's objects."""
    svc = services()
    library.delete_item(svc.store, svc.storage, principal().user_id, query.get("key"))
    return Response(status=204)
