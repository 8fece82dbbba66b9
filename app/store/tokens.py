"""The `api_token` table: bearer tokens stored only as SHA-256 hashes.

Tokens carry 256 random bits, so a fast hash is enough (no password-style stretching);
the plain token is shown once by the CLI and never stored.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from app.store.connection import Database
from app.store.records import first

TOKEN_PREFIX = "vj_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, user_id: str, email: str) -> str:
        """A new token for the user; the return value is the only copy of it."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.db.query(
            "CREATE api_token CONTENT { token_hash: $h, user_id: $u, email: $e };",
            {"h": hash_token(token), "u": user_id, "e": email})
        return token

    def find(self, token: str) -> dict[str, Any] | None:
        return first(self.db.query(
            "SELECT * FROM api_token WHERE token_hash = $h LIMIT 1;", {"h": hash_token(token)})[0])
