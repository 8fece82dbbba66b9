"""A local fal-queue-compatible provider for tests, benchmarks and offline runs (see README.md)."""

from app.sandbox.jobs import SCENARIOS, UnknownScenario
from app.sandbox.provider import SandboxProvider
from app.sandbox.signing import public_jwk, sign_webhook, webhook_message

__all__ = [
    "SCENARIOS",
    "SandboxProvider",
    "UnknownScenario",
    "public_jwk",
    "sign_webhook",
    "webhook_message",
]
