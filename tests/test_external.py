"""Every external system's errors share one base: `message` and `retryable`, nothing to guess.

Real failures of each system are provoked in its own tests (test_fal, test_transfer,
test_storage, test_store, test_fal_webhooks); this pins the whole tree in one place.
"""

from __future__ import annotations

import pytest

from app import fal, fal_webhooks, storage
from app.external import ExternalError
from app.store import errors as store
from workers import transfer

RETRYABLE = {fal.FalRetryable, transfer.RetryableTransferError, storage.StorageUnavailable,
             store.StoreUnavailable, store.ConflictRetryable, fal_webhooks.JwksUnavailable}
TREE: dict[type[ExternalError], set[type[ExternalError]]] = {
    fal.FalError: {fal.FalRetryable, fal.FalPermanent, fal.FalNotFound, fal.FalOutcomeUnknown},
    transfer.TransferError: {
        transfer.RetryableTransferError, transfer.PermanentTransferError, transfer.UnsafeURL,
        transfer.TooLarge, transfer.BadContentType, transfer.TooManyRedirects},
    storage.StorageError: {storage.InvalidKey, storage.ObjectNotFound, storage.ObjectTooLarge,
                           storage.StorageUnavailable},
    store.StoreError: {store.StoreUnavailable, store.UnencodableParameters, store.StoreLocked,
                       store.ConflictRetryable, store.AlreadyExists, store.ConstraintViolation,
                       store.Thrown},
    fal_webhooks.WebhookError: {fal_webhooks.WebhookRejected, fal_webhooks.JwksUnavailable},
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
    assert issubclass(fal.FalNotFound, fal.FalPermanent)
    assert issubclass(transfer.UnsafeURL, transfer.PermanentTransferError)
    assert issubclass(storage.InvalidKey, ValueError)
    assert issubclass(storage.ObjectNotFound, KeyError)


@pytest.mark.parametrize("error", [
    fal.FalRetryable("Provider busy or failing (503)", status_code=503, retry_after=2.0),
    transfer.RetryableTransferError("Video host answered 503", 503, 7.0),
    transfer.TooLarge(1024 * 1024),
    store.Thrown("NOT_IN_STATE"),
], ids=lambda error: type(error).__name__)
def test_message_is_the_readable_text(error: ExternalError) -> None:
    assert error.message == str(error) == error.args[0]
