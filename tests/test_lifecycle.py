"""The lifecycle module: its move table agrees with the status rules, it is the only writer
of a job's status, and each move happens once on the real engine whoever races it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app import fal, lifecycle
from app.ids import new_id
from app.jobs import Phase, Status
from app.store import Store
from app.store.jobs import NewJob

ROOT = Path(__file__).resolve().parent.parent
# The store's own compare-and-set primitives: only the lifecycle calls them.
WRITERS = {"update_if", "fail_and_refund"}


class _Queue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def finalize(self, job_id: str) -> bool:
        self.sent.append(job_id)
        return True


def _new(store: Store, credits: int = 40) -> tuple[str, str]:
    user = store.users.create(f"{new_id()[:8]}@example.com", None, credits=100)
    job_id = new_id()
    store.jobs.create_with_charge(NewJob(
        job_id=job_id, user_id=user["id"], email=user["email"], template_id="t",
        model="fal-ai/x", prompt="p", negative_prompt=None, start_key="k", duration="5",
        variables={}, credits=credits, timeout_seconds=600))
    return job_id, user["id"]


def _submission(request_id: str) -> fal.Submission:
    base = f"https://queue.fal.run/fal-ai/x/requests/{request_id}"
    return fal.Submission(request_id=request_id, status_url=base + "/status",
                          response_url=base, cancel_url=base + "/cancel", queue_position=3)


@pytest.mark.parametrize("move", lifecycle.MOVES, ids=lambda m: m.name)
def test_every_move_is_a_status_change_the_rules_allow(move: lifecycle.Move) -> None:
    for source in move.from_statuses:
        assert move.to_status == source or move.to_status in lifecycle.TRANSITIONS[source]
    assert not lifecycle.TRANSITIONS[Status.COMPLETED]
    assert not lifecycle.TRANSITIONS[Status.FAILED]


def test_a_move_refuses_a_phase_it_does_not_end_in() -> None:
    with pytest.raises(ValueError):
        lifecycle.PROVIDER_STATUS.changes(Phase.FINALIZING)


def test_no_product_module_but_the_lifecycle_writes_a_job_status() -> None:
    offenders = []
    for path in sorted([*ROOT.glob("app/**/*.py"), *ROOT.glob("workers/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "app/lifecycle.py" or rel.startswith("app/store/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in WRITERS):
                offenders.append(f"{rel}:{node.lineno} {node.func.attr}")
    assert offenders == []


def test_a_job_goes_through_every_move_once(store: Store) -> None:
    job_id, user_id = _new(store)
    assert lifecycle.claim_submit(store, job_id, "w1") is not None
    assert lifecycle.claim_submit(store, job_id, "w2") is None  # the lease is taken
    saved = lifecycle.record_submission(store, job_id, "w1", _submission("r1"), 5.0)
    assert saved is lifecycle.SubmitSaved.SAVED
    job = store.jobs.get(job_id)
    assert job is not None and (job["status"], job["phase"]) == ("processing", "in_queue")
    moved = lifecycle.record_provider_status(store, job, fal.IN_PROGRESS, None, 5.0)
    assert moved is not None and moved["phase"] == "in_progress"
    queue = _Queue()
    assert lifecycle.provider_completed(store, queue, moved)
    assert not lifecycle.provider_completed(store, queue, moved)  # a duplicate callback
    assert queue.sent == [job_id]
    assert lifecycle.claim_finalize(store, job_id, "w2") is not None
    assert lifecycle.complete(store, job_id, "w1", "k") is None  # not the lease holder
    done = lifecycle.complete(store, job_id, "w2", "videos/x.mp4")
    assert done is not None and done["status"] == "completed" and done.get("phase") is None
    assert lifecycle.cancel(store, done) is None  # a finished job cannot be cancelled
    assert store.users.credits(user_id) == 60


def test_cancel_refunds_once_and_a_late_submit_answer_is_gone(store: Store) -> None:
    job_id, user_id = _new(store)
    claimed = lifecycle.claim_submit(store, job_id, "w1")
    assert claimed is not None and lifecycle.provider_may_have(claimed)
    cancelled = lifecycle.cancel(store, claimed)
    assert cancelled is not None and cancelled["error"] == "Cancelled"
    assert cancelled["cancel_requested"] is True
    assert lifecycle.cancel(store, claimed) is None
    assert lifecycle.time_out(store, claimed) is False
    late = lifecycle.record_submission(store, job_id, "w1", _submission("r2"), 5.0)
    assert late is lifecycle.SubmitSaved.GONE
    assert store.users.credits(user_id) == 100
    assert [r["kind"] for r in store.ledger.for_user(user_id)].count("refund") == 1
