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
<script src="/api/docs/init.js"></script>
</body></html>"""
_INIT = 'window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui"});\n'
# Swagger UI sets inline styles and shows data: images; scripts are only our own files.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")


@bp.get("/api/docs")
def docs_page() -> Response:
    resp = Response(_PAGE, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = _CSP
    return resp


@bp.get("/api/docs/init.js")
def docs_init() -> Response:
    """The page's one script of our own, as a file: the CSP allows no inline script."""
    return Response(_INIT, mimetype="text/javascript")


@bp.get("/api/docs/static/<path:filename>")
def docs_static(filename: str) -> Response:
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
