"""Security headers on every response, proxy headers only from trusted proxies, and the
base that absolute links are built from (never the request's Host header).

- `X-Content-Type-Options: nosniff`, `frame-ancestors 'none'` (and `X-Frame-Options`),
  a restrictive CSP for everything that is not a page (pages set their own), and
  `Referrer-Policy: same-origin` (the CSRF guard still sees same-origin Referers).
- `Cache-Control: no-store` on JSON that does not say otherwise: `/api/me` and
  `/api/library` carry balances and signed links.
- HSTS when the request came over https: directly, or through `TRUSTED_PROXY_COUNT`
  proxies whose `X-Forwarded-Proto` / `-For` / `-Host` are then believed (and only then).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import Settings

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HSTS = "max-age=31536000; includeSubDomains"


def register_security(app: Flask, settings: Settings) -> None:
    hops = settings.trusted_proxy_count
    if hops > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)

    @app.after_request
    def _headers(resp: Response) -> Response:
        headers = resp.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Content-Security-Policy", API_CSP)
        headers.setdefault("Referrer-Policy", "same-origin")
        if resp.mimetype == "application/json" and "Cache-Control" not in headers:
            headers["Cache-Control"] = "no-store"
        if request.is_secure:
            headers.setdefault("Strict-Transport-Security", HSTS)
        return resp


def public_url(settings: Any, url: str) -> str:
    """Local storage hands out path-only links: absolute under PUBLIC_BASE_URL when it is
    set, else left relative (resolved against the page or API base by the client)."""
    if url.startswith("/") and settings.public_base_url:
        return str(settings.public_base_url).rstrip("/") + url
    return url
