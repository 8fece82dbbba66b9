"""fal's queue operations (submit, status, result, cancel) as transport-neutral replies."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sandbox.control import Scenarios
from sandbox.files import Files
from sandbox.jobs import (
    CANCELLED,
    REQUEST_TIMEOUT,
    SUBMIT_FAULTS,
    Job,
    UnknownScenario,
    new_request_id,
    parse_markers,
    validate_input,
)
from sandbox.observations import Observations, short
from sandbox.progress import JobRunner
from sandbox.state import State

log = logging.getLogger(__name__)

_EXHAUSTED = ("User is locked. Reason: Exhausted balance. Top up your balance at "
              "fal.ai/dashboard/billing.")


@dataclass(slots=True)
class Reply:
    """A transport-neutral answer: status, JSON payload (or None), extra headers."""

    status: int
    payload: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    disconnect: bool = False  # close the connection instead of answering


class QueueApi:
    """Validates and enqueues submits, and answers status, result and cancel like fal."""

    def __init__(self, state: State, observed: Observations, scenarios: Scenarios,
                 files: Files, runner: JobRunner) -> None:
        self._state = state
        self._lock = state.lock
        self._observed = observed
        self._scenarios = scenarios
        self._files = files
        self._runner = runner
        self._queued: deque[float] = deque()  # start times of jobs still IN_QUEUE (positions)
        self._faulted: set[str] = set()  # submit keys already refused once
        self._bases: dict[str, str] = {}

    def forget(self) -> None:
        """Forget queue positions and refused submits (reset())."""
        with self._lock:
            self._queued.clear()
            self._faulted.clear()

    def base_for(self, host: str | None) -> str:
        """URL root for links in answers: public_url, else the Host the client used."""
        url = self._state.url
        if self._state.config.public_url or not host:
            return url
        base = self._bases.get(host)
        if base is None:
            base = self._bases[host] = f"http://{host}" if len(self._bases) < 64 else url
        return base

    def authorized(self, header: str | None) -> bool:
        """`Authorization: Key <key>`, with the configured key when one is set."""
        if not header or not header.startswith("Key "):
            return False
        key = header[4:].strip()
        api_key = self._state.config.api_key
        return bool(key) and (api_key is None or key == api_key)

    # ----------------------------------------------------------------- submit

    def submit_request(self, endpoint: str, raw_body: bytes, *, webhook: str | None = None,
                       query: str = "", host: str | None = None,
                       headers: dict[str, str] | None = None) -> Reply:
        """POST {queue}/{endpoint_id}: validate, apply submit faults, enqueue."""
        entry: dict[str, Any] = {
            "time": time.time(), "endpoint": endpoint, "webhook": webhook,
            "headers": headers or {}, "body_sha256": hashlib.sha256(raw_body).hexdigest(),
            "body": None, "status_code": 422, "accepted": False, "request_id": None,
            "scenarios": [],
        }
        try:
            body = json.loads(raw_body)
        except ValueError:
            body = raw_body.decode("utf-8", "replace")[:200]
        entry["body"] = ({k: short(v) for k, v in body.items()} if isinstance(body, dict)
                         else short(body))
        reply = self._submit(endpoint, raw_body, body, webhook, query, host, entry)
        entry["status_code"] = 200 if reply.disconnect else reply.status
        self._observed.record_submit(entry)
        if entry["accepted"]:
            log.info("sandbox accepted %s for %s (scenarios=%s)", entry["request_id"], endpoint,
                     entry["scenarios"] or "-")
        else:
            log.info("sandbox refused a submit for %s with %s", endpoint, entry["status_code"])
        if entry["accepted"] and "submit_timeout" in entry["scenarios"]:
            time.sleep(self._submit_delay(entry["request_id"]))
        return reply

    def _submit_delay(self, request_id: str) -> float:
        job = self._state.jobs.get(request_id)
        value = job.param("submit_timeout") if job else None
        return float(value) if value else self._state.config.submit_timeout_seconds

    def _submit(self, endpoint: str, raw_body: bytes, body: Any, webhook: str | None,
                query: str, host: str | None, entry: dict[str, Any]) -> Reply:
        if endpoint.count("/") < 1 or "" in endpoint.split("/"):
            return Reply(404, {"detail": f"Application '{endpoint}' not found"})
        seconds, errors = validate_input(endpoint, body)
        if errors:
            return Reply(422, {"detail": errors})
        try:
            scenarios = parse_markers(body["prompt"])
        except UnknownScenario as exc:
            return Reply(422, {"detail": [{"loc": ["body", "prompt"], "type": "value_error",
                                           "msg": f"Unknown sandbox scenario '{exc}'"}]})
        key = hashlib.sha256(f"{endpoint}\n{query}\n".encode() + raw_body).hexdigest()
        fault: str | None = None
        with self._lock:
            retried = key in self._faulted
            if retried:
                self._faulted.discard(key)  # the refused submit came back: accept it now
            elif not scenarios:
                queued = self._scenarios.take()
                if queued is not None:
                    scenarios = {queued[0]: queued[1]}
            if not retried:
                fault = next((name for name in scenarios if name in SUBMIT_FAULTS), None)
                if fault is not None:
                    self._faulted.add(key)
        entry["scenarios"] = sorted(scenarios)
        if "submit_403" in scenarios:
            return Reply(403, {"detail": _EXHAUSTED})
        if not retried and fault is not None:
            if fault == "submit_429":
                return Reply(429, {"detail": "Too many requests"}, [("Retry-After", "1")])
            return Reply(500, {"detail": "Internal Server Error"})
        return self._enqueue(endpoint, body, seconds, webhook, scenarios or None, host, entry)

    def _enqueue(self, endpoint: str, body: dict[str, Any], seconds: float, webhook: str | None,
                 scenarios: dict[str, str | None] | None, host: str | None,
                 entry: dict[str, Any]) -> Reply:
        config, journal = self._state.config, self._state.journal
        owner, app = endpoint.split("/", 2)[:2]
        app_path = f"{owner}/{app}"
        base = self.base_for(host)
        request_id = new_request_id()
        now = time.monotonic()
        started = now + config.queue_seconds
        due = started + config.run_seconds
        with self._lock:
            queued = self._queued
            while queued and queued[0] <= now:
                queued.popleft()
            ahead = len(queued)
            queued.append(started)
            job = Job(request_id, endpoint, app_path, base, seconds,
                      body["image_url"] if config.render else None, webhook, scenarios,
                      now, started, due, ahead)
            if not config.render:
                # No render step: the outcome is known now, status is pure arithmetic.
                job.failure = job.scripted_failure()
                job.done_at = None if job.has("never_finish") else due
            self._state.jobs[request_id] = job
        if journal is not None:
            journal.record(request_id, {
                "endpoint": endpoint, "app_path": app_path, "base": base, "seconds": seconds,
                "image_url": body.get("image_url"), "webhook": webhook,
                "scenarios": scenarios})
        self._runner.accepted(job)
        entry["accepted"] = True
        entry["request_id"] = request_id
        if job.has("submit_disconnect"):
            return Reply(200, disconnect=True)
        url = f"{base}/{app_path}/requests/{request_id}"
        return Reply(200, {
            "status": "IN_QUEUE", "request_id": request_id, "response_url": url,
            "status_url": f"{url}/status", "cancel_url": f"{url}/cancel",
            "logs": None, "metrics": {}, "queue_position": ahead,
        })

    # ----------------------------------------------------------------- status, result, cancel

    def _job(self, app_path: str, request_id: str) -> Job | None:
        job = self._state.jobs.get(request_id)
        return job if job is not None and job.app_path == app_path else None

    def request_status(self, app_path: str, request_id: str, *, logs: bool = False) -> Reply:
        """GET .../requests/{id}/status: computed from timestamps, no per-job timers."""
        config = self._state.config
        job = self._job(app_path, request_id)
        self._observed.status_called(job)
        if job is None or job.has("status_404"):
            return Reply(404, {"detail": "Request not found"})
        if job.has("slow_status"):
            value = job.param("slow_status")
            time.sleep(float(value) if value else config.slow_status_seconds)
        now = time.monotonic()
        phase = job.phase(now)
        response_url = f"{job.base}/{job.app_path}/requests/{request_id}"
        if phase == "IN_QUEUE":
            left = (job.started - now) / config.queue_seconds if config.queue_seconds > 0 else 0.0
            position = min(job.ahead, math.ceil(job.ahead * left))
            return Reply(202, {"status": "IN_QUEUE", "request_id": request_id,
                               "queue_position": position, "response_url": response_url})
        if phase == "IN_PROGRESS":
            return Reply(202, {"status": "IN_PROGRESS", "request_id": request_id,
                               "response_url": response_url,
                               "logs": _logs(job, now) if logs else None})
        done_at = job.done_at or now
        payload: dict[str, Any] = {
            "status": "COMPLETED", "request_id": request_id, "response_url": response_url,
            "logs": _logs(job, done_at) if logs else None,
            "metrics": ({"inference_time": round(done_at - job.started, 3)}
                        if done_at > job.started else {}),
        }
        if job.failure is not None:
            payload["error"] = job.failure.message
            payload["error_type"] = job.failure.error_type
        return Reply(200, payload)

    def request_result(self, app_path: str, request_id: str) -> Reply:
        """GET response_url: 200 output, the failure's own answer, or 400 while unfinished."""
        job = self._job(app_path, request_id)
        self._observed.result_called(job)
        if job is None:
            return Reply(404, {"detail": "Request not found"})
        if job.phase(time.monotonic()) != "COMPLETED":
            return Reply(400, {"detail": "Request is still in progress"})
        if job.failure is not None:
            failure = job.failure
            return Reply(failure.http_status, failure.result_body(), failure.result_headers())
        if job.has("result_500"):
            return Reply(504, REQUEST_TIMEOUT.result_body(), REQUEST_TIMEOUT.result_headers())
        return Reply(200, {"video": self._files.video(job)})

    def cancel_request(self, app_path: str, request_id: str) -> Reply:
        """PUT cancel_url: 202 and the job ends as cancelled, 400 if already done, 404 unknown."""
        job = self._job(app_path, request_id)
        now = time.monotonic()
        with self._lock:
            if job is None:
                reply, outcome = Reply(404, {"status": "NOT_FOUND"}), "not_found"
            elif job.phase(now) == "COMPLETED":
                reply, outcome = Reply(400, {"status": "ALREADY_COMPLETED"}), "already_completed"
            else:
                reply = Reply(202, {"status": "CANCELLATION_REQUESTED"})
                outcome = "ignored" if job.has("ignore_cancel") else "cancelled"
                if outcome == "cancelled":
                    job.failure = CANCELLED
                    job.done_at = now
        self._observed.record_cancel(request_id, reply.status, outcome)
        if outcome == "cancelled":
            if self._state.journal is not None:
                self._state.journal.update(request_id, cancelled=True)
            log.info("sandbox cancelled %s", request_id)
            self._runner.finish(request_id)
        return reply


def _logs(job: Job, until: float) -> list[dict[str, str]]:
    # A sliding window like fal's: the last few one-second progress lines.
    offset = time.time() - time.monotonic()
    elapsed = max(0, int(until - job.started))
    lines = []
    for second in range(max(0, elapsed - 4), elapsed + 1):
        stamp = time.gmtime(job.started + second + offset)
        lines.append({"message": "Generating..." if second == 0 else
                      f"Generating... {second}s elapsed", "level": "INFO",
                      "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", stamp)})
    return lines
