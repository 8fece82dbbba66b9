"""fal webhook checks: ED25519 signatures against fal's JWKS, freshness, and body parsing.

Exceptions::

    WebhookError            a webhook could not be accepted (.message; an ExternalError)
    ├── WebhookRejected     not a genuine, fresh fal webhook: answer 401, change nothing
    └── JwksUnavailable     fal's keys could not be fetched, so nothing can be checked:
                            answer 503 (fal retries delivery for about two hours);
                            .retryable is True

Signed message (UTF-8): "{request_id}\\n{user_id}\\n{timestamp}\\n{sha256_hex(raw_body)}";
`X-Fal-Webhook-Signature` is its hex ED25519 signature by one of the JWKS keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.external import ExternalError
from app.fal import VideoResult, describe_failure, error_from_body, parse_video

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-fal-webhook-request-id"
USER_ID_HEADER = "x-fal-webhook-user-id"
TIMESTAMP_HEADER = "x-fal-webhook-timestamp"
SIGNATURE_HEADER = "x-fal-webhook-signature"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_STATUS_CODE = re.compile(r"status code:?\s*(\d{3})", re.IGNORECASE)
MAX_JWKS_BYTES = 256 * 1024


class HeaderItems(Protocol):
    """Anything with `.items()` of (name, value): a dict, werkzeug's Headers, ..."""

    def items(self) -> Iterable[tuple[str, str]]: ...


class WebhookError(ExternalError):
    """A webhook could not be accepted; `message` says why (safe to log)."""


class WebhookRejected(WebhookError):
    """Missing or malformed headers, a stale timestamp, or no key verifies the signature."""


class JwksUnavailable(WebhookError):
    """No public keys could be obtained, so the signature could not be checked at all."""

    retryable = True


def webhook_message(request_id: str, user_id: str, timestamp: int | str, body: bytes) -> bytes:
    """The exact bytes fal signs: ids, timestamp and the SHA-256 of the raw body, one a line."""
    return f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


