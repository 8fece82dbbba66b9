"""Every external system's errors share one base: `message` and `retryable`, nothing to guess.

Real failures of each system are provoked in its own tests (test_fal, test_transfer,
test_storage, test_store, test_fal_webhooks); this pins the whole tree in one place.
"""

from __future__ import annotations

import pytest

from app.external import ExternalError
from app.fal import FalError, FalNotFound, FalOutcomeUnknown, FalPermanent, FalRetryable
from app.fal_webhooks import JwksUnavailable, WebhookError, WebhookRejected
from app.storage import (
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
)
from app.store.errors import (
    AlreadyExists,
    ConflictRetryable,
    ConstraintViolation,
    StoreError,
    StoreLocked,
    StoreUnavailable,
    Thrown,
    UnencodableParameters,
)
from workers.transfer import (
    BadContentType,
    PermanentTransferError,
    RetryableTransferError,
    TooLarge,
    TooManyRedirects,
    TransferError,
    UnsafeURL,
)

RETRYABLE = {FalRetryable, RetryableTransferError, StorageUnavailable, StoreUnavailable,
             ConflictRetryable, JwksUnavailable}
TREE = {
    FalError: {FalRetryable, FalPermanent, FalNotFound, FalOutcomeUnknown},
    TransferError: {RetryableTransferError, PermanentTransferError, UnsafeURL, TooLarge,
                    BadContentType, TooManyRedirects},
    StorageError: {InvalidKey, ObjectNotFound, ObjectTooLarge, StorageUnavailable},
    StoreError: {StoreUnavailable, UnencodableParameters, StoreLocked, ConflictRetryable,
                 AlreadyExists, ConstraintViolation, Thrown},
    WebhookError: {WebhookRejected, JwksUnavailable},
}
EVERY = sorted({cls for base, subs in TREE.items() for cls in {base, *subs}},
               key=lambda cls: cls.__name__)


@pytest.mark.parametrize("cls", EVERY, ids=lambda cls: cls.__name__)
def test_every_error_is_an_external_error_saying_whether_a_retry_may_help(cls: type) -> None:
    assert issubclass(cls, ExternalError)
    assert cls.retryable is (cls in RETRYABLE)


def test_each_system_has_one_base() -> None:
    for base, subclasses in TREE.items():
        assert base.__bases__ == (ExternalError,)
        assert all(issubclass(cls, base) for cls in subclasses)
        assert not any(issubclass(base, other) for other in TREE if other is not base)


def test_the_existing_relationships_stay() -> None:
    assert issubclass(FalNotFound, FalPermanent)
    assert issubclass(UnsafeURL, PermanentTransferError)
    assert issubclass(InvalidKey, ValueError) and issubclass(ObjectNotFound, KeyError)


@pytest.mark.parametrize("error", [
    FalRetryable("Provider busy or failing (503)", status_code=503, retry_after=2.0),
    RetryableTransferError("Video host answered 503", 503, 7.0),
    TooLarge(1024 * 1024),
    Thrown("NOT_IN_STATE"),
], ids=lambda error: type(error).__name__)
def test_message_is_the_readable_text(error: ExternalError) -> None:
    assert error.message == str(error) == error.args[0]
