"""Identifiers: opaque, unguessable, and (for jobs) roughly time-ordered."""

from __future__ import annotations

import secrets
import time


def new_id() -> str:
    """32 hex chars: 48-bit millisecond clock then 80 random bits, so ids sort by creation."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def is_valid_id(value: str) -> bool:
    """Ids we hand out are 32 lowercase hex chars; anything else cannot exist."""
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)
