"""Sandbox job records, model-input validation, failure kinds and fault-scenario markers."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

# name -> what the sandbox does; also served at GET /_sandbox/scenarios.
SCENARIOS: dict[str, str] = {
    "submit_429": "first submit of this job (same endpoint, query and body) answers 429 with "
    "Retry-After: 1 and creates nothing; the next identical submit is accepted",
    "submit_500": "same as submit_429 with a 500 answer",
    "submit_403": "every submit answers 403 (exhausted balance) and creates nothing",
    "submit_timeout": "the job is created, then the answer is delayed by =<seconds> "
    "(default submit_timeout_seconds), longer than a client's read timeout",
    "submit_disconnect": "the job is created, then the connection is closed with no answer",
    "model_error": "COMPLETED with error/error_type content_policy_violation; result answers 422",
    "runner_error": "COMPLETED with error 'Runner disconnected'; result answers 503 with "
    "X-Fal-Error-Type: runner_disconnected",
    "slow_status": "every status call sleeps =<seconds> (default slow_status_seconds) first",
    "status_404": "every status call answers 404 as if the request had expired",
    "never_finish": "stays IN_PROGRESS until cancelled",
    "ignore_cancel": "cancel answers 202 but the job carries on and completes normally",
    "result_500": "result answers 504 {'detail': 'Request timed out', 'error_type': "
    "'request_timeout'} with X-Fal-Error-Type; status stays a clean COMPLETED",
    "cut_download": "first video download sends the full Content-Length, half the bytes, then "
    "closes the connection; later downloads are complete",
    "wrong_content_type": "video URL serves an HTML page as text/html",
    "huge_file": "video URL streams huge_file_bytes (default 640 MiB) with that Content-Length; "
    "the result's file_size says the same",
    "huge_file_chunked": "video URL streams chunked, no Content-Length, up to "
    "huge_chunked_bytes; the result's file_size is the small real size",
    "private_redirect": "video URL answers 302 to =<url> (default private_redirect_url, "
    "http://169.254.169.254/latest/meta-data)",
    "redirect": "video URL answers 302 to another sandbox URL that serves the file",
    "duplicate_webhooks": "the completion webhook is delivered twice",
    "webhook_payload_error": "the webhook carries payload null and payload_error; the result "
    "itself is fine",
    "no_webhook": "no webhook is ever delivered for this job",
}
SUBMIT_FAULTS = frozenset({"submit_429", "submit_500"})

_MARKER = re.compile(r"\[sandbox:([^\]]*)\]")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s?$")
MAX_SECONDS = 30.0

# Known models check their durations the way fal's pydantic schemas do (exact strings).
MODEL_DURATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fal-ai/kling-video/", ("5", "10")),
    ("fal-ai/minimax/hailuo-02/", ("6", "10")),
    ("fal-ai/veo3", ("4s", "6s", "8s")),
)


class UnknownScenario(ValueError):
    """A `[sandbox:...]` marker or queued scenario names nothing we know: fail loudly."""


@dataclass(frozen=True, slots=True)
class Failure:
    """How a failed job reports itself: status error fields, result status and body shape."""

    error_type: str
    message: str
    http_status: int
    loc: tuple[str, ...] | None  # model errors (detail list) have a loc; request errors don't

    def result_body(self) -> dict[str, Any]:
        """The response_url body: a typed detail list for model errors, flat for request errors."""
        if self.loc is None:
            return {"detail": self.message, "error_type": self.error_type}
        return {"detail": [{
            "loc": list(self.loc), "msg": self.message, "type": self.error_type,
            "url": f"https://docs.fal.ai/errors#{self.error_type}",
        }]}

    def result_headers(self) -> list[tuple[str, str]]:
        """Request errors carry X-Fal-Error-Type; model errors say they are not retryable."""
        if self.loc is None:
            return [("X-Fal-Error-Type", self.error_type)]
        return [("X-Fal-Retryable", "false")]


CONTENT_POLICY = Failure("content_policy_violation",
                         "The content was flagged by a content checker.", 422, ("body",))
FETCH_FAILED = Failure("file_download_error", "Could not fetch image_url", 422,
                       ("body", "image_url"))
DECODE_FAILED = Failure("image_load_error", "Could not fetch image_url: not a decodable image",
                        422, ("body", "image_url"))
RUNNER_DISCONNECTED = Failure("runner_disconnected", "Runner disconnected", 503, None)
CANCELLED = Failure("request_cancelled", "Cancelled by user", 499, None)
REQUEST_TIMEOUT = Failure("request_timeout", "Request timed out", 504, None)


class Job:
    """One accepted request; compact (slots) because benchmarks keep thousands in memory."""

    __slots__ = (
        "request_id", "endpoint", "app_path", "base", "seconds", "image_url", "webhook",
        "scenarios", "submitted", "started", "due", "ahead", "done_at", "finished",
        "failure", "video_path", "video_size", "status_calls", "result_calls", "downloads",
    )

    def __init__(self, request_id: str, endpoint: str, app_path: str, base: str, seconds: float,
                 image_url: str | None, webhook: str | None,
                 scenarios: dict[str, str | None] | None, submitted: float, started: float,
                 due: float, ahead: int) -> None:
        self.request_id = request_id
        self.endpoint = endpoint
        self.app_path = app_path
        self.base = base
        self.seconds = seconds
        self.image_url = image_url  # kept only until the render worker fetched it
        self.webhook = webhook
        self.scenarios = scenarios
        self.submitted = submitted
        self.started = started  # monotonic time the job leaves IN_QUEUE
        self.due = due  # earliest monotonic time it may complete
        self.ahead = ahead  # jobs queued ahead of it at submit time
        self.done_at: float | None = None  # set once the outcome is known
        self.finished = False  # completion side effects (webhooks) done
        self.failure: Failure | None = None
        self.video_path: str | None = None
        self.video_size = 0
        self.status_calls = 0
        self.result_calls = 0
        self.downloads = 0

    def has(self, scenario: str) -> bool:
        """Whether this job runs the named fault scenario."""
        return self.scenarios is not None and scenario in self.scenarios

    def param(self, scenario: str) -> str | None:
        """The `=value` given with a scenario marker, if any."""
        return None if self.scenarios is None else self.scenarios.get(scenario)

    def phase(self, now: float) -> str:
        """IN_QUEUE, IN_PROGRESS or COMPLETED at monotonic time `now`: arithmetic, no timers."""
        done_at = self.done_at
        if done_at is not None and now >= done_at:
            return "COMPLETED"
        return "IN_QUEUE" if now < self.started else "IN_PROGRESS"

    def scripted_failure(self) -> Failure | None:
        """The model failure this job's scenarios call for, if any."""
        if self.has("model_error"):
            return CONTENT_POLICY
        if self.has("runner_error"):
            return RUNNER_DISCONNECTED
        return None


