"""Retry delays, written once: an exponential step, three jitters, and honouring Retry-After.

Callers keep their own bases and caps and pick the jitter that fits: fal's client sleeps a
``full_jitter`` between submit attempts (many workers retrying one fal spread over the
whole window); the pipeline reschedules a failed submit or copy after a ``half_jitter``,
never sooner than the server's Retry-After (``at_least``); the sweeper re-sends a possibly
lost submit message and the store retries a transaction conflict after a ``spread``.
"""

from __future__ import annotations

import random


def exponential(attempt: int, *, base: float, cap: float) -> float:
    """``base * 2**attempt`` seconds, at most ``cap``."""
    return min(cap, base * 2.0 ** attempt)


def full_jitter(delay: float) -> float:
    """Anywhere between 0 and ``delay``: many clients' retries spread over the whole window."""
    return random.uniform(0.0, delay)


def half_jitter(delay: float) -> float:
    """Between ``delay / 2`` and ``delay``: spread out, yet never much sooner than planned."""
    return delay * (0.5 + random.random() / 2)


def spread(delay: float, fraction: float) -> float:
    """Within ``delay * (1 ± fraction)``: around the planned delay."""
    return delay * ((1.0 - fraction) + random.random() * (2 * fraction))


def at_least(delay: float, retry_after: float | None) -> float:
    """``delay``, or the server's Retry-After when that is longer: never retry sooner
    than the server asked."""
    return max(delay, float(retry_after or 0))


__all__ = ["at_least", "exponential", "full_jitter", "half_jitter", "spread"]
