"""Outbound webhooks: each user's endpoint (URL + sealed secret) and the delivery outbox.

Delivery rows are created only inside the job's status-change transaction (app/store/jobs.py);
here they are read, claimed by compare-and-set (so one attempt runs at a time) and moved
on after each attempt. A row with `lease_owner` set and `lease_until` ahead is an attempt
in progress; `lease_owner` NONE with `lease_until` ahead is a message already sent (the
sweeper waits); anything due with the lease past is the sweeper's to re-send.
"""

from __future__ import annotations

from typing import Any

from app.store.connection import Database
from app.store.errors import AlreadyExists
from app.store.jobs import now_plus
from app.store.records import first, rows


class EndpointExists(Exception):
    """A concurrent request created this user's endpoint first."""


class WebhookRepository:
    """The only code reading or writing `webhook_endpoint` and `webhook_delivery`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- endpoints ---------------------------------------------------------------------

    def get_endpoint(self, user_id: str) -> dict[str, Any] | None:
        return first(self.db.query(
            "SELECT * FROM ONLY type::record('webhook_endpoint', $id);", {"id": user_id})[0])

    def create_endpoint(self, user_id: str, email: str, url: str, sealed: str
                        ) -> dict[str, Any]:
        try:
            row = first(self.db.query(
                "CREATE type::record('webhook_endpoint', $id) CONTENT {user_id: $id, "
                "email: $email, url: $url, secret_sealed: $sealed} RETURN AFTER;",
                {"id": user_id, "email": email, "url": url, "sealed": sealed})[0])
        except AlreadyExists:
            raise EndpointExists() from None
        assert row is not None
        return row

    def update_endpoint(self, user_id: str, *, url: str | None = None,
                        sealed: str | None = None) -> dict[str, Any] | None:
        sets = ["updated_at = time::now()"]
        params: dict[str, Any] = {"id": user_id}
        if url is not None:
            sets.append("url = $url")
            params["url"] = url
        if sealed is not None:
            sets.append("secret_sealed = $sealed")
            params["sealed"] = sealed
        return first(self.db.query(
            f"UPDATE type::record('webhook_endpoint', $id) SET {', '.join(sets)} "
            "WHERE user_id = $id RETURN AFTER;", params)[0])

    def delete_endpoint(self, user_id: str) -> None:
        self.db.query("DELETE type::record('webhook_endpoint', $id);", {"id": user_id})

    # ---- deliveries --------------------------------------------------------------------

    def deliveries_for_job(self, job_id: str) -> list[dict[str, Any]]:
        return rows(self.db.query(
            "SELECT * FROM webhook_delivery WHERE job_id = $job ORDER BY created_at ASC;",
            {"job": job_id})[0])

    def claim(self, delivery_id: str, owner: str, lease_seconds: float
              ) -> dict[str, Any] | None:
        """Take a due delivery for one attempt; None if it is not due, done or taken."""
        return first(self.db.query(
            "UPDATE type::record('webhook_delivery', $id) SET lease_owner = $owner, "
            f"lease_until = {now_plus(lease_seconds)} WHERE state = 'pending' "
            "AND next_attempt_at <= time::now() AND (lease_owner = NONE OR lease_until = NONE "
            "OR lease_until < time::now()) RETURN AFTER;",
            {"id": delivery_id, "owner": owner})[0])

    def finish_attempt(self, delivery_id: str, owner: str, *, delivered: bool,
                       status: int | None, error: str | None,
                       retry_in: float | None) -> dict[str, Any] | None:
        """Record one attempt: delivered, retried after `retry_in` s, or (None) given up."""
        if delivered:
            state, next_at = "'delivered'", "NONE"
        elif retry_in is not None:
            state, next_at = "'pending'", str(now_plus(retry_in))
        else:
            state, next_at = "'failed'", "NONE"
        return first(self.db.query(
            f"UPDATE type::record('webhook_delivery', $id) SET state = {state}, "
            f"attempts += 1, last_status = $status, last_error = $error, "
            f"last_attempt_at = time::now(), next_attempt_at = {next_at}, lease_owner = NONE, "
            f"lease_until = NONE, delivered_at = {'time::now()' if delivered else 'NONE'} "
            "WHERE state = 'pending' AND lease_owner = $owner RETURN AFTER;",
            {"id": delivery_id, "owner": owner, "status": status, "error": error})[0])

    def claim_due(self, limit: int, grace_seconds: float) -> list[str]:
        """Due deliveries nobody is sending (a lost message, a crash, a retry's time),
        marked as sent for `grace_seconds`; returns their ids for the sweeper to enqueue."""
        where = ("state = 'pending' AND next_attempt_at <= time::now() AND "
                 "(lease_until = NONE OR lease_until < time::now())")
        due = self.db.query(f"SELECT VALUE id FROM webhook_delivery WHERE {where} LIMIT $n;",
                            {"n": limit})[0] or []
        if not due:
            return []
        moved = rows(self.db.query(
            f"UPDATE $ids SET lease_owner = NONE, lease_until = {now_plus(grace_seconds)} "
            f"WHERE {where} RETURN AFTER;", {"ids": due})[0])
        return [row["id"] for row in moved]
