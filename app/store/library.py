"""The `library_item` table: metadata for objects a user owns under users/<id>/library/."""

from __future__ import annotations

from typing import Any

from app.store.connection import Database
from app.store.records import first, rows


class LibraryRepository:
    """Record id is a hash of the key, so re-recording the same object is an upsert."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _rid(key: str) -> str:
        import hashlib

        return hashlib.sha256(key.encode()).hexdigest()

    def add(self, *, key: str, user_id: str, kind: str, content_type: str, size: int,
            job_id: str | None = None, poster_key: str | None = None,
            template_slug: str | None = None, template_name: str | None = None,
            duration: str | None = None, start_key: str | None = None) -> dict[str, Any]:
        """A video also records what made it (for its card) and its poster frame's key."""
        data = {"key": key, "user_id": user_id, "kind": kind, "content_type": content_type,
                "size": size, "job_id": job_id, "poster_key": poster_key,
                "template_slug": template_slug, "template_name": template_name,
                "duration": duration, "start_key": start_key}
        result = self.db.query(
            "UPSERT type::record('library_item', $rid) MERGE $data RETURN AFTER;",
            {"rid": self._rid(key), "data": {k: v for k, v in data.items() if v is not None}})
        row = first(result[0])
        assert row is not None
        return row

    def set_poster(self, key: str, poster_key: str) -> bool:
        """Record an item's poster frame; False when the item no longer exists."""
        result = self.db.query(
            "UPDATE type::record('library_item', $rid) SET poster_key = $poster RETURN AFTER;",
            {"rid": self._rid(key), "poster": poster_key})
        return bool(rows(result[0]))

    def get(self, key: str) -> dict[str, Any] | None:
        return first(self.db.query("SELECT * FROM ONLY type::record('library_item', $rid);",
                                   {"rid": self._rid(key)})[0])

    def list_for_user(self, user_id: str, limit: int = 500) -> list[dict[str, Any]]:
        return rows(self.db.query(
            "SELECT * FROM library_item WHERE user_id = $u ORDER BY created_at DESC LIMIT $n;",
            {"u": user_id, "n": limit})[0])

    def delete(self, key: str) -> bool:
        deleted = self.db.query(
            "DELETE type::record('library_item', $rid) RETURN BEFORE;", {"rid": self._rid(key)})
        return bool(rows(deleted[0]))
