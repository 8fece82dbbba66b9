"""Outbound webhook secrets: Standard Webhooks form, stored sealed under SECRET_KEY.

A secret is `whsec_` + base64 of 32 random bytes (the form Standard Webhooks libraries
take). The store keeps it only sealed with AES-256-GCM under a key derived from
SECRET_KEY with HKDF-SHA256 (its own `info`, so the key is used for nothing else), and the
owner's user id as associated data: a database dump alone cannot forge a signature, and a
sealed secret copied onto another user's row does not open. Changing SECRET_KEY makes
existing secrets unreadable: deliveries then fail until the user sets or rotates one.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "whsec_"
SECRET_BYTES = 32
_INFO = b"videojobs outbound webhook secrets v1"
_VERSION = "v1:"


class SecretUnreadable(Exception):
    """A sealed secret did not open (another SECRET_KEY, or tampered with)."""


def new_secret() -> str:
    """A fresh signing secret in Standard Webhooks form."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    """Seals and opens webhook secrets with a key derived from SECRET_KEY."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("SECRET_KEY is needed to store webhook secrets")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=_INFO).derive(secret_key.encode())
        self._aead = AESGCM(key)

    def seal(self, secret: str, user_id: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), user_id.encode())
        return _VERSION + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, user_id: str) -> str:
        if not sealed.startswith(_VERSION):
            raise SecretUnreadable("unknown sealed-secret format")
        try:
            raw = base64.b64decode(sealed[len(_VERSION):], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], user_id.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise SecretUnreadable("the webhook secret cannot be read with this SECRET_KEY"
                                   ) from None
