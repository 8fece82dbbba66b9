"""Interactive API docs at /api/docs, served from the vendored swagger-ui-bundle (offline)."""

from __future__ import annotations

from flask import Blueprint, Response, send_from_directory
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("docs", __name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>videojobs API</title>
<link rel="stylesheet" href="/api/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui",
  persistAuthorization: true, withCredentials: true});</script>
</body></html>"""


@bp.get("/api/docs")
def docs_page() -> Response:
    return Response(_PAGE, mimetype="text/html")


@bp.get("/api/docs/static/<path:filename>")
def docs_static(filename: str) -> Response:
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
