"""The dashboard at `/`: one server-rendered page plus plain JS and CSS, all served locally.

The page talks to the JSON API with same-origin `fetch` (cookie session). Static assets
are served from `/dashboard/static/` with a content hash in their URL (`?v=`), so they can
be cached for long and a new release is picked up at once.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, current_app, render_template, request, url_for

__all__ = ["bp"]

_STATIC = Path(__file__).parent / "static"

# The page loads only its own script and stylesheet. Media comes from the library's
# signed URLs: local `/files/...` links or presigned object-storage URLs on another host.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data: blob: http: https:; media-src 'self' blob: http: https:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class _DashboardBlueprint(Blueprint):
    def get_send_file_max_age(self, filename: str | None) -> int | None:
        # A versioned URL never changes content; an unversioned one is revalidated.
        return 31536000 if request.args.get("v") else None


bp = _DashboardBlueprint("dashboard", __name__, static_folder="static",
                         static_url_path="/dashboard/static", template_folder="templates")


@cache
def _version(filename: str) -> str:
    return hashlib.sha256((_STATIC / filename).read_bytes()).hexdigest()[:12]


def asset_url(filename: str) -> str:
    return url_for("dashboard.static", filename=filename, v=_version(filename))


@bp.app_template_global("dashboard_asset")
def _dashboard_asset(filename: str) -> str:
    return asset_url(filename)


@bp.get("/")
def index() -> Response:
    """The dashboard; signed-in visitors get the app view at once, others the login form."""
    from app.api.auth import resolve_principal

    who = resolve_principal() if "videojobs" in current_app.extensions else None
    email = who.email if who is not None and who.via == "session" else None
    services = current_app.extensions.get("videojobs")
    # `videojobs up` seeds a demo user: say where its login is (not in production).
    demo = bool(getattr(getattr(services, "settings", None), "embedded", False))
    html = render_template("dashboard/index.html", demo_hint=demo,
                           signed_in_email=email if isinstance(email, str) else None)
    resp = Response(html, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.after_request
def _security_headers(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy", _CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    return resp
