"""The store's exception tree, so callers never parse SurrealDB messages themselves.

    StoreError                  (.message, .retryable: an app.external.ExternalError)
    ├── StoreUnavailable        the database cannot be reached (HTTP 503, readiness false)
    ├── UnencodableParameters   a parameter cannot be sent at all (a caller bug, not an outage)
    ├── StoreLocked             an embedded store is already open in another process
    ├── ConflictRetryable       a transaction conflict that survived our retries
    ├── AlreadyExists           a record id or UNIQUE index already taken
    ├── ConstraintViolation     an ASSERT failed (e.g. a balance would go negative)
    └── Thrown                  a THROW from our own SurrealQL (its message is the reason)
"""

from __future__ import annotations

from app.external import ExternalError


class StoreError(ExternalError):
    """Any failure from the job store."""


class StoreUnavailable(StoreError):
    """The store could not be reached or answered with a transport error."""

    retryable = True


class UnencodableParameters(StoreError):
    """A query parameter cannot be encoded (e.g. a lone surrogate): the store is fine."""


class StoreLocked(StoreError):
    """A second process tried to open an embedded store that another process holds."""


class ConflictRetryable(StoreError):
    """A write conflict that is still there after the retries ran out."""

    retryable = True


class AlreadyExists(StoreError):
    """A record id or a UNIQUE index value is already taken."""


class ConstraintViolation(StoreError):
    """A field ASSERT refused the write."""


class Thrown(StoreError):
    """Our own `THROW "<REASON>"`; `reason` is the thrown string."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
