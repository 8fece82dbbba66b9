"""When each in-flight job's next provider status check is due, kept out of the job rows.

Rewriting `next_check_at` in SurrealDB on every check cost the embedded engine ~1 KB of
memory per write, never given back, and held it (and the GIL) for ~0.2 ms a row. So the
schedule lives in Redis instead, shared by every worker:

- `videojobs:checks`, a sorted set: member = job id, score = when its check is due (Unix s);
- `videojobs:checks:info`, a hash: job id -> what a check needs (status URL, last provider
  status, queue position), so a check whose answer did not change reads and writes nothing
  in the store;
- `videojobs:checks:built`, a marker set when the schedule was (re)built from the store.

A claim is one Lua script: it takes the due members and, in the same step, moves each one
to its next due time. That move is the lease: a worker that dies with a claimed batch loses
nothing, the jobs simply come due again one gap later. The next due time is the old one plus
the gap (not "now" plus the gap), so a sweep that runs late does not push every later check
back, and jobs keep their spread instead of bunching; members that fell more than a gap
behind (a long outage, a rebuild) are spread evenly over the next gap.

The record stays the truth. Every job write goes through the job repository, whose
listener (`track`) adds a job to the schedule when it reaches the provider and removes it
when it leaves; a check whose compare-and-set finds the job elsewhere removes it too. If
Redis loses the schedule (restart without persistence, FLUSHALL, eviction), the marker is
gone with it: the next sweep rebuilds the set from the store (`ensure_built`), and every
RECONCILE_SECONDS it reconciles both ways (adds missing jobs, drops ones no longer in
flight). Without Redis (`videojobs up` on its in-process broker) the same logic runs on an
in-process table.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from app.jobs import TRACKED, Job, Status

log = logging.getLogger(__name__)

SCHEDULE_KEY = "videojobs:checks"
INFO_KEY = "videojobs:checks:info"
MARKER_KEY = "videojobs:checks:built"
REBUILD_LOCK_KEY = "videojobs:checks:rebuild-lock"
TRACKED_PHASES = TRACKED
RECONCILE_SECONDS = 60.0
MIN_GAP_SECONDS = 0.5
# A rebuilt schedule does not know when each job was last checked: all are due within this.
REBUILD_SPREAD_SECONDS = 2.0

# Checks are scheduled this much sooner than STATUS_CHECK_INTERVAL: a check runs up to one
# sweep period (1 s) after it is due, plus the time its batch waits for a worker.
CHECK_MARGIN_SECONDS = 2.0


def check_gap(interval: float) -> float:
    """Seconds between two scheduled checks of a job, so that the gap between two actual
    checks stays within STATUS_CHECK_INTERVAL even when a sweep runs late."""
    return max(MIN_GAP_SECONDS, float(interval) - CHECK_MARGIN_SECONDS)


_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[2]))
local now, gap, min_gap = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n = #due / 2
local out = {}
for i = 1, n do
  local id, score = due[2 * i - 1], tonumber(due[2 * i])
  local nxt = score + gap
  if nxt < now + min_gap then
    nxt = now + min_gap + (gap - min_gap) * (i - 1) / n
  end
  redis.call('ZADD', KEYS[1], nxt, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"""


@dataclass(frozen=True)
class Due:
    """One claimed check: the job and what the schedule knows of it (None: read the store)."""

    job_id: str
    status_url: str | None
    provider_status: str | None
    queue_position: int | None

    def as_job(self) -> Job:
        """The fields `check_status` reads, shaped like a job record."""
        return {"id": self.job_id, "fal_status_url": self.status_url,
                "provider_status": self.provider_status, "queue_position": self.queue_position}

    def to_message(self) -> list[Any]:
        return [self.job_id, self.status_url, self.provider_status, self.queue_position]

    @classmethod
    def from_message(cls, item: list[Any]) -> Due:
        job_id, url, status, position = (list(item) + [None] * 4)[:4]
        return cls(str(job_id), url, status, position if isinstance(position, int) else None)


