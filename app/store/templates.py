"""The `template` table: upsert by slug (idempotent), active listing, lookup."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from app.store.connection import Database
from app.store.records import first, rows


class TemplateRepository:
    """Templates keyed by slug (record id = slug), so loading a file twice changes nothing."""

    def __init__(self, db: Database, cache_seconds: float = 5.0) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def get_cached(self, slug: str) -> dict[str, Any] | None:
        """`get`, remembered for a few seconds: every POST reads its template, and
        templates change rarely (a change made in another process shows within
        `cache_seconds`; one made through this repository shows at once)."""
        now = time.monotonic()
        hit = self._cache.get(slug)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = self.get(slug)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[slug] = (now + self.cache_seconds, record)
        return record

    def upsert(self, record: dict[str, Any]) -> None:
        """Replace the template with this slug (create it if new)."""
        data = {k: v for k, v in record.items() if k not in ("id", "updated_at") and v is not None}
        data["updated_at"] = datetime.now(UTC)
        self.db.query("UPSERT type::record('template', $slug) CONTENT $data RETURN NONE;",
                      {"slug": record["slug"], "data": data})
        self._cache.pop(record["slug"], None)

    def get(self, slug: str) -> dict[str, Any] | None:
        return first(self.db.query("SELECT * FROM ONLY type::record('template', $slug);",
                                   {"slug": slug})[0])

    def list_active(self) -> list[dict[str, Any]]:
        return rows(self.db.query(
            "SELECT * FROM template WHERE active = true ORDER BY slug ASC;")[0])
