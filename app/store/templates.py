"""The `template` table: upsert by slug (idempotent), active listing, lookup."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.store.connection import Database
from app.store.records import first, rows


class TemplateRepository:
    """Templates keyed by slug (record id = slug), so loading a file twice changes nothing."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def upsert(self, record: dict[str, Any]) -> None:
        """Replace the template with this slug (create it if new)."""
        data = {k: v for k, v in record.items() if k not in ("id", "updated_at") and v is not None}
        data["updated_at"] = datetime.now(UTC)
        self.db.query("UPSERT type::record('template', $slug) CONTENT $data RETURN NONE;",
                      {"slug": record["slug"], "data": data})

    def get(self, slug: str) -> dict[str, Any] | None:
        return first(self.db.query("SELECT * FROM ONLY type::record('template', $slug);",
                                   {"slug": slug})[0])

    def list_active(self) -> list[dict[str, Any]]:
        return rows(self.db.query(
            "SELECT * FROM template WHERE active = true ORDER BY slug ASC;")[0])
