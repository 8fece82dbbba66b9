"""The `video_job` table: creation with its charge, reads, listing, and terminal writes.

Exactly-once money: a job and its charge are one transaction (the balance update is
guarded by `WHERE credits >= $cost` and the field's `ASSERT $value >= 0`); a refund is
one transaction that wins the job's compare-and-set to `failed` *and* creates the
ledger row `credit_ledger:refund_<job>` whose id (and the UNIQUE (ref, kind) index) can
exist once. A second refund attempt finds the job terminal or the row taken, and the
whole transaction rolls back.

Outbound webhooks (an outbox): a status change that is an event (`processing` when fal
accepted the job, `completed`, `failed`) writes its `webhook_delivery` row in the SAME
transaction, with the id `<job>_<event>`, and only when the job's compare-and-set won. So
the event exists exactly when the status change does, and a second writer (a racing
webhook and sweeper) cannot create it twice. Delivery listeners are told the new row's id
after the commit (they enqueue it); if that message is lost, the sweeper sends it later.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from app.jobs import ACTIVE, DEFAULT_EVENTS, TRACKED, Job, Phase, Status
from app.store.connection import Database
from app.store.errors import AlreadyExists, Thrown
from app.store.records import first, rows

# A pending job whose submit message was lost is re-enqueued by the sweeper after this.
RESEND_PENDING_SECONDS = 15
# A new webhook delivery is sent at once; the sweeper re-sends it only after this.
OUTBOX_DISPATCH_GRACE_SECONDS = 10
DEFAULT_WEBHOOK_EVENTS = DEFAULT_EVENTS


class Expr(str):
    """A SurrealQL expression to inline in a SET clause (our own constants only)."""


NOW = Expr("time::now()")
NONE = Expr("NONE")


def now_plus(seconds: float) -> Expr:
    return Expr(f"time::now() + {max(0, int(seconds * 1000))}ms")


class InsufficientCredits(Exception):
    """The balance is below the job's cost; nothing was written."""


class IdempotencyKeyTaken(Exception):
    """Another request with this user's key got there first; `job_id` is its job."""


@dataclass(frozen=True)
class NewJob:
    """Everything the API decided about a job before it is written."""

    job_id: str
    user_id: str
    email: str
    template_id: str
    model: str
    prompt: str
    negative_prompt: str | None
    start_key: str
    duration: str
    variables: dict[str, str]
    credits: int
    timeout_seconds: int
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] | None = None


def idempotency_record_id(user_id: str, key: str) -> str:
    """One record per (user, key): its id is a hash, so a second CREATE fails atomically."""
    return hashlib.sha256(f"{user_id}\n{key}".encode()).hexdigest()


