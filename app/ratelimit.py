"""A per-user fixed-window limit shared by video POSTs and uploads.

Redis (INCR + EXPIRE, atomic in a pipeline) when it is reachable, so every web process
counts together; an in-process counter otherwise (the one-process `videojobs up`).
A limiter that cannot reach Redis lets the request through rather than failing it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int


class RateLimiter:
    """`per_minute` hits per subject per window (`window` seconds, one minute by default)."""

    def __init__(self, per_minute: int, redis_client: Any | None = None, *,
                 window: int = 60, name: str = "rl") -> None:
        self.per_minute = per_minute
        self.redis = redis_client
        self.window = window
        self.name = name
        self._local: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def hit(self, subject: str, now: float | None = None) -> Verdict:
        """Count one request for `subject`; say whether it may proceed."""
        if self.per_minute <= 0:
            return Verdict(True, 0)
        now = time.time() if now is None else now
        window = int(now // self.window)
        retry_after = max(1, self.window - int(now % self.window))
        count = self._count(f"videojobs:{self.name}:{subject}:{window}", window)
        return Verdict(count <= self.per_minute, retry_after)

    def _count(self, key: str, window: int) -> int:
        if self.redis is not None:
            try:
                pipe = self.redis.pipeline()
                pipe.incr(key)
                pipe.expire(key, 2 * self.window)
                return int(pipe.execute()[0])
            except Exception as exc:  # Redis down: fail open, log once per call site
                log.warning("rate limiter cannot reach Redis: %s", type(exc).__name__)
                return 0
        with self._lock:
            seen_window, count = self._local.get(key, (window, 0))
            count = count + 1 if seen_window == window else 1
            self._local[key] = (window, count)
            if len(self._local) > 10_000:
                self._local = {k: v for k, v in self._local.items() if v[0] == window}
            return count


class LoginThrottle:
    """Sign-in attempts per account and per client address, counted before the (slow,
    on purpose) password check, so a flood of guesses costs neither CPU nor accounts."""

    WINDOW = 300

    def __init__(self, per_account: int, per_address: int,
                 redis_client: Any | None = None) -> None:
        self.account = RateLimiter(per_account, redis_client, window=self.WINDOW,
                                   name="login-account")
        self.address = RateLimiter(per_address, redis_client, window=self.WINDOW,
                                   name="login-address")

    def hit(self, email: str, address: str | None, now: float | None = None) -> Verdict:
        import hashlib

        by_address = self.address.hit(address or "unknown", now)
        if not by_address.allowed:
            return by_address
        return self.account.hit(hashlib.sha256(email.encode()).hexdigest()[:32], now)
