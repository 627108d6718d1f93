"""Client-side pacing of Koywe calls inside one process (superseded by :mod:`.rate_budget`).

Koywe (seed ``000_…``) bans IPs that exceed the contracted rate and asks for whitelisting above
5 documents/s. Every ``KoyweHook`` in a process shares one :class:`RateLimiter` per connection; with
``parallel_clients`` processes (the ``koywe_api`` pool's slots) each keeps ``rate / parallel_clients``.

This limiter only sees its own process. The deployment-wide budget is
:class:`koywe_provider.hooks.rate_budget.RateBudget` (``InProcessBudget`` for scripts and tests);
this module stays until ``KoyweHook`` takes its tokens from there, then goes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """A token bucket: at most ``rate`` acquisitions per second, bursts up to ``burst``.

    :param rate: acquisitions per second (> 0).
    :param burst: bucket size; default 1 (strict spacing of ``1 / rate`` seconds).
    :param clock: monotonic clock in seconds; :param sleep: sleeper (both injectable for tests).
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests per second, got {rate}")
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a request may be sent; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                wait = max(self._paused_until - now, 0.0)
                if wait == 0.0:
                    if self._tokens >= 1.0:
                        self._tokens -= 1.0
                        return waited
                    wait = (1.0 - self._tokens) / self.rate
            self._sleep(wait)
            waited += wait

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (after a 429 the whole process slows down, not one call)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            self._tokens = 0.0


_registry: dict[tuple[str, float], RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(conn_id: str, rate: float) -> RateLimiter:
    """The process-wide limiter of ``conn_id`` at ``rate`` requests/s (created on first use)."""
    with _registry_lock:
        key = (conn_id, float(rate))
        if key not in _registry:
            _registry[key] = RateLimiter(rate)
        return _registry[key]