def encode_cursor(created_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """None for anything we did not hand out (the API answers 400)."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        stamp, job_id = text.split("|", 1)
        return datetime.fromisoformat(stamp), job_id
    except (ValueError, UnicodeDecodeError):
        return None


_CREATE = """
BEGIN;
LET $u = (UPDATE type::record('user', $user_id)
          SET credits -= $credits, updated_at = time::now()
          WHERE credits >= $credits RETURN AFTER);
IF array::len($u) = 0 { THROW "INSUFFICIENT_CREDITS"; };
CREATE type::record('credit_ledger', $charge_id) CONTENT {
    user_id: $user_id, email: $email, kind: 'charge', amount: -$credits, ref: $job_id,
    job_id: $job_id, balance_after: $u[0].credits
};
IF $idem_id != NONE {
    CREATE type::record('idempotency', $idem_id) CONTENT {
        user_id: $user_id, key: $idem_key, request_hash: $request_hash, job_id: $job_id
    };
};
CREATE type::record('video_job', $job_id) CONTENT {
    user_id: $user_id, email: $email, template_id: $template_id, model: $model,
    prompt: $prompt, negative_prompt: $negative_prompt, start_key: $start_key,
    duration: $duration, variables: $variables, credits: $credits, status: $status,
    phase: $phase, refunded: false, idempotency_key: $idem_key,
    webhook_url: $webhook_url, webhook_events: $webhook_events,
    deadline_at: time::now() + type::duration($timeout),
    next_check_at: time::now() + type::duration($resend_after)
};
RETURN $u[0].credits;
COMMIT;
"""

# After `LET $j = (UPDATE ... RETURN AFTER)` in a transaction: the event's delivery row, if
# the compare-and-set won and the job has a target (its own URL, else its owner's endpoint)
# whose filter takes this event. `$d` is the new row's id (in a list) or NONE.
_OUTBOX = f"""
LET $ep = IF array::len($j) > 0 {{
    (SELECT url FROM ONLY type::record('webhook_endpoint', $j[0].user_id)) }} ELSE {{ NONE }};
LET $target = $j[0].webhook_url ?? $ep.url;
LET $d = IF array::len($j) > 0 AND $target != NONE
        AND $event IN ($j[0].webhook_events ?? {list(DEFAULT_WEBHOOK_EVENTS)!r})
        AND (SELECT VALUE id FROM ONLY type::record('webhook_delivery', $delivery_id)) = NONE {{
    (CREATE type::record('webhook_delivery', $delivery_id) CONTENT {{
        job_id: $job_id, user_id: $j[0].user_id, type: 'video.' + $event, url: $target,
        job: {{ status: $j[0].status, phase: $j[0].phase, queue_position: $j[0].queue_position,
                progress: $j[0].progress, result_key: $j[0].result_key,
                credits: $j[0].credits, error: $j[0].error, refunded: $j[0].refunded,
                created_at: $j[0].created_at, completed_at: $j[0].completed_at }},
        state: 'pending', attempts: 0, next_attempt_at: time::now(),
        lease_until: time::now() + {OUTBOX_DISPATCH_GRACE_SECONDS}s
    }} RETURN VALUE meta::id(id))
}} ELSE {{ NONE }};
"""


_QUEUED = {"pending": Status.PENDING.value, "queued": Phase.QUEUED.value}


def _values(members: tuple[str, ...]) -> list[str]:
    """Enum members as the plain strings the SDK encodes."""
    return [m.value if isinstance(m, StrEnum) else m for m in members]


def _job(result: Any) -> Job | None:
    """A statement's first row as a Job (the table's schema guarantees the fields)."""
    return cast("Job | None", first(result))


def _jobs(result: Any) -> list[Job]:
    return cast("list[Job]", rows(result))


def delivery_id(job_id: str, event: str) -> str:
    """One delivery row per (job, event): the id itself makes a second one impossible."""
    return f"{job_id}_{event}"


_FAIL_AND_REFUND = """
BEGIN;
LET $j = (UPDATE type::record('video_job', $job_id)
          SET status = $failed, error = $error, refunded = true, phase = NONE,
              lease_owner = NONE, lease_until = NONE, next_check_at = NONE,
              cancel_requested = $cancel, updated_at = time::now(), completed_at = time::now()
          WHERE status IN $from RETURN AFTER);
IF array::len($j) = 0 { THROW "NOT_IN_STATE"; };
LET $u = (UPDATE type::record('user', $j[0].user_id)
          SET credits += $j[0].credits, updated_at = time::now() RETURN AFTER);
