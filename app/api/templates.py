"""`GET /api/templates`: the active templates a user can pick from."""

from __future__ import annotations

from typing import Any

from app.api.base import Blueprint, require_auth, services
from app.api.schemas import TemplateListSchema
from app.video_templates import VideoTemplate

bp = Blueprint("templates", __name__, url_prefix="/api", description="Video templates")


@bp.route("/templates", methods=["GET"])
@require_auth
@bp.response(200, TemplateListSchema)
@bp.errors(401, 503)
def template_list() -> dict[str, Any]:
    """Active templates with their durations, costs and variables."""
    rows = services().store.templates.list_active()
    return {"templates": [VideoTemplate.from_record(r).public_dict() for r in rows]}
