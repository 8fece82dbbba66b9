"""The broker transport (workers/broker.py) survives a consuming connection that is out of
step: a consumer, and a real Celery worker, reconnect and still get what is sent next.

A relay between the consumer and the test Redis slips a reply nobody asked for into the
connection the consumer blocks on with BRPOP, as a connection shared by two threads did."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any
from urllib.parse import urlsplit

import pytest
from celery import Celery
from celery.bootsteps import RUN
from celery.contrib.testing.worker import TestWorkController, start_worker
from kombu import Connection, Consumer, Exchange, Producer, Queue

from app.config import Settings
from workers.celery_app import make_celery

STRAY_REPLY = b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"  # three items, BRPOP gives two
TEST_QUEUE = Queue("broker-test", Exchange("broker-test", "direct"), "broker-test")


class Relay:
    """A TCP relay to Redis that knows which client connections sent BRPOP and can send
    one of them bytes of its own, between two of Redis' replies."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        self.consuming: list[tuple[socket.socket, socket.socket, threading.Lock]] = []
        self.closed: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            to_client = threading.Lock()
            threading.Thread(target=self._relay, daemon=True,
                             args=(client, upstream, client, upstream, to_client)).start()
            threading.Thread(target=self._relay, daemon=True,
                             args=(upstream, client, client, upstream, to_client)).start()

    def _relay(self, src: socket.socket, dst: socket.socket, client: socket.socket,
               upstream: socket.socket, to_client: threading.Lock) -> None:
        try:
            while data := src.recv(65536):
                if src is client and b"BRPOP" in data:
                    with self._lock:
                        if not any(c is client for c, _, _ in self.consuming):
                            self.consuming.append((client, upstream, to_client))
                with to_client if dst is client else nullcontext():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self.closed.add(client)

    def wait_consuming(self, after: int = 0, timeout: float = 10,
                       check: Callable[[], None] = lambda: None
                       ) -> tuple[socket.socket, socket.socket]:
        """The newest connection blocked in BRPOP, once there are more than `after`
        (`check` raises to stop waiting for a consumer that is gone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check()
            with self._lock:
                live = [c for c in self.consuming if c[0] not in self.closed]
                if len(self.consuming) > after and live:
                    return live[-1][0], live[-1][1]
            time.sleep(0.02)
        raise AssertionError("no consuming connection through the relay")

    def send_stray_reply(self) -> tuple[socket.socket, socket.socket]:
        client, upstream = self.wait_consuming()
        with self._lock:
            lock = next(lk for c, _, lk in self.consuming if c is client)
        with lock:
            client.sendall(STRAY_REPLY)
        return client, upstream

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for client, upstream, _ in self.consuming:
                for sock in (client, upstream):
                    sock.close()


@pytest.fixture
def relay(redis_url: str, redis_client: Any) -> Iterator[Relay]:
    parts = urlsplit(redis_url)
    r = Relay((parts.hostname or "127.0.0.1", int(parts.port or 6379)))
    yield r
    r.close()


def wait_gone(redis_client: Any, upstream: socket.socket, timeout: float = 10) -> None:
    """Redis has let go of the client behind `upstream`, so its old BRPOP pops nothing."""
    host, port = upstream.getsockname()[:2]
    addr = f"{host}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(c.get("addr") == addr for c in redis_client.client_list()):
            return
        time.sleep(0.02)
    raise AssertionError(f"Redis still serves the dropped client {addr}")


def publish(redis_url: str, body: Any, routing_key: str = "broker-test",
            exchange: Any = TEST_QUEUE.exchange, declare: Any = (TEST_QUEUE,)) -> None:
    with Connection(redis_url) as conn:
        Producer(conn).publish(body, exchange=exchange, routing_key=routing_key,
                               declare=list(declare), serializer="json")


class DrainingConsumer:
    """A kombu consumer on our transport, drained in its own thread the way Celery's
    consumer treats errors: a connection error means reconnect (here: drain again, which
    connects afresh), anything else ends it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received: queue.Queue[Any] = queue.Queue()
        self.connection_errors: list[BaseException] = []
        self.fatal: BaseException | None = None
        self._calls: queue.Queue[tuple[Callable[[Any], None], threading.Event]] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "consumer did not start"

    def call(self, fn: Callable[[Any], None]) -> None:
        """Run `fn(channel)` on the consumer's own thread, between two drains."""
        done = threading.Event()
        self._calls.put((fn, done))
        assert done.wait(10), "the consumer did not run the call"

    def _run(self) -> None:
        def on_message(body: Any, message: Any) -> None:
            message.ack()
            self.received.put(body)

        with Connection(self.url, transport="workers.broker:Transport") as conn:
            channel = conn.channel()
            with Consumer(channel, [TEST_QUEUE], callbacks=[on_message]):
                self._ready.set()
                while not self._stop.is_set():
                    while not self._calls.empty():
                        fn, done = self._calls.get()
                        fn(channel)
                        done.set()
                    try:
                        conn.drain_events(timeout=0.2)
                    except TimeoutError:
                        pass
                    except conn.connection_errors as exc:
                        self.connection_errors.append(exc)
                    except Exception as exc:  # what Celery calls an unrecoverable error
                        self.fatal = exc
                        return

    def check_alive(self) -> None:
        assert self.fatal is None, f"the consumer died: {self.fatal!r}"

    def next_message(self, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                return self.received.get(timeout=0.1)
            except queue.Empty:
                pass
        raise AssertionError(f"no message; connection errors: {self.connection_errors}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def consumer(relay: Relay) -> Iterator[DrainingConsumer]:
    c = DrainingConsumer(relay.url)
    yield c
    c.stop()


def test_a_stray_reply_on_the_brpop_connection_makes_the_consumer_reconnect(
        relay: Relay, consumer: DrainingConsumer, redis_url: str, redis_client: Any) -> None:
    publish(redis_url, "before")
    assert consumer.next_message() == "before"
    seen = len(relay.consuming)
    _, upstream = relay.send_stray_reply()
    wait_gone(redis_client, upstream)  # the consumer dropped that connection ...
    relay.wait_consuming(after=seen, check=consumer.check_alive)  # ... and blocks anew
    publish(redis_url, "after")
    assert consumer.next_message() == "after"
    assert consumer.fatal is None
    assert any("out of step" in str(e) for e in consumer.connection_errors)


def test_a_reconnect_on_a_closed_buffer_is_a_connection_error(
        consumer: DrainingConsumer, redis_url: str) -> None:
    """connect() failing with "I/O operation on closed file" (redis-py's reader closed
    under it) when the poller reconnects the BRPOP connection, e.g. after kombu's BRPOP
    watchdog dropped it."""

    def close_under_the_next_connect(channel: Any) -> None:
        connection = channel.client.connection
        real_connect = connection.connect

        def connect() -> None:
            connection.connect = real_connect
            raise ValueError("I/O operation on closed file.")

        connection.connect = connect
        connection.disconnect()

    publish(redis_url, "before")
    assert consumer.next_message() == "before"
    consumer.call(close_under_the_next_connect)
    publish(redis_url, "after")
    assert consumer.next_message() == "after"
    assert any("out of step" in str(e) for e in consumer.connection_errors)


def test_a_celery_worker_reconnects_after_a_stray_reply(relay: Relay, redis_url: str,
                                                        redis_client: Any) -> None:
    app = Celery("broker-test", broker=relay.url, set_as_current=False)
    app.conf.update(broker_transport="workers.broker:Transport", task_acks_late=True,
                    worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
                    broker_connection_retry_on_startup=True,
                    broker_connection_max_retries=None)
    ran: queue.Queue[str] = queue.Queue()

    @app.task(name="broker_test.note")
    def note(word: str) -> None:
        ran.put(word)

    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False,
                      loglevel="WARNING", queues=["celery"]) as worker:
        note.delay("before")
        assert ran.get(timeout=10) == "before"
        seen = len(relay.consuming)
        _, upstream = relay.send_stray_reply()
        wait_gone(redis_client, upstream)
        relay.wait_consuming(after=seen)
        note.delay("after")
        assert ran.get(timeout=15) == "after"
        assert worker.blueprint.state == RUN  # the same worker, not an exit


def test_two_workers_in_one_process_run_their_own_event_loops(redis_url: str) -> None:
    app = make_celery(Settings(secret_key="k", surrealdb_url="mem://", redis_url=redis_url))
    first, second = (TestWorkController(app=app, pool="threads", concurrency=1,
                                        without_heartbeat=True, without_mingle=True,
                                        without_gossip=True, loglevel="WARNING",
                                        logfile=None) for _ in range(2))
    try:
        assert first.hub is not None and second.hub is not None
        assert first.hub is not second.hub
    finally:
        first.hub.close()
        second.hub.close()