def _decode_jwks(document: Any) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS document; other or malformed keys are skipped."""
    keys = []
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" \
                or entry.get("crv") != "Ed25519" or not isinstance(entry.get("x"), str):
            continue
        x = entry["x"]
        try:
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (ValueError, binascii.Error):
            continue
    return keys


class WebhookVerifier:
    """Checks fal webhook signatures; thread-safe, one per process (JWKS cached inside)."""

    def __init__(self, jwks_url: str, *, session: requests.Session | None = None,
                 max_age_seconds: float = 300, cache_seconds: float = 3600,
                 min_refetch_seconds: float = 30, timeout: tuple[float, float] = (3.0, 5.0),
                 clock: Callable[[], float] = time.time) -> None:
        self.jwks_url = jwks_url
        self._session = session or requests.Session()
        self.max_age_seconds = max_age_seconds
        self.cache_seconds = cache_seconds
        # A failed check refetches the keys (a rotation) at most once per this many seconds,
        # so forged webhooks cannot make us hammer the JWKS URL; so does a failed fetch.
        self.min_refetch_seconds = min_refetch_seconds
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None  # last successful fetch
        self._failed_at: float | None = None  # last failed fetch (don't hammer a dead URL)
        self._forced_at: float | None = None  # last refetch forced by a failed check

    def verify(self, headers: HeaderItems, raw_body: bytes) -> str:
        """The request id of a genuine, fresh fal webhook; else WebhookRejected."""
        lowered = {str(name).lower(): str(value) for name, value in headers.items()}
        values = []
        for name in (REQUEST_ID_HEADER, USER_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
            value = lowered.get(name, "").strip()
            if not value:
                raise WebhookRejected(f"missing header {name}")
            values.append(value)
        request_id, user_id, stamp, signature_hex = values
        if not _TIMESTAMP.fullmatch(stamp):
            raise WebhookRejected("timestamp is not an integer")
        if abs(self._clock() - int(stamp)) > self.max_age_seconds:
            raise WebhookRejected("timestamp is too old or in the future")
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise WebhookRejected("signature is not hex") from None
        if len(signature) != 64:
            raise WebhookRejected("signature has the wrong length")
        message = webhook_message(request_id, user_id, stamp, raw_body)
        keys = self._current_keys()
        if self._verifies(keys, signature, message):
            return request_id
        fresh = self._refetch(keys)
        if fresh is not None and self._verifies(fresh, signature, message):
            return request_id
        raise WebhookRejected("signature does not verify")

    @staticmethod
    def _verifies(keys: list[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
        for key in keys:
            try:
                key.verify(signature, message)
                return True
            except InvalidSignature:
                continue
        return False

    def _current_keys(self) -> list[Ed25519PublicKey]:
        """Cached keys, fetched first if there are none or they are older than cache_seconds."""
        with self._lock:
            now = self._clock()
            fresh = self._fetched_at is not None and now - self._fetched_at < self.cache_seconds
            if not (fresh and self._keys) and self._allowed(self._failed_at, now):
                self._fetch(now)
            if not self._keys:
                raise JwksUnavailable("no webhook keys could be fetched")
            return self._keys

    def _refetch(self, tried: list[Ed25519PublicKey]) -> list[Ed25519PublicKey] | None:
        """New keys after a failed check (a rotation), or None when rate-limited or unchanged."""
        with self._lock:
            if self._keys is not tried:
                return self._keys  # another thread refetched meanwhile
            now = self._clock()
            if not (self._allowed(self._forced_at, now) and self._allowed(self._failed_at, now)):
                return None
            self._forced_at = now
            self._fetch(now)
            return None if self._keys is tried else self._keys

    def _allowed(self, last: float | None, now: float) -> bool:
        return last is None or now - last >= self.min_refetch_seconds

    def _fetch(self, now: float) -> None:
        """One JWKS download (under the lock); on failure the old keys stay in use."""
        try:
            response = self._session.get(self.jwks_url, timeout=self.timeout,
                                         headers={"Accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            keys = _decode_jwks(response.json())
        except (requests.RequestException, ValueError) as exc:
            log.warning("fetching fal webhook keys failed: %s", type(exc).__name__)
            self._failed_at = now
            return
        if not keys:
            log.warning("fal JWKS has no Ed25519 keys; keeping %d cached", len(self._keys))
            self._failed_at = now
            return
        self._keys = keys
        self._fetched_at = now
        log.info("fetched %d fal webhook key(s)", len(keys))


@dataclass(frozen=True)
class WebhookEvent:
    """A parsed fal webhook body.

    `ok` means fal reported no failure: status OK, or an output too big or odd for the
    webhook (`payload_error`: `fetch_result` is True and the output must come from the
    response_url; if the request did fail after all, the result call says so).
    """

    request_id: str
    ok: bool
    payload: dict[str, Any] | None
    error: str | None
    payload_error: str | None

    @property
    def fetch_result(self) -> bool:
        """fal could not put the output in the webhook: GET the response_url for it."""
        return self.payload_error is not None

    @property
    def video(self) -> VideoResult | None:
        """The output video carried by an OK webhook, if its payload has one."""
        return parse_video(self.payload) if self.ok and self.payload is not None else None


def parse_webhook(raw_body: bytes, expected_request_id: str | None = None) -> WebhookEvent:
    """Parse a (verified) webhook body; it must name the request the signature covers."""
    try:
        body = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("body is not JSON") from None
    if not isinstance(body, dict):
        raise WebhookRejected("body is not a JSON object")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise WebhookRejected("body has no request_id")
    if expected_request_id is not None and expected_request_id not in (
            request_id, body.get("gateway_request_id")):
        raise WebhookRejected("body is for another request than the signed one")
    payload = body.get("payload")
    error = body.get("error")
    payload_error = body.get("payload_error")
    return WebhookEvent(
        request_id=request_id,
        ok=body.get("status") == "OK" or payload_error is not None,
        payload=payload if isinstance(payload, dict) else None,
        error=str(error) if error is not None else None,
        payload_error=str(payload_error) if payload_error is not None else None)


def event_reason(event: WebhookEvent) -> str:
    """A readable failure reason for an ERROR (or video-less OK) webhook."""
    if event.ok:
        no_video = event.video is None and not event.fetch_result
        return "Provider returned no video" if no_video else ""
    match = _STATUS_CODE.search(event.error or "")
    code = int(match.group(1)) if match else None
    if event.payload is not None and event.payload.get("detail") is not None:
        return error_from_body(event.payload, None, code)
    return describe_failure(None, event.error or "unknown error")
