"""The client-side token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from koywe_provider.hooks.rate_limit import RateLimiter, limiter_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_spacing_respects_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(11):
        limiter.acquire()
    # the first call is free (a full bucket of 1); ten more need 10 / 5 = 2 s
    assert clock.now - start == pytest.approx(2.0)


def test_pause_holds_every_caller():
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.pause(30)
    waited = limiter.acquire()
    assert waited >= 30


def test_rejects_non_positive_rates():
    with pytest.raises(ValueError, match="rate must be > 0"):
        RateLimiter(0)


def test_one_limiter_per_connection_and_rate():
    assert limiter_for("a", 2.5) is limiter_for("a", 2.5)
    assert limiter_for("a", 2.5) is not limiter_for("b", 2.5)
