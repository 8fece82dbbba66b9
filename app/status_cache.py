"""A short-lived, write-through cache of what a status answer needs, so that most
dashboard polls (every 3 s per open job) do not read the job store.

Writers put the record they just wrote (every job write goes through JobRepository,
which calls its listeners); readers fill it on a miss. Each entry carries the record's
`updated_at` and is only ever replaced by a newer one (an atomic Lua compare in Redis),
so a slow reader can never put back an older state. Entries expire after `ttl` seconds:
that bounds staleness if a writer dies between its database commit and its cache write.
The record in SurrealDB stays the truth; any cache failure falls back to reading it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, cast

from app.jobs import Job

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

FIELDS = ("id", "user_id", "status", "phase", "queue_position", "progress", "result_key",
          "credits", "error", "refunded", "created_at", "completed_at", "updated_at")
_DATES = ("created_at", "completed_at", "updated_at")

_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and decoded['version'] and tonumber(decoded['version']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


def _version(row: Job) -> float:
    stamp = row.get("updated_at")
    return stamp.timestamp() if isinstance(stamp, datetime) else 0.0


def _encode(row: Job) -> str:
    data = {k: row.get(k) for k in FIELDS}
    for k in _DATES:
        value = data[k]
        if isinstance(value, datetime):
            data[k] = value.isoformat()
    data["version"] = _version(row)
    return json.dumps(data, separators=(",", ":"))


def _decode(raw: str | bytes) -> Job:
    data = json.loads(raw)
    for k in _DATES:
        if data.get(k):
            data[k] = datetime.fromisoformat(data[k])
    return cast(Job, {k: v for k, v in data.items() if v is not None})


class StatusCache:
    """Redis-backed when a client is given (shared by every process), else in-process."""

    def __init__(self, redis_client: redis.Redis | None = None, ttl: int = 10) -> None:
        self.redis = redis_client
        self.ttl = ttl
        self._local: dict[str, tuple[float, float, str]] = {}
        self._lock = threading.Lock()
        self._script = redis_client.register_script(_SET_IF_NEWER) if redis_client else None
        self._down_until = 0.0

    def _redis_usable(self) -> bool:
        """After a Redis failure, skip it for a few seconds: a down cache must not add a
        connect timeout to every poll."""
        return self.redis is not None and time.monotonic() >= self._down_until

    def _redis_failed(self, what: str, exc: Exception) -> None:
        self._down_until = time.monotonic() + 5.0
        log.warning("status cache %s failed: %s", what, type(exc).__name__)

    def _key(self, job_id: str) -> str:
        return f"videojobs:status:{job_id}"

    def put(self, row: Job | None) -> None:
        """Remember a job's state unless a newer one is already remembered."""
        if not row or "id" not in row or "updated_at" not in row:
            return
        payload, version = _encode(row), _version(row)
        if self._script is not None:
            if not self._redis_usable():
                return
            try:
                self._script(keys=[self._key(row["id"])], args=[payload, version, self.ttl])
            except Exception as exc:  # never fail a write because the cache is down
                self._redis_failed("write", exc)
            return
        with self._lock:
            current = self._local.get(row["id"])
            if current is None or current[1] <= version:
                self._local[row["id"]] = (time.monotonic() + self.ttl, version, payload)
            if len(self._local) > 50_000:
                now = time.monotonic()
                self._local = {k: v for k, v in self._local.items() if v[0] > now}

    def get(self, job_id: str) -> Job | None:
        if self.redis is not None:
            if not self._redis_usable():
                return None
            try:
                raw = self.redis.get(self._key(job_id))
            except Exception as exc:  # fall back to the store
                self._redis_failed("read", exc)
                return None
            return _decode(raw) if raw else None
        with self._lock:
            hit = self._local.get(job_id)
        if hit is None or hit[0] < time.monotonic():
            return None
        return _decode(hit[2])
