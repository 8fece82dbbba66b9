"""One thread runs the timed steps (renders, completions, webhook retries): no timer per job."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Scheduler:
    """A heap of (monotonic time, action) run in time order by one daemon thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """Whether stop() was called: retries are not worth scheduling any more."""
        return self._stopping

    def start(self) -> None:
        """Run actions from a daemon thread until stop()."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sandbox-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Drop pending actions and let the thread end (join() waits for it)."""
        with self._wake:
            self._stopping = True
            self._heap.clear()
            self._wake.notify_all()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end after stop()."""
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run `action` at monotonic time `when` (now if it has passed)."""
        with self._wake:
            heapq.heappush(self._heap, (when, next(self._seq), action))
            if self._heap[0][2] is action:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping:
                    if not self._heap:
                        self._wake.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._wake.wait(delay)
                if self._stopping:
                    return
                action = heapq.heappop(self._heap)[2]
            try:
                action()
            except RuntimeError:  # a pool shut down under us while stopping
                log.debug("sandbox scheduler step skipped", exc_info=True)
            except Exception:
                log.exception("sandbox scheduler step failed")
