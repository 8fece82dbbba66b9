"""Session versions: a cookie is valid only while it carries its user's current version.

The cookie is signed but lives in the browser, so ending a session means making every
copy of it worthless: logout (and a password change) bump `user.session_version` in the
store, and a cookie carrying an older version is refused. The current version is read
through a short Redis cache (every web process shares it; a logout writes the new value
there at once, and a value is only ever replaced by a larger one, atomically, so a slow
reader cannot put an old version back). Without Redis (the one-process `videojobs up`)
the store is read directly. Any Redis failure falls back to the store.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

CACHE_SECONDS = 30

_SET_IF_GREATER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if current > tonumber(ARGV[1]) then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return tonumber(ARGV[1])
"""


class SessionVersions:
    """Current session version per user: the store is the truth, Redis a shared cache."""

    def __init__(self, store: Any, redis_client: Any | None = None) -> None:
        self.store = store
        self.redis = redis_client
        self._script = redis_client.register_script(_SET_IF_GREATER) if redis_client else None
        self._down_until = 0.0

    @staticmethod
    def _key(user_id: str) -> str:
        return f"videojobs:session-version:{user_id}"

    def _usable(self) -> bool:
        return self._script is not None and time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + 5.0
        log.warning("session version cache failed: %s", type(exc).__name__)

    def _remember(self, user_id: str, version: int) -> None:
        if self._usable():
            assert self._script is not None
            try:
                self._script(keys=[self._key(user_id)], args=[version, CACHE_SECONDS])
            except Exception as exc:  # the store stays the truth
                self._failed(exc)

    def current(self, user_id: str) -> int | None:
        """The user's version, or None if the user is gone."""
        if self._usable():
            try:
                raw = self.redis.get(self._key(user_id))  # type: ignore[union-attr]
                if raw is not None:
                    return int(raw)
            except Exception as exc:
                self._failed(exc)
        version = self.store.users.session_version(user_id)
        if version is not None:
            self._remember(user_id, version)
        return version  # type: ignore[no-any-return]

    def end_all(self, user_id: str) -> int:
        """Logout: every cookie issued to the user so far stops working, everywhere."""
        version = int(self.store.users.bump_session_version(user_id))
        self._remember(user_id, version)
        return version

    def change_password(self, user_id: str, password_hash: str) -> int:
        """A new password ends every session too."""
        version = int(self.store.users.set_password_hash(user_id, password_hash))
        self._remember(user_id, version)
        return version