def new_request_id() -> str:
    """A UUIDv7-shaped id (time-ordered like fal's `019e161b-...`), cheap to make."""
    ms = int(time.time() * 1000)
    rand = secrets.token_hex(10)
    return (f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{rand[:3]}-"
            f"{(int(rand[3], 16) & 0x3) | 0x8:x}{rand[4:7]}-{rand[7:19]}")


def parse_markers(prompt: str) -> dict[str, str | None]:
    """Scenarios named in `[sandbox:a,b=value]` markers of a prompt."""
    found: dict[str, str | None] = {}
    for match in _MARKER.finditer(prompt):
        for item in match.group(1).split(","):
            name, sep, value = item.strip().partition("=")
            name = name.strip()
            if not name:
                continue
            if name not in SCENARIOS:
                raise UnknownScenario(name)
            found[name] = value.strip() if sep else None
    return found


def _error(loc: list[str], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _check_duration(endpoint: str, value: Any) -> tuple[float | None, dict[str, Any] | None]:
    loc = ["body", "duration"]
    for prefix, allowed in MODEL_DURATIONS:
        if endpoint.startswith(prefix):
            if value not in allowed or not isinstance(value, str):
                choices = " or ".join(f"'{a}'" for a in allowed)
                return None, _error(loc, f"Input should be {choices}", "literal_error")
            return float(value.rstrip("s")), None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None, _error(loc, "Input should be a valid string", "string_type")
    match = _DURATION.match(str(value).strip())
    seconds = float(match.group(1)) if match else 0.0
    if not 1.0 <= seconds <= MAX_SECONDS:
        return None, _error(loc, f"Duration must be 1 to {MAX_SECONDS:g} seconds", "value_error")
    return seconds, None


def validate_input(endpoint: str, body: Any) -> tuple[float, list[dict[str, Any]]]:
    """Check a model input like fal's pydantic schemas: (seconds, errors); errors -> 422."""
    if not isinstance(body, dict):
        return 0.0, [_error(["body"], "Input should be a valid dictionary", "dict_type")]
    errors: list[dict[str, Any]] = []
    for name in ("prompt", "image_url"):
        if name not in body:
            errors.append(_error(["body", name], "Field required", "missing"))
        elif not isinstance(body[name], str):
            errors.append(_error(["body", name], "Input should be a valid string", "string_type"))
    url = body.get("image_url")
    if isinstance(url, str) and not url.startswith(("http://", "https://", "data:")):
        errors.append(_error(["body", "image_url"],
                             "URL must start with http://, https:// or data:", "value_error"))
    if "negative_prompt" in body and not isinstance(body["negative_prompt"], str):
        errors.append(_error(["body", "negative_prompt"], "Input should be a valid string",
                             "string_type"))
    seconds = 0.0
    if "duration" not in body:
        errors.append(_error(["body", "duration"], "Field required", "missing"))
    else:
        parsed, problem = _check_duration(endpoint, body["duration"])
        if problem is not None:
            errors.append(problem)
        else:
            seconds = parsed or 0.0
    return seconds, errors
