"""app.backoff: each delay stays in its documented range, at both ends of the jitter, and
the callers keep their own numbers."""

from __future__ import annotations

import random

import pytest

from app import backoff
from app.fal import FalClient
from workers import pipeline

# The extreme values random.random() can return, and one in between.
ENDS = (0.0, 0.5, 1.0 - 2 ** -53)


@pytest.fixture(params=ENDS, ids=["low", "mid", "high"])
def rolled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> float:
    value = float(request.param)
    monkeypatch.setattr(random, "random", lambda: value)
    monkeypatch.setattr(random, "uniform", lambda low, high: low + (high - low) * value)
    return value


@pytest.mark.parametrize("attempt, base, cap, expected", [
    (0, 1.0, 60.0, 1.0), (1, 1.0, 60.0, 2.0), (5, 1.0, 60.0, 32.0), (6, 1.0, 60.0, 60.0),
    (1, 15.0, 240.0, 30.0), (4, 15.0, 240.0, 240.0), (3, 0.005, 0.5, 0.04), (9, 0.005, 0.5, 0.5),
    (-1, 0.5, 20.0, 0.25), (200, 0.5, 20.0, 20.0),
])
def test_exponential_doubles_up_to_the_cap(attempt: int, base: float, cap: float,
                                           expected: float) -> None:
    assert backoff.exponential(attempt, base=base, cap=cap) == pytest.approx(expected)


def test_full_jitter_spans_zero_to_the_delay(rolled: float) -> None:
    assert 0.0 <= backoff.full_jitter(8.0) <= 8.0
    assert backoff.full_jitter(8.0) == pytest.approx(8.0 * rolled)
    assert backoff.full_jitter(0.0) == 0.0


def test_half_jitter_stays_in_the_upper_half(rolled: float) -> None:
    delay = backoff.half_jitter(8.0)
    assert 4.0 <= delay <= 8.0
    assert delay == pytest.approx(4.0 + 4.0 * rolled)


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_spread_is_around_the_delay(rolled: float, fraction: float) -> None:
    delay = backoff.spread(10.0, fraction)
    assert 10.0 * (1 - fraction) <= delay <= 10.0 * (1 + fraction)
    assert delay == pytest.approx(10.0 * (1 - fraction + 2 * fraction * rolled))


@pytest.mark.parametrize("delay, retry_after, expected", [
    (2.0, None, 2.0), (2.0, 0.0, 2.0), (2.0, 7.0, 7.0), (9.0, 7.0, 9.0),
])
def test_at_least_honours_a_longer_retry_after(delay: float, retry_after: float | None,
                                              expected: float) -> None:
    assert backoff.at_least(delay, retry_after) == expected


def test_sampled_delays_stay_in_range() -> None:
    rng = random.Random(9)
    for _ in range(2000):
        delay = rng.uniform(0.0, 100.0)
        assert 0.0 <= backoff.full_jitter(delay) <= delay
        assert delay / 2 <= backoff.half_jitter(delay) <= delay
        assert 0.8 * delay <= backoff.spread(delay, 0.2) <= 1.2 * delay


# --- the callers keep their numbers ---------------------------------------------------------


def test_fal_submit_backoff_is_full_jitter_from_base_up_to_the_cap() -> None:
    client = FalClient("http://127.0.0.1:9", "k", backoff_base=0.5, backoff_cap=20.0)
    for attempt in range(1, 12):
        ceiling = min(20.0, 0.5 * 2 ** (attempt - 1))
        for _ in range(200):
            assert 0.0 <= client.backoff(attempt) <= ceiling


def test_pipeline_backoff_is_half_jitter_of_two_to_the_attempt() -> None:
    for attempt in range(1, 10):
        for cap in (60.0, 30.0):
            ceiling = min(cap, 2.0 ** attempt)
            for _ in range(200):
                assert ceiling / 2 <= pipeline._backoff(attempt, cap=cap) <= ceiling
