"""The SurrealDB test server (`tests/support/surreal_server.py`): the product's Store works
over ws:// unchanged, several clients share one store, data survives a kill -9 and restart,
and the Store reconnects by itself once the server is back."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from app.store import DatabaseConfig, Store
from app.store.errors import StoreUnavailable
from tests.test_store import (
    new_job,
    test_balance_can_never_go_negative,
    test_ledger_explains_every_balance,
    test_migrate_twice_changes_nothing_and_loses_nothing,
    test_refund_happens_at_most_once,
)

# The store's own tests, run again over ws:// (the `store` fixture below wins here).
__all__ = ["test_balance_can_never_go_negative", "test_ledger_explains_every_balance",
           "test_migrate_twice_changes_nothing_and_loses_nothing",
           "test_refund_happens_at_most_once"]


@pytest.fixture
def store(networked_store: Store) -> Store:
    return networked_store


def test_job_lifecycle_over_ws(networked_store: Store) -> None:
    """Charge, claim by compare-and-set, refund once: the same SurrealQL over the wire."""
    store = networked_store
    user = store.users.create("ws@example.com", None, credits=250)
    job = new_job(user)
    store.jobs.create_with_charge(job)
    assert store.users.credits(user["id"]) == 150
    record = store.jobs.get(job.job_id)
    assert record is not None and record["status"] == "pending"
    assert store.jobs.update_if(job.job_id, ("pending",), {"status": "processing"})
    assert not store.jobs.update_if(job.job_id, ("pending",), {"status": "processing"})
    assert store.jobs.fail_and_refund(job.job_id, "boom") is not None
    assert store.jobs.fail_and_refund(job.job_id, "boom") is None
    assert store.users.credits(user["id"]) == 250


def test_concurrent_clients_lose_no_update(surreal_config: DatabaseConfig,
                                           networked_store: Store) -> None:
    """8 connections (threads, each its own socket) add 1 each 40 times: nothing is lost."""
    user = networked_store.users.create("many@example.com", None, credits=0)
    errors: list[BaseException] = []

    def add() -> None:
        try:
            other = Store.open(surreal_config, run_migrations=False)
            for _ in range(40):
                other.users.grant("many@example.com", 1, note="test")
            other.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert networked_store.users.credits(user["id"]) == 320
    assert len(networked_store.ledger.for_user(user["id"])) == 320


def test_data_survives_kill_and_store_reconnects(surreal_server: Any,
                                                 networked_store: Store) -> None:
    user = networked_store.users.create("restart@example.com", None, credits=7)
    surreal_server.kill()
    with pytest.raises(StoreUnavailable):
        networked_store.users.credits(user["id"])
    surreal_server.start()
    # Same URL, same data directory: the next call reconnects and finds the data.
    assert networked_store.users.credits(user["id"]) == 7
    networked_store.users.grant("restart@example.com", 3, note="after restart")
    assert networked_store.users.credits(user["id"]) == 10


def test_only_rpc_is_served(surreal_server: Any) -> None:
    if not hasattr(surreal_server, "port"):
        pytest.skip("a real server serves more than /rpc")
    resp = requests.get(f"http://127.0.0.1:{surreal_server.port}/other", timeout=10)
    assert resp.status_code == 404


def test_credentials_are_accepted_and_ignored(surreal_server: Any) -> None:
    """Clients configured like production (SURREALDB_USER/PASS) connect."""
    store = Store.open(DatabaseConfig(surreal_server.url, user="root", password="root"))
    assert store.db.query("RETURN 1;") == [1]
    store.close()


def test_first_call_after_a_restart_succeeds(surreal_server: Any,
                                             networked_store: Store) -> None:
    """A connection closed while idle (server restarted between calls) is replaced before
    anything is sent on it: no caller sees the restart."""
    user = networked_store.users.create("idle@example.com", None, credits=4)
    surreal_server.kill()
    surreal_server.start()
    deadline = time.monotonic() + 10  # the client notices the closed socket at once
    conn = networked_store.db._local.conn
    while conn.socket.state.name == "OPEN" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert networked_store.users.credits(user["id"]) == 4


def test_a_failed_connection_is_closed(surreal_server: Any, networked_store: Store) -> None:
    """Dropping a thread's connection after an error closes it (no leaked socket and
    reader threads), and close() releases every thread's connection."""
    first = networked_store.db._local.conn
    surreal_server.kill()
    with pytest.raises(StoreUnavailable):
        networked_store.db.query("RETURN 1;")
    assert first.socket is None  # closed by the store, not merely forgotten
    surreal_server.start()
    assert networked_store.db.query("RETURN 1;") == [1]
    opened: list[Any] = []

    def other_thread() -> None:
        networked_store.db.query("RETURN 2;")
        opened.append(networked_store.db._local.conn)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(timeout=30)
    networked_store.close()
    assert opened and opened[0].socket is None
