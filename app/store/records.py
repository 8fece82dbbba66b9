"""Turn SurrealDB rows into plain dicts: string ids, aware datetimes, no SDK types leaking."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from surrealdb import RecordID


def plain(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A row with `id` as the bare string id (never `table:⟨id⟩`)."""
    if row is None:
        return None
    out = dict(row)
    rid = out.get("id")
    if isinstance(rid, RecordID):
        out["id"] = str(rid.id)
    return out


def rows(result: Any) -> list[dict[str, Any]]:
    """A statement result as a list of plain rows (SELECT/UPDATE return lists)."""
    if result is None:
        return []
    if isinstance(result, Mapping):
        return [plain(result)]  # type: ignore[list-item]
    return [r for r in (plain(x) for x in result) if r is not None]


def first(result: Any) -> dict[str, Any] | None:
    """The first row of a statement result, or None."""
    found = rows(result)
    return found[0] if found else None
