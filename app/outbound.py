"""Outbound webhooks, the API side: each user's endpoint and secret, a job's own target,
and how deliveries read to their owner. Plain functions; the views and the CLI call them.

Rotating a secret takes effect at once for every delivery, including those still being
retried: each attempt is signed with the secret current at that attempt.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app import jobs
from app.errors import ApiError, validation_error
from app.netguard import AddressGuard, Resolver, TransferError, check_url_with
from app.store import Store
from app.store.jobs import DEFAULT_WEBHOOK_EVENTS
from app.store.webhooks import EndpointExists
from app.webhook_secrets import SecretBox, SecretUnreadable, new_secret

EVENTS = jobs.EVENTS
MAX_URL_LENGTH = 2048
NOT_SET = "Webhook not set"


@dataclass(frozen=True)
class Endpoint:
    url: str
    secret: str


def url_problem(url: Any, allow_private: bool,
                resolver: Resolver = socket.getaddrinfo) -> str | None:
    """Why `url` cannot be a webhook target (None if it can): http(s), at most 2048
    characters, and every address its host resolves to public unless allowed."""
    if not isinstance(url, str) or not url.strip():
        return "Must be an http or https URL."
    if len(url) > MAX_URL_LENGTH:
        return f"Must be at most {MAX_URL_LENGTH} characters."
    try:
        check_url_with(url, AddressGuard(allow_private, resolver, subject="Webhook"))
    except TransferError as exc:
        return f"{exc.message}."
    return None


def _checked(url: Any, allow_private: bool) -> str:
    problem = url_problem(url, allow_private)
    if problem:
        raise validation_error({"url": [problem]})
    return str(url)


def set_endpoint(store: Store, box: SecretBox, user_id: str, email: str, url: Any,
                 allow_private: bool) -> Endpoint:
    """Create or change the user's endpoint; the secret is kept (made on first use)."""
    url = _checked(url, allow_private)
    current = store.webhooks.get_endpoint(user_id)
    if current is None:
        secret = new_secret()
        try:
            store.webhooks.create_endpoint(user_id, email, url, box.seal(secret, user_id))
            return Endpoint(url, secret)
        except EndpointExists:  # a concurrent PUT created it: change that one's URL
            current = store.webhooks.get_endpoint(user_id)
    try:
        secret = box.open(current["secret_sealed"], user_id) if current else new_secret()
        store.webhooks.update_endpoint(user_id, url=url)
    except SecretUnreadable:  # sealed under another SECRET_KEY: useless, replace it
        secret = new_secret()
        store.webhooks.update_endpoint(user_id, url=url, sealed=box.seal(secret, user_id))
    return Endpoint(url, secret)


def rotate_secret(store: Store, box: SecretBox, user_id: str) -> Endpoint:
    current = store.webhooks.get_endpoint(user_id)
    if current is None:
        raise ApiError(404, NOT_SET)
    secret = new_secret()
    updated = store.webhooks.update_endpoint(user_id, sealed=box.seal(secret, user_id))
    if updated is None:
        raise ApiError(404, NOT_SET)
    return Endpoint(updated["url"], secret)


def get_endpoint(store: Store, user_id: str) -> dict[str, str]:
    current = store.webhooks.get_endpoint(user_id)
    if current is None:
        raise ApiError(404, NOT_SET)
    return {"url": current["url"]}


def delete_endpoint(store: Store, user_id: str) -> None:
    store.webhooks.delete_endpoint(user_id)


def signing_secret(store: Store, box: SecretBox, user_id: str) -> str | None:
    """The user's current secret; None if none is set. Raises SecretUnreadable."""
    current = store.webhooks.get_endpoint(user_id)
    return box.open(current["secret_sealed"], user_id) if current else None


def job_target(store: Store, user_id: str, body: Mapping[str, Any], allow_private: bool
               ) -> tuple[str | None, tuple[str, ...] | None, dict[str, list[str]]]:
    """A video POST's own `webhookUrl` / `webhookEvents`, checked: (url, events, details)."""
    url = body.get("webhookUrl")
    events: Sequence[str] | None = body.get("webhookEvents")
    details: dict[str, list[str]] = {}
    if url is not None:
        problem = url_problem(url, allow_private)
        if problem is None and store.webhooks.get_endpoint(user_id) is None:
            problem = "Set a webhook secret first (PUT /api/webhook)."
        if problem:
            details["webhookUrl"] = [problem]
    return url, (tuple(dict.fromkeys(events)) if events is not None else None), details


def delivery_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of `GET /api/templates/video/webhooks`."""
    return {"id": row["id"], "type": row["type"], "url": row["url"],
            "attempts": int(row.get("attempts") or 0), "state": row["state"],
            "lastStatus": row.get("last_status"), "lastError": row.get("last_error"),
            "lastAttemptAt": jobs.iso(row.get("last_attempt_at")),
            "nextAttemptAt": jobs.iso(row.get("next_attempt_at"))}


def job_deliveries(store: Store, job_id: str) -> dict[str, Any]:
    return {"deliveries": [delivery_view(r) for r in store.webhooks.deliveries_for_job(job_id)]}


__all__ = ["DEFAULT_WEBHOOK_EVENTS", "EVENTS", "Endpoint", "delete_endpoint", "get_endpoint",
           "job_deliveries", "job_target", "rotate_secret", "set_endpoint", "signing_secret",
           "url_problem"]
