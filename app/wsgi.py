"""WSGI entry point for gunicorn: `gunicorn 'app.wsgi:app'` (settings from the environment)."""

from __future__ import annotations

from app import create_app
from app.logs import configure_logging

configure_logging()
app = create_app()