CREATE type::record('credit_ledger', $refund_id) CONTENT {
    user_id: $j[0].user_id, email: $j[0].email, kind: 'refund', amount: $j[0].credits,
    ref: $job_id, job_id: $job_id, balance_after: $u[0].credits, note: $error
};
""" + _OUTBOX + """
RETURN {job: $j[0], delivery: $d};
COMMIT;
"""


class JobRepository:
    """The only code reading or writing `video_job` (and the charge/refund rows)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Called with the record after every successful write (e.g. the status cache).
        self.listeners: list[Callable[[Job], None]] = []
        # Called with a new webhook delivery's id after its transaction committed.
        self.delivery_listeners: list[Callable[[str], None]] = []

    def _written(self, row: Job | None) -> Job | None:
        if row is not None:
            for listener in self.listeners:
                listener(row)
        return row

    def _outboxed(self, result: list[Any]) -> Job | None:
        """Unpack `{job, delivery}` from a transaction with _OUTBOX; tell the listeners."""
        found = next((r for r in reversed(result) if isinstance(r, dict) and "job" in r), None)
        if found is None or found.get("job") is None:
            return None
        created = found.get("delivery")
        for new_id in created if isinstance(created, list) else ():
            for listener in self.delivery_listeners:
                listener(str(new_id))
        return self._written(_job(found["job"]))

    def create_with_charge(self, job: NewJob) -> int:
        """Charge, ledger row, idempotency row and pending job in one transaction.

        Returns the balance after the charge. Raises InsufficientCredits, or
        IdempotencyKeyTaken when a concurrent request with the same key won.
        """
        idem_id = (idempotency_record_id(job.user_id, job.idempotency_key)
                   if job.idempotency_key else None)
        params: dict[str, Any] = {
            "job_id": job.job_id, "user_id": job.user_id, "email": job.email,
            "template_id": job.template_id, "model": job.model, "prompt": job.prompt,
            "negative_prompt": job.negative_prompt, "start_key": job.start_key,
            "duration": job.duration, "variables": job.variables, "credits": job.credits,
            "timeout": f"{int(job.timeout_seconds)}s", "charge_id": f"charge_{job.job_id}",
            "idem_id": idem_id, "idem_key": job.idempotency_key,
            "request_hash": job.request_hash, "resend_after": f"{RESEND_PENDING_SECONDS}s",
            "webhook_url": job.webhook_url,
            "webhook_events": list(job.webhook_events) if job.webhook_events is not None
            else None, "status": Status.PENDING.value, "phase": Phase.QUEUED.value,
        }
        try:
            result = self.db.query(_CREATE, params)
        except Thrown as exc:
            if exc.reason == "INSUFFICIENT_CREDITS":
                raise InsufficientCredits() from None
            raise
        except AlreadyExists as exc:
            if idem_id is not None and "idempotency" in str(exc):
                raise IdempotencyKeyTaken() from None
            raise
        return int([r for r in result if isinstance(r, int)][-1])

    def get(self, job_id: str) -> Job | None:
        return _job(self.db.query("SELECT * FROM ONLY type::record('video_job', $id);",
                                   {"id": job_id})[0])

    def get_status_fields(self, job_id: str) -> Job | None:
        """Only what a status answer needs: the hot path of every dashboard poll."""
        return _job(self.db.query(
            "SELECT id, user_id, status, phase, queue_position, progress, result_key, credits,"
            " error, refunded, created_at, completed_at, updated_at"
            " FROM ONLY type::record('video_job', $id);", {"id": job_id})[0])

    def idempotency(self, user_id: str, key: str) -> dict[str, Any] | None:
        return first(self.db.query(
            "SELECT * FROM ONLY type::record('idempotency', $id);",
            {"id": idempotency_record_id(user_id, key)})[0])

    def delete_expired_idempotency(self, older_than_seconds: int) -> int:
        """Forget idempotency keys older than that (kept at least 24 h); returns how many.
        The jobs themselves stay: only the key -> job link goes."""
        deleted = self.db.query(
            "DELETE idempotency WHERE created_at < time::now() - type::duration($age) "
            "RETURN BEFORE;", {"age": f"{int(older_than_seconds)}s"})[0]
        return len(deleted or [])

    def list_for_user(self, email: str, limit: int,
                      cursor: tuple[datetime, str] | None) -> list[Job]:
        """Newest first; `limit + 1` rows are read so the caller knows if more exist."""
        if cursor is None:
            sql = ("SELECT * FROM video_job WHERE email = $email "
                   "ORDER BY created_at DESC, id DESC LIMIT $n;")
            params: dict[str, Any] = {"email": email, "n": limit + 1}
        else:
            sql = ("SELECT * FROM video_job WHERE email = $email AND (created_at < $at OR "
                   "(created_at = $at AND id < type::record('video_job', $cid))) "
                   "ORDER BY created_at DESC, id DESC LIMIT $n;")
            params = {"email": email, "n": limit + 1, "at": cursor[0], "cid": cursor[1]}
        return _jobs(self.db.query(sql, params)[0])

    def count(self) -> int:
        result = self.db.query("SELECT count() AS n FROM video_job GROUP ALL;")[0]
        return int(result[0]["n"]) if result else 0

    def fail_and_refund(self, job_id: str, error: str, from_statuses: tuple[str, ...] = ACTIVE,
                        cancel_at_provider: bool = False) -> Job | None:
        """Mark failed with `error` and refund, once; None if the job was not in `from`."""
        params = {"job_id": job_id, "error": error, "from": _values(from_statuses),
                  "failed": Status.FAILED.value,
                  "refund_id": f"refund_{job_id}", "cancel": cancel_at_provider,
                  "event": Status.FAILED.value,
                  "delivery_id": delivery_id(job_id, Status.FAILED.value)}
        try:
            result = self.db.query(_FAIL_AND_REFUND, params)
        except Thrown as exc:
            if exc.reason == "NOT_IN_STATE":
                return None
            raise
        except AlreadyExists:
            return None  # a refund row exists already: never twice
        return self._outboxed(result)

    def update_if(self, job_id: str, from_statuses: tuple[str, ...],
                  changes: dict[str, Any], *, phases: tuple[str, ...] | None = None,
                  owner: str | None = None, lease_free: bool = False,
                  event: str | None = None) -> Job | None:
        """Compare-and-set: apply `changes` only while the record is as expected.

        `from_statuses` (and `phases`) name the states it may be in; `owner` requires our
        lease; `lease_free` requires no live lease held by a worker (no owner, or expired:
        taken over). `event` (`processing`, `completed`) makes the change an outbound
        webhook event: its delivery row is written in the same transaction.
        Returns the record after, or None if another writer got there first.
        """
        conditions = ["status IN $from"]
        params: dict[str, Any] = {"id": job_id, "from": _values(from_statuses)}
        if phases is not None:
            conditions.append("phase IN $phases")
            params["phases"] = _values(phases)
        if owner is not None:
            conditions.append("lease_owner = $owner")
            params["owner"] = owner
        if lease_free:
            conditions.append("(lease_owner = NONE OR lease_until = NONE "
                              "OR lease_until < time::now())")
        sets = []
        for name, value in changes.items():
            if isinstance(value, Expr):
                sets.append(f"{name} = {value}")
            else:
                sets.append(f"{name} = $c_{name}")
                params[f"c_{name}"] = value.value if isinstance(value, StrEnum) else value
        sql = (f"UPDATE type::record('video_job', $id) SET {', '.join(sets)}, "
               f"updated_at = time::now() WHERE {' AND '.join(conditions)} RETURN AFTER")
        if event is None:
            return self._written(_job(self.db.query(sql + ";", params)[0]))
        params.update(job_id=job_id, event=event, delivery_id=delivery_id(job_id, event))
        return self._outboxed(self.db.query(
            f"BEGIN;\nLET $j = ({sql});\n{_OUTBOX}\nRETURN {{job: $j[0], delivery: $d}};\n"
            "COMMIT;", params))

    def find_by_request_id(self, request_id: str) -> Job | None:
        return _job(self.db.query(
            "SELECT * FROM video_job WHERE fal_request_id = $r LIMIT 1;", {"r": request_id})[0])

    def _claim_batch(self, where: str, sets: str, limit: int, order: str = ""
                     ) -> list[Job]:
        """Select up to `limit` due ids, then move them on with a compare-and-set that
        repeats `where`, so a concurrent sweep claims none of the same rows."""
        due = self.db.query(f"SELECT VALUE id FROM video_job WHERE {where} {order} LIMIT $n;",
                            {"n": limit})[0] or []
        if not due:
            return []
        return _jobs(self.db.query(
            f"UPDATE $ids SET {sets}, updated_at = time::now() WHERE {where} RETURN AFTER;",
            {"ids": due})[0])

    def in_flight_checks(self) -> list[Job]:
        """Every job whose provider status is checked, with what a check needs: what the
        status-check schedule is rebuilt from (app/check_schedule.py)."""
        return _jobs(self.db.query(
            "SELECT id, status, phase, fal_status_url, provider_status, queue_position "
            "FROM video_job WHERE status = $processing AND phase IN $tracked;",
            {"processing": Status.PROCESSING.value, "tracked": _values(TRACKED)})[0])

    def due_resends(self, limit: int) -> list[Job]:
        """Pending jobs nobody took yet whose re-send time has come (read only: the
        sweeper decides per job, then claims it with `claim_resend`)."""
        return _jobs(self.db.query(
            "SELECT id, resends FROM video_job WHERE status = $pending AND phase = $queued "
            "AND next_check_at <= time::now() LIMIT $n;", {"n": limit, **_QUEUED})[0])

    def claim_resend(self, job_id: str, delay_seconds: float) -> bool:
        """Take a due re-send (compare-and-set, so one sweeper sends it) and set the next
        one `delay_seconds` later."""
        return bool(self.db.query(
            f"UPDATE type::record('video_job', $id) SET next_check_at = "
            f"{now_plus(delay_seconds)}, resends += 1, updated_at = time::now() "
            "WHERE status = $pending AND phase = $queued AND next_check_at <= time::now() "
            "RETURN id;", {"id": job_id, **_QUEUED})[0])

    def resend_due_finalize(self, limit: int, grace_seconds: float) -> list[Job]:
        """Finalizing jobs whose lease ran out (a crash, a lost message, a retry's wait),
        pushed forward by `grace_seconds` so one message is sent per grace period."""
        return self._claim_batch(
            f"status = '{Status.PROCESSING}' AND phase = '{Phase.FINALIZING}' "
            "AND lease_until != NONE "
            "AND lease_until < time::now()",
            f"lease_owner = NONE, lease_until = {now_plus(grace_seconds)}", limit)

    def expired_leases(self, phase: str, limit: int) -> list[Job]:
        return _jobs(self.db.query(
            "SELECT * FROM video_job WHERE status IN $active AND "
            "phase = $phase AND lease_until != NONE AND lease_until < time::now() LIMIT $n;",
            {"phase": str(phase), "n": limit, "active": _values(ACTIVE)})[0])

    def past_deadline(self, limit: int) -> list[Job]:
        # One equality per status: `status IN [...]` made the engine scan every row
        # (30 ms at 5,000 in flight); `status = $s AND deadline_at < ...` is a range
        # scan of the (status, deadline_at) index (0.2 ms).
        found: list[Job] = []
        for status in ACTIVE:
            found += _jobs(self.db.query(
                "SELECT * FROM video_job WHERE status = $s AND deadline_at < time::now() "
                "LIMIT $n;", {"s": status, "n": limit - len(found)})[0])
            if len(found) >= limit:
                break
        return found

    def cancels_owed(self, limit: int) -> list[Job]:
        """Failed jobs the provider may still be running (cancelled or timed out)."""
        return _jobs(self.db.query(
            "SELECT * FROM video_job WHERE status = $failed AND cancel_requested = true "
            "AND fal_cancel_url != NONE LIMIT $n;", {"n": limit, "failed": Status.FAILED.value}
        )[0])

    def claim_cancel_request(self, job_id: str) -> Job | None:
        """Take an owed provider cancel (compare-and-set), so only one worker sends it."""
        return self._written(_job(self.db.query(
            "UPDATE type::record('video_job', $id) SET cancel_requested = false, "
            "updated_at = time::now() WHERE cancel_requested = true RETURN AFTER;",
            {"id": job_id})[0]))

    def restore_cancel_request(self, job_id: str) -> None:
        """The cancel call failed: owe it again (the sweeper retries)."""
        self.db.query("UPDATE type::record('video_job', $id) SET cancel_requested = true, "
                      "updated_at = time::now();", {"id": job_id})

