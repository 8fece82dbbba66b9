"""Users and their credit balance; every balance change writes a `credit_ledger` row."""

from __future__ import annotations

from typing import Any

from app.ids import new_id
from app.store.connection import Database
from app.store.errors import AlreadyExists
from app.store.records import first, rows


class UserExists(Exception):
    """That email already has an account."""


class UserNotFound(Exception):
    """No user with that email."""


class UserRepository:
    """The only code reading or writing the `user` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, email: str, password_hash: str | None, credits: int = 0) -> dict[str, Any]:
        """Create a user; an opening balance is recorded in the ledger as a grant."""
        user_id = new_id()
        params = {"id": user_id, "email": email, "hash": password_hash, "credits": credits,
                  "ref": f"grant-{new_id()}"}
        sql = """
        BEGIN;
        CREATE type::record('user', $id) CONTENT {
            email: $email, password_hash: $hash, credits: $credits
        };
        IF $credits > 0 {
            CREATE credit_ledger CONTENT {
                user_id: $id, email: $email, kind: 'grant', amount: $credits, ref: $ref,
                balance_after: $credits, note: 'opening balance'
            };
        };
        COMMIT;
        """
        try:
            self.db.query(sql, params)
        except AlreadyExists:
            raise UserExists(email) from None
        user = self.get_by_id(user_id)
        assert user is not None
        return user

    def get_by_email(self, email: str) -> dict[str, Any] | None:
        return first(self.db.query("SELECT * FROM user WHERE email = $email LIMIT 1;",
                                   {"email": email})[0])

    def get_by_id(self, user_id: str) -> dict[str, Any] | None:
        return first(self.db.query("SELECT * FROM ONLY type::record('user', $id);",
                                   {"id": user_id})[0])

    def credits(self, user_id: str) -> int | None:
        row = self.db.query("SELECT VALUE credits FROM ONLY type::record('user', $id);",
                            {"id": user_id})[0]
        return int(row) if row is not None else None

    def grant(self, email: str, amount: int, note: str | None = None) -> int:
        """Add credits and record the grant; returns the new balance."""
        user = self.get_by_email(email)
        if user is None:
            raise UserNotFound(email)
        sql = """
        BEGIN;
        LET $u = (UPDATE type::record('user', $id) SET credits += $amount,
                  updated_at = time::now() RETURN AFTER);
        CREATE credit_ledger CONTENT {
            user_id: $id, email: $email, kind: 'grant', amount: $amount, ref: $ref,
            balance_after: $u[0].credits, note: $note
        };
        RETURN $u[0].credits;
        COMMIT;
        """
        result = self.db.query(sql, {"id": user["id"], "email": email, "amount": amount,
                                     "ref": f"grant-{new_id()}", "note": note})
        return int([r for r in result if isinstance(r, int)][-1])

    def set_password_hash(self, user_id: str, password_hash: str) -> int:
        """New password; ends every session of the user (returns the new session version)."""
        return self._bump(user_id, "password_hash = $h, ", {"h": password_hash})

    def session_version(self, user_id: str) -> int | None:
        """The user's session version (cookies carrying an older one are void); None if the
        user does not exist."""
        row = self.db.query(
            "SELECT VALUE [id, session_version] FROM ONLY type::record('user', $id);",
            {"id": user_id})[0]
        if not row:
            return None
        return int(row[1] or 0)

    def bump_session_version(self, user_id: str) -> int:
        """Void every session cookie issued so far (logout everywhere)."""
        return self._bump(user_id, "", {})

    def _bump(self, user_id: str, extra_set: str, params: dict[str, Any]) -> int:
        result = self.db.query(
            f"UPDATE type::record('user', $id) SET {extra_set}"
            "session_version = (session_version ?? 0) + 1, updated_at = time::now() "
            "RETURN VALUE session_version;", {"id": user_id, **params})[0]
        return int(result[0]) if result else 0


class LedgerRepository:
    """Reads of `credit_ledger`; writes happen inside the transactions that move credits."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        return rows(self.db.query(
            "SELECT * FROM credit_ledger WHERE user_id = $u ORDER BY created_at ASC;",
            {"u": user_id})[0])

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return rows(self.db.query("SELECT * FROM credit_ledger WHERE ref = $j;",
                                  {"j": job_id})[0])

    def sum_for_user(self, user_id: str) -> int:
        return sum(int(r["amount"]) for r in self.for_user(user_id))