def is_tracked(row: Job) -> bool:
    """A job whose provider status the sweeper must check."""
    return (row.get("status") == Status.PROCESSING and row.get("phase") in TRACKED_PHASES
            and bool(row.get("fal_status_url")))


def _info(row: Job) -> str:
    return json.dumps({"u": row.get("fal_status_url"), "s": row.get("provider_status"),
                       "q": row.get("queue_position")}, separators=(",", ":"))


def _due(job_id: str, raw: str | bytes | None) -> Due:
    if not raw:
        return Due(job_id, None, None, None)
    try:
        data = json.loads(raw)
        position = data.get("q")
        return Due(job_id, data.get("u"), data.get("s"),
                   position if isinstance(position, int) else None)
    except (ValueError, AttributeError):
        return Due(job_id, None, None, None)


class CheckSchedule:
    """The schedule over Redis (shared by every process) or, without Redis, in-process."""

    def __init__(self, redis_client: Any | None, gap_seconds: float) -> None:
        self.redis = redis_client
        self.gap = max(MIN_GAP_SECONDS, float(gap_seconds))
        self._claim = redis_client.register_script(_CLAIM) if redis_client else None
        self._lock = threading.Lock()
        self._local: dict[str, tuple[float, str]] = {}
        self._local_built = False
        self._last_reconcile = 0.0

    # ---- following the record ----------------------------------------------------------

    def track(self, row: Job | None, now: float | None = None) -> None:
        """Listener for every job write: schedule a job at the provider, drop one that left.

        A job already scheduled keeps its due time (only its info is refreshed)."""
        if not row or "id" not in row:
            return
        job_id = str(row["id"])
        if not is_tracked(row):
            self.remove(job_id)
            return
        due = (now or time.time()) + self.gap
        if self.redis is None:
            with self._lock:
                current = self._local.get(job_id)
                self._local[job_id] = (current[0] if current else due, _info(row))
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(INFO_KEY, job_id, _info(row))
            pipe.zadd(SCHEDULE_KEY, {job_id: due}, nx=True)
            pipe.execute()
        except Exception as exc:  # the reconcile adds it back; never fail a job write
            log.warning("check schedule write failed: %s", type(exc).__name__,
                        extra={"job_id": job_id})

    def remove(self, job_id: str) -> None:
        if self.redis is None:
            with self._lock:
                self._local.pop(job_id, None)
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(SCHEDULE_KEY, job_id)
            pipe.hdel(INFO_KEY, job_id)
            pipe.execute()
        except Exception as exc:  # a stale member costs one extra status call, then goes
            log.warning("check schedule remove failed: %s", type(exc).__name__,
                        extra={"job_id": job_id})

    # ---- claiming ------------------------------------------------------------------------

    def claim(self, limit: int, now: float | None = None) -> list[Due]:
        """Take up to `limit` due checks, moving each to its next due time (the lease)."""
        now = now or time.time()
        if self._claim is None:
            return self._claim_local(limit, now)
        raw = self._claim(keys=[SCHEDULE_KEY, INFO_KEY],
                          args=[repr(now), int(limit), repr(self.gap), repr(MIN_GAP_SECONDS)])
        out = []
        for i in range(0, len(raw), 2):
            job_id = raw[i].decode() if isinstance(raw[i], bytes) else str(raw[i])
            out.append(_due(job_id, raw[i + 1]))
        return out

    def _claim_local(self, limit: int, now: float) -> list[Due]:
        with self._lock:
            due = sorted((score, job_id) for job_id, (score, _) in self._local.items()
                         if score <= now)[:limit]
            out = []
            for i, (score, job_id) in enumerate(due):
                nxt = score + self.gap
                if nxt < now + MIN_GAP_SECONDS:
                    nxt = now + MIN_GAP_SECONDS + (self.gap - MIN_GAP_SECONDS) * i / len(due)
                info = self._local[job_id][1]
                self._local[job_id] = (nxt, info)
                out.append(_due(job_id, info))
            return out

    def size(self) -> int:
        if self.redis is None:
            with self._lock:
                return len(self._local)
        return int(self.redis.zcard(SCHEDULE_KEY))

    def due_at(self, job_id: str) -> float | None:
        """When a job's next check is due (tests, operators)."""
        if self.redis is None:
            with self._lock:
                hit = self._local.get(job_id)
            return hit[0] if hit else None
        score = self.redis.zscore(SCHEDULE_KEY, job_id)
        return float(score) if score is not None else None

    # ---- rebuilding from the store ---------------------------------------------------------

    def built(self) -> bool:
        if self.redis is None:
            return self._local_built
        return bool(self.redis.exists(MARKER_KEY))

    def ensure_built(self, store: Any, now: float | None = None) -> float | None:
        """Rebuild from the store when the schedule was lost (marker gone), and reconcile it
        every RECONCILE_SECONDS; returns the seconds a rebuild took, None if none ran."""
        mono = time.monotonic()
        if self.built() and mono - self._last_reconcile < RECONCILE_SECONDS:
            return None
        self._last_reconcile = mono
        return self.rebuild(store, now)

    def rebuild(self, store: Any, now: float | None = None) -> float | None:
        """Make the schedule match the store's in-flight jobs: add the missing ones (due
        within REBUILD_SPREAD_SECONDS, since their last check time is unknown), keep the
        due time of those present, drop members no longer in flight. One process at a time
        (a Redis lock); returns the seconds it took, or None if another process holds it."""
        started = time.monotonic()
        lock = None
        if self.redis is not None:
            lock = self.redis.lock(REBUILD_LOCK_KEY, timeout=120, blocking=False)
            if not lock.acquire(blocking=False):
                return None
        try:
            # Members are listed before the store is read: a job that reaches the provider
            # in between is then in the store's answer, never mistaken for a stale member.
            if self.redis is None:
                with self._lock:
                    present = set(self._local)
            else:
                present = {m.decode() if isinstance(m, bytes) else str(m)
                           for m in self.redis.zrange(SCHEDULE_KEY, 0, -1)}
            jobs = store.jobs.in_flight_checks()
            now = now or time.time()
            spread = min(REBUILD_SPREAD_SECONDS, self.gap)
            wanted = {str(j["id"]): j for j in jobs if is_tracked(j)}
            count = max(1, len(wanted))
            if self.redis is None:
                with self._lock:
                    for i, (job_id, row) in enumerate(wanted.items()):
                        current = self._local.get(job_id)
                        self._local[job_id] = (current[0] if current else now + spread * i
                                               / count, _info(row))
                    for job_id in present - wanted.keys():
                        self._local.pop(job_id, None)
                    self._local_built = True
            else:
                pipe = self.redis.pipeline(transaction=False)
                for i, (job_id, row) in enumerate(wanted.items()):
                    # NX: a check that saw a newer status meanwhile keeps what it wrote.
                    pipe.hsetnx(INFO_KEY, job_id, _info(row))
                    pipe.zadd(SCHEDULE_KEY, {job_id: now + spread * i / count}, nx=True)
                    if i % 1000 == 999:
                        pipe.execute()
                stale = [m for m in present if m not in wanted]
                for i in range(0, len(stale), 1000):
                    pipe.zrem(SCHEDULE_KEY, *stale[i:i + 1000])
                    pipe.hdel(INFO_KEY, *stale[i:i + 1000])
                pipe.set(MARKER_KEY, repr(time.time()))
                pipe.execute()
            seconds = time.monotonic() - started
            log.info("check schedule rebuilt from the store: %d jobs in flight in %.3f s",
                     len(wanted), seconds)
            return seconds
        finally:
            if lock is not None:
                try:
                    lock.release()
                except Exception:  # expired meanwhile: harmless, the work is idempotent
                    pass
