"""What tests and benchmarks read back: submits, cancels, webhooks, downloads, fetches, counts."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from sandbox.jobs import CANCELLED, Job
from sandbox.state import State

LOG_LIMIT = 100_000  # per observation list; old entries fall off in long benchmarks

Log = deque[dict[str, Any]]


def short(value: Any) -> Any:
    """A long string cut for the logs: a data: URI image would make submit bodies huge."""
    if isinstance(value, str) and len(value) > 300:
        return f"{value[:80]}...<{len(value)} chars>"
    return value


class Observations:
    """The logs and counters, under the shared lock; `clear()` starts them afresh."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._lock = state.lock
        self.clear()

    def clear(self) -> None:
        """Forget every log entry and total."""
        with self._lock:
            self._submits: Log = deque(maxlen=LOG_LIMIT)
            self._cancels: Log = deque(maxlen=LOG_LIMIT)
            self._webhooks: Log = deque(maxlen=LOG_LIMIT)
            self._downloads: Log = deque(maxlen=LOG_LIMIT)
            self._fetches: Log = deque(maxlen=LOG_LIMIT)
            self._totals = {"submits": 0, "accepted": 0, "status_calls": 0, "result_calls": 0,
                            "cancels": 0, "downloads": 0, "webhook_attempts": 0,
                            "connections": 0}

    # ----------------------------------------------------------------- recording

    def count_connection(self) -> None:
        """A TCP connection was accepted (the totals show keep-alive at work)."""
        with self._lock:
            self._totals["connections"] += 1

    def record_submit(self, entry: dict[str, Any]) -> None:
        """One submit answered, accepted or not."""
        with self._lock:
            self._submits.append(entry)
            self._totals["submits"] += 1
            self._totals["accepted"] += entry["accepted"]

    def status_called(self, job: Job | None) -> None:
        """A status call arrived (for `job`, or an unknown id)."""
        with self._lock:
            self._totals["status_calls"] += 1
            if job is not None:
                job.status_calls += 1

    def result_called(self, job: Job | None) -> None:
        """A result call arrived (for `job`, or an unknown id)."""
        with self._lock:
            self._totals["result_calls"] += 1
            if job is not None:
                job.result_calls += 1

    def record_cancel(self, request_id: str, status_code: int, outcome: str) -> None:
        """A cancel call answered."""
        with self._lock:
            self._totals["cancels"] += 1
            self._cancels.append({"time": time.time(), "request_id": request_id,
                                  "status_code": status_code, "outcome": outcome})

    def download_started(self, job: Job, *, head: bool) -> int:
        """Count a download of the job's video (not a HEAD); the attempt number it is."""
        with self._lock:
            if not head:
                job.downloads += 1
                self._totals["downloads"] += 1
            return job.downloads

    def record_download(self, request_id: str, attempt: int, mode: str) -> None:
        """How a download was answered (full, cut, redirect, ...)."""
        with self._lock:
            self._downloads.append({"time": time.time(), "request_id": request_id,
                                    "attempt": attempt, "mode": mode})

    def record_fetch(self, request_id: str, url: str, error: str | None) -> None:
        """One image_url fetch and whether it worked."""
        with self._lock:
            self._fetches.append({"time": time.time(), "request_id": request_id,
                                  "url": short(url), "ok": error is None, "error": error})

    def record_webhook(self, generation: int, entry: dict[str, Any]) -> bool:
        """One webhook attempt; False (not recorded) if reset() forgot its job meanwhile."""
        with self._lock:
            if generation != self._state.generation:
                return False
            self._totals["webhook_attempts"] += 1
            self._webhooks.append(entry)
            return True

    # ----------------------------------------------------------------- reading back

    def submits(self) -> list[dict[str, Any]]:
        """Every submit received: time, endpoint, webhook, headers, body, status, request_id."""
        with self._lock:
            return list(self._submits)

    def cancels(self) -> list[dict[str, Any]]:
        """Every cancel call: time, request_id, status code, outcome."""
        with self._lock:
            return list(self._cancels)

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every webhook attempt: time, request_id, url, copy, attempt, status_code, error."""
        with self._lock:
            return list(self._webhooks)

    def downloads(self) -> list[dict[str, Any]]:
        """Every video download started: time, request_id, attempt, mode."""
        with self._lock:
            return list(self._downloads)

    def image_fetches(self) -> list[dict[str, Any]]:
        """Every image_url fetch: time, request_id, url (shortened), ok, error."""
        with self._lock:
            return list(self._fetches)

    def status_call_count(self, request_id: str) -> int:
        """Status calls received for one request (0 if unknown)."""
        job = self._state.jobs.get(request_id)
        return 0 if job is None else job.status_calls

    def status_call_counts(self) -> dict[str, int]:
        """Status calls per request id, for requests that got any."""
        with self._lock:
            return {rid: job.status_calls for rid, job in self._state.jobs.items()
                    if job.status_calls}

    def request_info(self, request_id: str) -> dict[str, Any] | None:
        """What the sandbox knows about one request, or None."""
        job = self._state.jobs.get(request_id)
        return None if job is None else describe(job, time.monotonic())

    def requests_info(self) -> list[dict[str, Any]]:
        """request_info for every request, oldest first."""
        now = time.monotonic()
        with self._lock:
            jobs = list(self._state.jobs.values())
        return [describe(job, now) for job in jobs]

    def snapshot(self, queued_scenarios: list[str]) -> dict[str, Any]:
        """Everything observed, in one JSON-ready document (GET /_sandbox/observations)."""
        with self._lock:
            jobs = self._state.jobs
            return {
                "submits": list(self._submits), "cancels": list(self._cancels),
                "webhooks": list(self._webhooks), "downloads": list(self._downloads),
                "image_fetches": list(self._fetches),
                "status_calls": {r: j.status_calls for r, j in jobs.items() if j.status_calls},
                "result_calls": {r: j.result_calls for r, j in jobs.items() if j.result_calls},
                "totals": {**self._totals, "jobs": len(jobs)},
                "queued_scenarios": queued_scenarios,
            }

    def wait_for_webhooks(self, count: int, timeout: float = 10.0, *,
                          ok_only: bool = True) -> list[dict[str, Any]]:
        """Block until `count` (2xx, unless ok_only=False) deliveries happened; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            seen = [d for d in self.webhook_deliveries()
                    if not ok_only or (d["status_code"] or 0) // 100 == 2]
            if len(seen) >= count or time.monotonic() >= deadline:
                return seen
            time.sleep(0.02)


def describe(job: Job, now: float) -> dict[str, Any]:
    """One request as GET /_sandbox/requests/<id> shows it."""
    phase = job.phase(now)
    failure = job.failure if phase == "COMPLETED" else None
    return {
        "request_id": job.request_id, "endpoint": job.endpoint, "status": phase,
        "scenarios": dict(job.scenarios or {}), "webhook_url": job.webhook,
        "seconds": job.seconds, "status_calls": job.status_calls,
        "result_calls": job.result_calls, "downloads": job.downloads,
        "cancelled": job.failure is CANCELLED,
        "error": failure.message if failure else None,
        "error_type": failure.error_type if failure else None,
        "video_size": job.video_size,
    }
