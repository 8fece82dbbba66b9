"""kombu's Redis transport without two crashes that ended workers ("Unrecoverable error").

Seen with celery 5.7.0, kombu 5.7.0, redis-py 8.1.0. Celery restarts its consumer on the
transport's connection errors and exits on anything else, so each fix below turns a crash
about a broken broker connection into redis' ConnectionError: the worker reconnects.

A Redis restart. When the broker connection drops while tasks are unacknowledged (always,
with `task_acks_late` and work in flight), Celery closes the dead connection; closing its
channel asks kombu to give the unacknowledged messages back, which needs a fresh
connection pool, which kombu builds from the connection's parameters, which closing has
already removed: `_connparams` raised AttributeError ("'NoneType' object has no attribute
'hostname'").

A consuming connection out of step. The connection a channel blocks on with BRPOP can
hand back a reply that is not BRPOP's (a stray PONG or HELLO, "too many values to
unpack"), or fail with ValueError ("I/O operation on closed file") when it was closed
under a read or a reconnect's handshake. That happened when two workers in one process
shared an event loop (workers/celery_app.py now gives each its own), and it would happen
again for any other reason a reply goes astray: the connection is dropped and made anew.

Nothing is lost that matters. The unacknowledged messages stay in Redis' unacked set
(Redis restores them after the visibility timeout); a message BRPOP popped but never
delivered is gone, and the sweeper re-sends whatever a job still needs (submit, finalize,
its status checks), since every job's record, not its message, is the truth.

Used for `redis://` brokers (make_celery sets `broker_transport`).
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


def _is_brpop_reply(reply: Any) -> bool:
    """BRPOP answers nil (timed out) or [queue key, message]."""
    return reply is None or (isinstance(reply, (list, tuple)) and len(reply) == 2
                             and all(isinstance(part, (bytes, str)) for part in reply))


def _out_of_step(connection: Any, what: str, cause: BaseException | None = None
                 ) -> redis.ConnectionError:
    """Drop `connection` (the poller then connects afresh) and say why, as a connection
    error."""
    if connection is not None:
        connection.disconnect()
    return redis.ConnectionError(f"the broker connection is out of step: {what}"
                                 + (f" ({cause})" if cause else ""))


class ConsumerClient(redis.Redis):
    """The client a channel consumes with: a BRPOP reply it cannot be is a connection
    error, not a crash in kombu's `dest, item = reply`."""

    def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        if command_name != "BRPOP":
            return super().parse_response(connection, command_name, **options)
        try:
            reply = super().parse_response(connection, command_name, **options)
        except ValueError as exc:  # the reader's buffer was closed under it
            raise _out_of_step(connection, "BRPOP read failed", exc) from exc
        if not _is_brpop_reply(reply):
            raise _out_of_step(connection, f"unexpected BRPOP reply {reply!r:.80}")
        return reply


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return dict(super()._connparams(asynchronous=asynchronous))

    def _get_client(self) -> Any:
        client = super()._get_client()
        # kombu hands back a key-prefixing client when global_keyprefix is set; keep it.
        return ConsumerClient if client is redis.Redis else client


class MultiChannelPoller(kombu_redis.MultiChannelPoller):
    def _register(self, channel: Any, client: Any, type: Any) -> None:
        try:
            super()._register(channel, client, type)
        except ValueError as exc:  # connecting on a connection closed under it
            raise _out_of_step(getattr(client, "connection", None),
                               f"{type} connect failed", exc) from exc


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = MultiChannelPoller()  # type: ignore[assignment]  # kombu declares None
