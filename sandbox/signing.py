"""ED25519 webhook signatures and the JWKS that publishes their keys, the way fal does it."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def webhook_message(request_id: str, user_id: str, timestamp: int | str, body: bytes) -> bytes:
    """The exact bytes fal signs: ids, timestamp and the SHA-256 of the raw body, one a line."""
    return f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


def sign_webhook(private_key: Ed25519PrivateKey, request_id: str, user_id: str,
                 timestamp: int | str, body: bytes) -> str:
    """Hex ED25519 signature for the X-Fal-Webhook-Signature header."""
    return private_key.sign(webhook_message(request_id, user_id, timestamp, body)).hex()


def public_jwk(private_key: Ed25519PrivateKey) -> dict[str, str]:
    """The OKP JWK of a key's public half (base64url, no padding), as in fal's JWKS."""
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519",
            "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
