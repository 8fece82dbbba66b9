"""A local fal-queue-compatible provider for tests, benchmarks and offline runs (see README.md)."""

from sandbox.config import SandboxConfig
from sandbox.jobs import SCENARIOS, UnknownScenario
from sandbox.provider import SandboxProvider
from sandbox.signing import public_jwk, sign_webhook

__all__ = [
    "SCENARIOS",
    "SandboxConfig",
    "SandboxProvider",
    "UnknownScenario",
    "public_jwk",
    "sign_webhook",
]
