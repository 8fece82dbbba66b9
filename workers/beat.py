"""A beat scheduler that is safe to run twice: only the holder of a Redis lock sends.

Every `beat` process ticks; a tick first renews (or takes) the lock `BEAT_LOCK_KEY` in the
broker's Redis, with a `LOCK_TTL_SECONDS` expiry, and sends due tasks only while it holds
it. A standby beat tries every second, so when the active one dies (even kill -9) the
standby schedules within LOCK_TTL_SECONDS + 1 s; an orderly stop releases the lock at
once. While Redis is away nobody holds the lock (nothing could be sent anyway); after
Redis comes back empty, the first beat to tick takes it. A sweep sent twice around a
hand-over is harmless: every sweep step is a compare-and-set.

The schedule itself is in memory (the sweep every second needs no persistence), so two
beats in one directory do not share a `celerybeat-schedule` file either.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import redis
from celery.beat import Scheduler

log = logging.getLogger(__name__)

BEAT_LOCK_KEY = "videojobs:beat:lock"
LOCK_TTL_SECONDS = 10.0
STANDBY_TICK_SECONDS = 1.0

# Renew only our own lock; release only our own lock (never another beat's).
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end")


class LockedScheduler(Scheduler):
    """Celery's in-memory scheduler, sending only while it holds the beat lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leading = False
        self._redis: redis.Redis | None = None

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(
                str(self.app.conf.broker_url), socket_timeout=1.0, socket_connect_timeout=1.0)
        return self._redis

    def hold_lock(self) -> bool:
        """Renew our lock or take a free one; False when another beat has it (or no Redis)."""
        ttl_ms = int(LOCK_TTL_SECONDS * 1000)
        try:
            client = self._client()
            held = bool(client.eval(_RENEW, 1, BEAT_LOCK_KEY, self.owner, ttl_ms)) or bool(
                client.set(BEAT_LOCK_KEY, self.owner, nx=True, px=ttl_ms))
        except redis.RedisError as exc:
            if self.leading:
                log.warning("beat: cannot reach Redis for the beat lock (%s); pausing",
                            type(exc).__name__)
            held = False
        if held and not self.leading:
            log.info("beat: scheduling (holds %s as %s)", BEAT_LOCK_KEY, self.owner)
        elif not held and self.leading:
            log.info("beat: standing by (lost %s)", BEAT_LOCK_KEY)
        elif not held and not self.leading and not getattr(self, "_announced", False):
            log.info("beat: standing by (another beat holds %s)", BEAT_LOCK_KEY)
            self._announced = True
        self.leading = held
        return held

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.hold_lock():
            return STANDBY_TICK_SECONDS
        # Wake up often enough to renew the lock well before it expires.
        return float(min(super().tick(*args, **kwargs), LOCK_TTL_SECONDS / 3))

    def close(self) -> None:
        """Release the lock on an orderly stop so a standby takes over at once."""
        try:
            if self.leading:
                self._client().eval(_RELEASE, 1, BEAT_LOCK_KEY, self.owner)
                self.leading = False
        except redis.RedisError:
            pass  # it expires by itself
        super().close()
