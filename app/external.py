"""The one base of every error an external system raises, so callers read the same fields.

Each system keeps its own family (``FalError`` for fal, ``TransferError`` for video hosts
and webhook targets, ``StorageError`` for object storage, ``StoreError`` for SurrealDB,
``WebhookError`` for fal's webhooks) and every one of them is an ``ExternalError``:

- ``message``: short and readable, fit for a job's ``error`` field or a log line (no keys,
  no query strings); ``str(exc)`` is the same text (``ObjectNotFound``, also a
  ``KeyError``, quotes it the way ``KeyError`` does);
- ``retryable``: whether the same call may work later; a class-level default, True for
  the retryable subclasses (``FalRetryable``, ``RetryableTransferError``,
  ``StorageUnavailable``, ``StoreUnavailable``, ``ConflictRetryable``, ``JwksUnavailable``).
"""

from __future__ import annotations

from typing import ClassVar


class ExternalError(Exception):
    """An external system could not do what was asked; `message` says what, readably."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


__all__ = ["ExternalError"]
