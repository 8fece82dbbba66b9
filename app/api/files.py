"""Serves local-storage objects behind signed, expiring links (S3 serves its own)."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from app.storage import InvalidKey, LocalStorage

bp = Blueprint("files", __name__)


def _error(status: int, message: str) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = status
    return resp


@bp.get("/files/<path:key>")
def download(key: str) -> Response:
    """The object if the link's signature is valid and unexpired; Range requests work."""
    storage = current_app.extensions.get("videojobs.storage")
    if not isinstance(storage, LocalStorage):
        return _error(404, "Not found")
    expires = request.args.get("expires", "")
    if not storage.verify_signature(key, expires, request.args.get("sig", "")):
        return _error(403, "FORBIDDEN")
    try:
        stored = storage.head(key)
        path = storage.path_for(key)
    except InvalidKey:
        return _error(404, "Not found")
    if stored is None:
        return _error(404, "Not found")
    resp = send_file(path, mimetype=stored.content_type, conditional=True, etag=True)
    remaining = max(0, int(expires) - int(time.time()))
    resp.headers["Cache-Control"] = f"private, max-age={remaining}"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
