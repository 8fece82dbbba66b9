"""The store itself: idempotent migrations, once-only refunds, the embedded lock."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.external import ExternalError
from app.ids import new_id
from app.store import DatabaseConfig, Store, migrate
from app.store.connection import Database
from app.store.errors import (
    AlreadyExists,
    ConflictRetryable,
    ConstraintViolation,
    StoreError,
    StoreLocked,
    StoreUnavailable,
    Thrown,
)
from app.store.jobs import NewJob


def new_job(user: dict, credits: int = 100) -> NewJob:
    return NewJob(job_id=new_id(), user_id=user["id"], email=user["email"], template_id="t",
                  model="fal-ai/x", prompt="p", negative_prompt=None, start_key="k",
                  duration="5", variables={}, credits=credits, timeout_seconds=60)


def test_migrate_twice_changes_nothing_and_loses_nothing(store: Store) -> None:
    user = store.users.create("m@example.com", None, credits=300)
    job = new_job(user)
    store.jobs.create_with_charge(job)
    info_before = store.db.query("INFO FOR DB;")[0]
    migrate(store.db)
    migrate(store.db)
    assert store.db.query("INFO FOR DB;")[0] == info_before
    assert store.users.credits(user["id"]) == 200
    assert store.jobs.get(job.job_id) is not None
    assert len(store.ledger.for_user(user["id"])) == 2


def test_refund_happens_at_most_once(store: Store) -> None:
    user = store.users.create("r@example.com", None, credits=100)
    job = new_job(user)
    store.jobs.create_with_charge(job)
    assert store.users.credits(user["id"]) == 0
    assert store.jobs.fail_and_refund(job.job_id, "boom") is not None
    assert store.jobs.fail_and_refund(job.job_id, "boom") is None
    assert store.jobs.fail_and_refund(job.job_id, "boom", from_statuses=("failed",)) is None
    assert store.users.credits(user["id"]) == 100
    kinds = sorted(r["kind"] for r in store.ledger.for_job(job.job_id))
    assert kinds == ["charge", "refund"]
    with pytest.raises(AlreadyExists):  # the ledger itself refuses a second refund row
        store.db.query("CREATE credit_ledger CONTENT {user_id: $u, email: 'r@example.com', "
                       "kind: 'refund', amount: 100, ref: $j, balance_after: 200};",
                       {"u": user["id"], "j": job.job_id})


def test_store_errors_carry_a_message_and_say_whether_retrying_may_help(store: Store) -> None:
    user = store.users.create("e@example.com", None, credits=10)
    failures: list[tuple[ExternalError, type[StoreError], bool]] = []
    for sql, kind in (
            ("THROW 'NOT_IN_STATE';", Thrown),
            ("UPDATE type::record('user', $id) SET credits = -1;", ConstraintViolation),
            ("CREATE type::record('user', $id) CONTENT {email: 'x@example.com', credits: 1};",
             AlreadyExists)):
        with pytest.raises(ExternalError) as caught:
            store.db.query(sql, {"id": user["id"]})
        failures.append((caught.value, kind, False))
    with socket.socket() as sock:  # a server that is not there
        sock.bind(("127.0.0.1", 0))
        closed = f"ws://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ExternalError) as caught:
        Database(DatabaseConfig(closed)).ping()
    failures.append((caught.value, StoreUnavailable, True))
    for error, kind, retryable in failures:
        assert type(error) is kind and isinstance(error, StoreError)
        assert error.retryable is retryable
        assert error.message and error.message == str(error)
    assert failures[0][0].message == "NOT_IN_STATE"
    assert ConflictRetryable.retryable is True


def test_balance_can_never_go_negative(store: Store) -> None:
    user = store.users.create("n@example.com", None, credits=10)
    with pytest.raises(StoreError):
        store.db.query("UPDATE type::record('user', $id) SET credits = -1;", {"id": user["id"]})
    assert store.users.credits(user["id"]) == 10


def test_ledger_explains_every_balance(store: Store) -> None:
    user = store.users.create("l@example.com", None, credits=1000)
    store.users.grant("l@example.com", 250)
    jobs = [new_job(user, 300) for _ in range(3)]
    for job in jobs:
        store.jobs.create_with_charge(job)
    store.jobs.fail_and_refund(jobs[1].job_id, "x")
    assert store.users.credits(user["id"]) == 1250 - 900 + 300
    assert store.ledger.sum_for_user(user["id"]) == store.users.credits(user["id"])


def test_second_process_cannot_open_the_embedded_store(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'db'}"
    holder = Store.open(DatabaseConfig(url))
    try:
        holder.users.create("first@example.com", None)
        code = (
            "import sys\n"
            "from app.store import Store, DatabaseConfig\n"
            "from app.store.errors import StoreLocked\n"
            f"try:\n    Store.open(DatabaseConfig({url!r}))\n"
            "except StoreLocked as e:\n    print('LOCKED', e); sys.exit(3)\n"
            "sys.exit(0)\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60, cwd=Path(__file__).resolve().parents[1])
        assert result.returncode == 3, result.stderr
        assert "in use by another process" in result.stdout
    finally:
        holder.close()
    reopened = Store.open(DatabaseConfig(url))  # after release, the data is all there
    try:
        assert reopened.users.get_by_email("first@example.com") is not None
    finally:
        reopened.close()
    assert StoreLocked is not None


def test_set_poster_only_on_an_existing_item(store: Store) -> None:
    """A poster taken after its video was deleted is not recorded (the caller deletes it)."""
    key = "users/u1/library/j1.mp4"
    assert store.library.set_poster(key, "users/u1/library/j1.poster.jpg") is False
    assert store.library.get(key) is None
    store.library.add(key=key, user_id="u1", kind="video", content_type="video/mp4", size=10,
                      job_id="j1", template_slug="night-life-roller", duration="5")
    assert store.library.set_poster(key, "users/u1/library/j1.poster.jpg") is True
    row = store.library.get(key)
    assert row is not None and row["poster_key"] == "users/u1/library/j1.poster.jpg"
    assert row["template_slug"] == "night-life-roller" and row["duration"] == "5"
