"""ED25519 webhook signatures and the JWKS that publishes their keys, the way fal does it."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# The signed message is the product's definition (the verifier's), so both sides agree.
from app.fal_webhooks import webhook_message


def sign_webhook(private_key: Ed25519PrivateKey, request_id: str, user_id: str,
                 timestamp: int | str, body: bytes) -> str:
    """Hex ED25519 signature for the X-Fal-Webhook-Signature header."""
    return private_key.sign(webhook_message(request_id, user_id, timestamp, body)).hex()


def public_jwk(private_key: Ed25519PrivateKey) -> dict[str, str]:
    """The OKP JWK of a key's public half (base64url, no padding), as in fal's JWKS."""
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519",
            "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
