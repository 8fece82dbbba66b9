"""The fal.ai queue client: submit, status, result and cancel over one pooled requests.Session.

Exceptions::

    FalError                  anything this client could not do (.message, .status_code)
    ├── FalRetryable          not done now, worth trying later (.retry_after seconds or None):
    │                         408/409/429/5xx answered, connection failed, status timeouts
    ├── FalPermanent          fal refused for good (.error_type): 401 bad key, 403 out of
    │   │                     balance, 422 bad input, other 4xx, a failed result
    │   └── FalNotFound       404 on status/result: unknown or expired request id
    └── FalOutcomeUnknown     submit only: the request may have reached fal (read timeout,
                              connection broken after sending, a gateway's 504); never resubmit

`.message` is short and readable, fit for a job's `error` field; no key, no query string.
`.retryable` is True for FalRetryable only (every error is an `app.external.ExternalError`).

Decisions where fal leaves room:
- submit retries inside the call only when fal cannot have accepted the request: the
  connection was never made (refused, DNS, connect timeout, TLS handshake), or fal answered
  408/409/429/500/501/502/503 (honouring Retry-After). A Retry-After beyond `backoff_cap` is
  not slept: FalRetryable carries it so the caller reschedules. A 504 on submit is a gateway
  that gave up waiting for fal, as blind as our own read timeout: FalOutcomeUnknown.
- A failed request (`runner_error`: COMPLETED + `runner_disconnected`; its result 503 with
  `X-Fal-Error-Type`) is permanent: fal already retried it on new runners before giving up,
  and its stored result will not change. A 429/502/503 result *without* an error type is a
  gateway hiccup and retryable, as is "still in progress" (400) before completion.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from app.backoff import exponential, full_jitter
from app.external import ExternalError
from app.httpheaders import retry_after_seconds
from app.logs import strip_query

log = logging.getLogger(__name__)

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
CANCELLATION_REQUESTED = "CANCELLATION_REQUESTED"
ALREADY_COMPLETED = "ALREADY_COMPLETED"
NOT_FOUND = "NOT_FOUND"

USER_AGENT = "videojobs-fal/0.1"
MAX_REASON_CHARS = 500
_SUBMIT_RETRY_CODES = frozenset({408, 409, 429, 500, 501, 502, 503})
_TRANSIENT_CODES = frozenset({408, 409, 429, 500, 502, 503, 504})
_RESULT_RETRY_CODES = frozenset({408, 409, 429, 502, 503})
# fal's request (infrastructure) error types; any other error type is the model's own.
_REQUEST_ERROR_TYPES = frozenset({
    "request_timeout", "startup_timeout", "internal_error", "request_cancelled",
    "client_disconnected", "client_cancelled", "bad_request",
})
_TIMEOUT_TYPES = frozenset({"request_timeout", "startup_timeout"})
# Raised while preparing the request (nothing sent): a configuration error, not a fal one.
_UNSENDABLE = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
               requests.exceptions.InvalidSchema, requests.exceptions.InvalidHeader,
               requests.exceptions.URLRequired)


# ---- errors ------------------------------------------------------------------------------

class FalError(ExternalError):
    """fal could not do what was asked; `message` is short and readable."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class FalRetryable(FalError):
    """Nothing was done; the same call may work later (after `retry_after` seconds if set)."""

    retryable = True

    def __init__(self, message: str, *, status_code: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class FalPermanent(FalError):
    """fal refused, or the request failed there: repeating the call will not help."""

    def __init__(self, message: str, *, status_code: int | None = None,
                 error_type: str | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.error_type = error_type


class FalNotFound(FalPermanent):
    """fal does not know this request id (never existed, or expired)."""


class FalOutcomeUnknown(FalError):
    """The submit may have reached fal; resubmitting could create (and bill) a second job."""


# ---- answers -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Submission:
    """What fal answered to an accepted submit; persist every field before anything else."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None


@dataclass(frozen=True)
class ProviderStatus:
    """One status answer. There is no FAILED: a failure is COMPLETED with `error` set."""

    status: str
    queue_position: int | None
    logs: list[dict[str, Any]]
    error: str | None
    error_type: str | None

    @property
    def failed(self) -> bool:
        """COMPLETED with an error: the request ended at fal without a usable result."""
        return self.status == COMPLETED and (self.error is not None
                                             or self.error_type is not None)


@dataclass(frozen=True)
class VideoResult:
    """The output video of a completed request (fal's CDN URL; it expires, copy it soon)."""

    url: str
    content_type: str | None
    file_size: int | None


# ---- readable reasons --------------------------------------------------------------------

def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def flatten_detail(detail: Any) -> str:
    """fal's `detail` (a string, or a list of {loc, msg, type}) as one readable line."""
    if detail is None:
        return ""
    if isinstance(detail, str):
        return _clip(detail)
    if isinstance(detail, dict):
        detail = [detail]
    if not isinstance(detail, list):
        return _clip(str(detail))
    parts = []
    for item in detail:
        if not isinstance(item, dict):
            parts.append(str(item))
            continue
        loc = item.get("loc")
        where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
        msg = str(item.get("msg") or item.get("type") or "invalid")
        parts.append(f"{where}: {msg}" if where else msg)
    return _clip("; ".join(parts))


def _detail_type(detail: Any) -> str | None:
    """The `type` of the first typed detail item (model errors carry it there)."""
    items = detail if isinstance(detail, list) else [detail]
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("type"), str):
            return str(item["type"])
    return None


def describe_failure(error_type: str | None, message: str, status_code: int | None = None
                     ) -> str:
    """A readable failure reason, e.g. 'Model error (content_policy_violation): <msg>'."""
    message = _clip(message)
    if error_type in _TIMEOUT_TYPES:
        return "Provider timed out"
    if error_type is None:
        prefix = f"Provider error ({status_code})" if status_code else "Provider error"
        return f"{prefix}: {message}" if message else prefix
    kind = ("Provider error" if error_type in _REQUEST_ERROR_TYPES
            or error_type.startswith("runner_") else "Model error")
    return f"{kind} ({error_type}): {message}" if message else f"{kind} ({error_type})"


def failure_reason(status: ProviderStatus) -> str:
    """Why a COMPLETED-with-error request failed: 'Provider error (runner_disconnected): ...'."""
    return describe_failure(status.error_type, status.error or "")


def error_from_body(body: Any, header_type: str | None = None,
                    status_code: int | None = None) -> str:
    """A readable reason from a failure body: `detail` plus the error type, if any."""
    detail = body.get("detail") if isinstance(body, dict) else body
    error_type = header_type or (body.get("error_type") if isinstance(body, dict) else None)
    if not isinstance(error_type, str) or not error_type:
        error_type = _detail_type(detail)
    return describe_failure(error_type, flatten_detail(detail), status_code)


def parse_video(payload: Any) -> VideoResult | None:
    """The `video` file of a model output, or None if it has no usable URL."""
    video = payload.get("video") if isinstance(payload, dict) else None
    if not isinstance(video, dict):
        return None
    url = video.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    content_type = video.get("content_type")
    size = video.get("file_size")
    return VideoResult(url=url,
                       content_type=content_type if isinstance(content_type, str) else None,
                       file_size=size if isinstance(size, int) and not isinstance(size, bool)
                       else None)


# ---- transport helpers -------------------------------------------------------------------

class _Answer:
    """The parts of an HTTP answer this module reads, from a bare urllib3 response."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Any, content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request certainly never left us, so fal cannot have accepted it."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError
                  | requests.exceptions.ProxyError):
        return True
    if isinstance(exc, requests.ReadTimeout) or not isinstance(exc, requests.ConnectionError):
        return False
    cause: Any = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    # NameResolutionError is a NewConnectionError; a reset or a dropped connection after
    # the request went out arrives as ProtocolError and stays "maybe sent".
    return isinstance(cause, NewConnectionError | ConnectTimeoutError)


def _what_failed(exc: requests.RequestException) -> str:
    # Never str(exc): requests puts the URL (with its query string) into its messages.
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.Timeout):
        return "read timeout"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed" if _never_sent(exc) else "connection broken"
    return type(exc).__name__


def _retry_after(response: requests.Response) -> float | None:
    return retry_after_seconds(response.headers.get("Retry-After"))


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _refusal(response: requests.Response, *, what: str) -> FalPermanent:
    """A FalPermanent with a readable reason for a 4xx answer (401, 403, 422, ...)."""
    code = response.status_code
    body = _json(response)
    detail = flatten_detail(body.get("detail") if isinstance(body, dict) else None)
    if not detail and body is None:
        detail = _clip(response.text[:300])
    if code == 401:
        reason = "Provider rejected the API key (401)"
    elif code == 403:
        reason = "Provider account is out of balance or locked (403)"
    elif code == 404 and what == "submit":
        reason = "Provider does not know this model (404)"
    elif code == 404:
        return FalNotFound(f"Provider does not know this request ({what})", status_code=404)
    elif code == 422:
        reason = f"Invalid input for the provider: {detail}" if detail else "Invalid input"
    else:
        reason = f"Provider refused the {what} ({code})"
    if detail and code != 422:
        reason = f"{reason}: {detail}"
    return FalPermanent(_clip(reason), status_code=code)


def _build_session(pool_maxsize: int) -> requests.Session:
    session = requests.Session()
    # No proxy/netrc lookups from the environment on every call (~10 % of a status check).
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # No cookie state shared between the sweeper's threads (and nothing to track us by).
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    session.headers["User-Agent"] = f"{USER_AGENT} {requests.utils.default_user_agent()}"
    return session


# ---- the client --------------------------------------------------------------------------

class FalClient:
    """Thread-safe fal queue client; one per process, shared by the sweeper's thread pool."""

    def __init__(self, queue_url: str, key: str, *, session: requests.Session | None = None,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0,
                 status_read_timeout: float = 10.0, max_attempts: int = 5,
                 status_attempts: int = 2, backoff_base: float = 0.5,
                 backoff_cap: float = 20.0, pool_maxsize: int = 32,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.queue_url = queue_url.rstrip("/")
        self._auth = {"Authorization": f"Key {key}"}
        self._session = session or _build_session(pool_maxsize)
        self._owns_session = session is None
        # Status checks are the hot path (hundreds a second): they go straight to the
        # session's own urllib3 pool (same pooled keep-alive connections), skipping
        # requests' per-call preparation, which was half of our CPU per check.
        self._pool: Any = None
        if self._owns_session:
            self._pool = self._session.get_adapter("http://").poolmanager  # type: ignore[attr-defined]
            self._pool_headers = {**self._session.headers, **self._auth}
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.status_read_timeout = status_read_timeout
        self.max_attempts = max(1, max_attempts)
        self.status_attempts = max(1, status_attempts)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep

    def __repr__(self) -> str:  # never the key
        return f"FalClient({strip_query(self.queue_url)!r})"

    def close(self) -> None:
        """Close pooled connections (only those of a session this client made)."""
        if self._owns_session:
            self._session.close()

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number `attempt` (1-based)."""
        return full_jitter(exponential(attempt - 1, base=self.backoff_base, cap=self.backoff_cap))

    # -- submit

    def submit(self, model: str, payload: dict[str, Any],
               webhook_url: str | None = None) -> Submission:
        """Queue one request at fal; retried here only while fal cannot have accepted it."""
        url = f"{self.queue_url}/{model.strip('/')}"
        params = {"fal_webhook": webhook_url} if webhook_url else None
        # Serialised once: every retry sends the same bytes.
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {**self._auth, "Content-Type": "application/json",
                   "Accept": "application/json"}
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._session.post(url, params=params, data=body, headers=headers,
                                              timeout=(self.connect_timeout, self.read_timeout),
                                              allow_redirects=False)
            except _UNSENDABLE as exc:
                raise FalPermanent(f"Invalid provider request ({type(exc).__name__})") from None
            except requests.RequestException as exc:
                if not _never_sent(exc):
                    log.warning("fal submit for %s: outcome unknown (%s)", model,
                                _what_failed(exc))
                    raise FalOutcomeUnknown(f"Submission outcome unknown ({_what_failed(exc)})"
                                            ) from None
                failure = FalRetryable(f"Provider unreachable ({_what_failed(exc)})")
            else:
                code = response.status_code
                if code == 200:
                    return self._submission(response, model)
                if code == 504:
                    log.warning("fal submit for %s: gateway timeout, outcome unknown", model)
                    raise FalOutcomeUnknown("Submission outcome unknown (gateway timeout)",
                                            status_code=504)
                if code not in _SUBMIT_RETRY_CODES:
                    refusal = _refusal(response, what="submit")
                    log.warning("fal refused a submit for %s: %s", model, refusal.message)
                    raise refusal
                failure = FalRetryable(f"Provider busy or failing ({code})", status_code=code,
                                       retry_after=_retry_after(response))
            if attempt == self.max_attempts:
                break
            wait = failure.retry_after
            if wait is None:
                wait = self.backoff(attempt)
            elif wait > self.backoff_cap:
                break  # not worth holding a worker: the caller reschedules after retry_after
            log.info("fal submit for %s failed (%s), attempt %d of %d, retrying in %.2fs",
                     model, failure.message, attempt, self.max_attempts, wait)
            self._sleep(wait)
        log.warning("fal submit for %s gave up: %s", model, failure.message)
        raise failure

    @staticmethod
    def _submission(response: requests.Response, model: str) -> Submission:
        body = _json(response)
        fields = ("request_id", "status_url", "response_url", "cancel_url")
        if not isinstance(body, dict) or not all(
                isinstance(body.get(f), str) and body[f] for f in fields):
            log.error("fal submit for %s: 200 without request_id and URLs", model)
            raise FalPermanent("Provider gave an unexpected submit answer", status_code=200)
        position = body.get("queue_position")
        return Submission(request_id=body["request_id"], status_url=body["status_url"],
                          response_url=body["response_url"], cancel_url=body["cancel_url"],
                          queue_position=position if isinstance(position, int)
                          and not isinstance(position, bool) else None)

    # -- idempotent calls

    def _call(self, method: str, url: str, *, what: str, read_timeout: float,
              attempts: int, params: dict[str, str] | None = None) -> requests.Response:
        """One idempotent call, repeated at once only after a connection failure (a stale
        pooled socket, a refused connect); timeouts are not repeated, so the call never
        blocks much longer than connect + read timeout."""
        for attempt in range(1, attempts + 1):
            try:
                return self._session.request(method, url, params=params, headers=self._auth,
                                             timeout=(self.connect_timeout, read_timeout))
            except _UNSENDABLE as exc:
                raise FalPermanent(f"Invalid provider {what} URL ({type(exc).__name__})") from None
            except requests.Timeout as exc:
                reason = _what_failed(exc)
                break
            except requests.RequestException as exc:
                reason = _what_failed(exc)
                if not isinstance(exc, requests.ConnectionError):
                    break
                log.debug("fal %s of %s: %s (attempt %d)", what, strip_query(url), reason, attempt)
        log.info("fal %s of %s failed: %s", what, strip_query(url), reason)
        raise FalRetryable(f"Provider {what} call failed ({reason})")

    def _pooled_get(self, url: str, *, what: str, read_timeout: float,
                    attempts: int) -> _Answer:
        """`_call` for GET on the urllib3 pool directly: same retry and timeout rules."""
        timeout = urllib3.Timeout(connect=self.connect_timeout, read=read_timeout)
        for attempt in range(1, attempts + 1):
            try:
                raw = self._pool.request("GET", url, headers=self._pool_headers,
                                         timeout=timeout, retries=False, redirect=False)
                return _Answer(raw.status, raw.headers, raw.data)
            except urllib3.exceptions.LocationValueError as exc:
                raise FalPermanent(f"Invalid provider {what} URL ({type(exc).__name__})"
                                   ) from None
            except (urllib3.exceptions.ConnectTimeoutError,
                    urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
                reason = ("connect timeout" if isinstance(exc, urllib3.exceptions
                                                          .ConnectTimeoutError)
                          else "read timeout")
                break
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                reason = ("connection failed" if isinstance(exc, NewConnectionError)
                          else "connection broken")
                log.debug("fal %s of %s: %s (attempt %d)", what, strip_query(url), reason, attempt)
        log.info("fal %s of %s failed: %s", what, strip_query(url), reason)
        raise FalRetryable(f"Provider {what} call failed ({reason})")

    # -- status

    def status(self, status_url: str, logs: bool = False) -> ProviderStatus:
        """Where a request is. A failed *call* raises FalRetryable: it is not a failed job."""
        response: Any
        if self._pool is not None and status_url.startswith(("http://", "https://")):
            query = f"logs={'1' if logs else '0'}"
            response = self._pooled_get(
                f"{status_url}{'&' if '?' in status_url else '?'}{query}", what="status",
                read_timeout=self.status_read_timeout, attempts=self.status_attempts)
        else:
            response = self._call("GET", status_url, what="status",
                                  read_timeout=self.status_read_timeout,
                                  attempts=self.status_attempts,
                                  params={"logs": "1" if logs else "0"})
        code = response.status_code
        if code in (200, 202):
            body = _json(response)
            state = body.get("status") if isinstance(body, dict) else None
            if not isinstance(body, dict) or not isinstance(state, str):
                raise FalRetryable("Provider gave an unexpected status answer", status_code=code)
            position = body.get("queue_position")
            lines = body.get("logs")
            error, error_type = body.get("error"), body.get("error_type")
            return ProviderStatus(
                status=state,
                queue_position=position if isinstance(position, int)
                and not isinstance(position, bool) else None,
                logs=[line for line in lines if isinstance(line, dict)]
                if isinstance(lines, list) else [],
                error=str(error) if error is not None else None,
                error_type=str(error_type) if error_type is not None else None)
        if code in _TRANSIENT_CODES or code >= 500:
            raise FalRetryable(f"Provider status check failed ({code})", status_code=code,
                               retry_after=_retry_after(response))
        raise _refusal(response, what="status")

    # -- result

    def result(self, response_url: str) -> VideoResult:
        """The output video of a COMPLETED request; a failed request raises FalPermanent."""
        response = self._call("GET", response_url, what="result", read_timeout=self.read_timeout,
                              attempts=self.status_attempts)
        code = response.status_code
        body = _json(response)
        if code == 200:
            video = parse_video(body)
            if video is None:
                raise FalPermanent("Provider returned no video", status_code=200)
            return video
        header_type = response.headers.get("X-Fal-Error-Type") or None
        body_type = body.get("error_type") if isinstance(body, dict) else None
        detail = body.get("detail") if isinstance(body, dict) else None
        if code in _RESULT_RETRY_CODES and not (header_type or body_type):
            raise FalRetryable(f"Provider result not available ({code})", status_code=code,
                               retry_after=_retry_after(response))
        if code == 400 and isinstance(detail, str) and "in progress" in detail.lower():
            raise FalRetryable("Provider result not ready yet", status_code=code)
        if code == 404:
            raise FalNotFound("Provider no longer has this result", status_code=404)
        if code in (401, 403):
            raise _refusal(response, what="result")
        if body is None:
            body = {"detail": response.text[:300]}
        reason = error_from_body(body, header_type, code)
        error_type = header_type or (body_type if isinstance(body_type, str) else None)
        error_type = error_type or _detail_type(detail)
        log.info("fal result of %s: %s", strip_query(response_url), reason)
        raise FalPermanent(reason, status_code=code, error_type=error_type)

    # -- cancel

    def cancel(self, cancel_url: str) -> str:
        """Ask fal to stop a request (best effort: a running one may still finish and bill)."""
        response = self._call("PUT", cancel_url, what="cancel", read_timeout=self.read_timeout,
                              attempts=self.status_attempts)
        code = response.status_code
        body = _json(response)
        state = body.get("status") if isinstance(body, dict) else None
        if state in (CANCELLATION_REQUESTED, ALREADY_COMPLETED, NOT_FOUND):
            return str(state)
        if code in (200, 202):
            return CANCELLATION_REQUESTED
        if code == 404:
            return NOT_FOUND
        if code in _TRANSIENT_CODES or code >= 500:
            raise FalRetryable(f"Provider cancel failed ({code})", status_code=code,
                               retry_after=_retry_after(response))
        raise _refusal(response, what="cancel")
