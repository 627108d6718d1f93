"""Time of the Koywe sandbox: an injectable monotonic clock and a sliding-window peak counter.

Everything time-dependent in the sandbox (token expiry, the token bucket, the Chile validation schedule,
``max_requests_in_any_second``) reads :class:`SandboxClock`, never ``time.monotonic`` directly, so that:

- unit tests inject their own base clock (``SandboxConfig(clock=fake)``, any callable returning seconds);
- HTTP tests move time forward with ``POST /_sandbox/clock {"advance_seconds": s}`` instead of sleeping;
- ``--manual-clock`` freezes the base clock: time then moves only when ``/_sandbox/clock`` advances it.

``latency_ms`` and ``slow_response_ms`` are not clock rules: they are real delays of an answer (what a
client's timeout sees) and stay ``asyncio.sleep``. ``taxbureau_send_date`` is a wall-clock timestamp field.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class SandboxClock:
    """Monotonic seconds: ``base() + offset`` (``base`` frozen at its first reading when ``manual``).

    ``offset`` only grows (:meth:`advance`), so the clock never goes backwards; ``POST /_sandbox/reset``
    keeps it for the same reason.
    """

    def __init__(self, base: Callable[[], float] = time.monotonic, manual: bool = False) -> None:
        self._base = base
        self.manual = manual
        self._frozen = base() if manual else 0.0
        self.offset = 0.0

    def __call__(self) -> float:
        return (self._frozen if self.manual else self._base()) + self.offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (finite, >= 0); returns the new time. Raises ValueError."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError("advance_seconds must be a non-negative number")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("advance_seconds must be a non-negative number")
        self.offset += float(seconds)
        return self()


class WindowPeak:
    """Exact largest number of events within any sliding window of ``width`` seconds.

    A window is half-open, ``[t, t + width)``: two events exactly ``width`` seconds apart are not in the same
    window. The peak over all windows equals, over every event ``j``, the number of events ``i <= j`` with
    ``t_j < t_i + width`` (a best window starts at an event); :meth:`add` keeps those events in a deque
    (the left pointer pops the ones that fell out), so the memory is bounded by the peak itself. Event times must not decrease (a monotonic
    clock); a smaller time is treated as equal to the last one.
    """

    def __init__(self, width: float = 1.0) -> None:
        self.width = float(width)
        self.recent: deque[float] = deque()
        self.peak = 0

    def add(self, when: float) -> int:
        """Record an event at ``when`` (seconds); returns the peak so far."""
        recent = self.recent
        if recent and when < recent[-1]:
            when = recent[-1]
        while recent and recent[0] + self.width <= when:  # the window [t, t + width) test, in floats
            recent.popleft()
        recent.append(when)
        if len(recent) > self.peak:
            self.peak = len(recent)
        return self.peak
