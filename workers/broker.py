"""kombu's Redis transport without the crash that ended workers on a Redis restart.

When the broker connection drops while tasks are unacknowledged (always, with
`task_acks_late` and work in flight), Celery closes the dead connection; closing its
channel asks kombu to give the unacknowledged messages back, which needs a fresh
connection pool, which kombu builds from the connection's parameters, which closing has
already removed: `_connparams` raises AttributeError ("'NoneType' object has no attribute
'hostname'"). That is not one of the connection errors Celery tolerates there, so the
worker logged "Unrecoverable error" and exited (seen with celery 5.7.0, kombu 5.7.0,
redis-py 8.1.0). Here the same situation raises redis' ConnectionError, which Celery
treats as the broker being away: it reconnects. The messages stay in Redis' unacked set
(Redis restores them after the visibility timeout) and the sweeper re-sends whatever a
job still needs, since every job's record, not its message, is the truth.

Used for `redis://` brokers (make_celery sets `broker_transport`).
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return dict(super()._connparams(asynchronous=asynchronous))


class Transport(kombu_redis.Transport):
    Channel = Channel
