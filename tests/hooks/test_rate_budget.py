"""The deployment-wide rate budget: real SQLite / PostgreSQL / Redis stores shared by OS processes,
the in-process budget on a fake clock, and the 429 wait policy."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

from koywe_provider.hooks.rate_budget import (
    DEFAULT_RATE_LIMIT_MAX_WAIT_SECONDS,
    SPACING_FRACTION,
    InProcessBudget,
    RateBudget,
    RateBudgetTimeout,
    budget_for,
    budget_key,
    rate_limit_wait_seconds,
    window_for,
)

R = 5
REDIS_URL = os.environ.get("KOYWE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_or_skip() -> str:
    """The test Redis URL; skip (or fail under CI=true, like ``postgres_or_skip``) when it does not answer."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but Redis at {REDIS_URL} is unreachable: {err}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable ({type(err).__name__}); set CI=true to fail")
    return REDIS_URL


def max_in_any_window(stamps: list[float], width: float = 1.0) -> int:
    """The largest number of ``stamps`` inside any half-open window ``[t, t + width)`` (exact)."""
    ordered = sorted(stamps)
    best = first = 0
    for last, stamp in enumerate(ordered):
        while ordered[first] <= stamp - width:
            first += 1
        best = max(best, last - first + 1)
    return best


def unique_key() -> str:
    return budget_key(f"https://koywe.test/{uuid.uuid4().hex}/V1", "api-user")


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def store_url(request, tmp_path) -> Iterator[str]:
    """A URL of each shared store kind, fresh for the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    elif request.param == "postgresql":
        yield request.getfixturevalue("pg_database")
    else:
        yield redis_or_skip()  # every test clears the keys of its budgets


# ------------------------------------------------------------------ processes sharing one store
class Child:
    """A separate Python process running ``code`` (with ``ARGS`` bound to the JSON ``args``): it prints
    ``ready`` once its store is open, waits for ``go`` on stdin, then prints one JSON line of results."""

    def __init__(self, code: str, *args: object) -> None:
        program = f"import json, sys\nARGS = json.loads(sys.argv[1])\n{textwrap.dedent(code)}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", program, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"child failed to start (exit code {self.proc.poll()})"

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self):
        line = self.proc.stdout.readline()
        assert self.proc.wait(timeout=120) == 0 and line, "child failed"
        return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_children(code: str, count: int, *args: object, between=None) -> list:
    """Start ``count`` children, release them together once all are ready, return their results."""
    children = [Child(code, *args) for _ in range(count)]
    try:
        for child in children:
            child.wait_ready()
        if between is not None:
            between()
        for child in children:
            child.go()
        return [child.result() for child in children]
    finally:
        for child in children:
            child.kill()


ACQUIRE = """
import time
from koywe_provider.hooks.rate_budget import RateBudget
url, key, rate, count = ARGS
budget = RateBudget.for_store(url, key, rate)
print("ready", flush=True)
sys.stdin.readline()
stamps = []
for _ in range(count):
    budget.acquire(timeout=60)
    stamps.append(time.time())
budget.close()
print(json.dumps(stamps), flush=True)
"""


@pytest.mark.timeout(180)
def test_processes_sharing_a_store_never_exceed_the_rate_in_any_second(store_url):
    key, processes, each = unique_key(), 3, 5
    results = run_children(ACQUIRE, processes, store_url, key, R, each)
    with RateBudget.for_store(store_url, key, R) as budget:
        budget.clear()
    stamps = [stamp for child_stamps in results for stamp in child_stamps]
    assert len(stamps) == processes * each
    assert max_in_any_window(stamps) <= R, sorted(round(s - min(stamps), 3) for s in stamps)
    # 15 tokens at 5 per second: at least two full windows, and not absurdly slow even on a busy machine.
    assert 2.0 <= max(stamps) - min(stamps) < 60


WAIT_FOR_PAUSE = """
import time
from koywe_provider.hooks.rate_budget import RateBudget
url, key, rate = ARGS
budget = RateBudget.for_store(url, key, rate)
print("ready", flush=True)
sys.stdin.readline()
seen_remaining = budget.pause_remaining()
budget.acquire(timeout=60)
print(json.dumps([seen_remaining, time.time()]), flush=True)
budget.close()
"""


@pytest.mark.timeout(180)
def test_a_pause_set_by_one_process_holds_the_other(store_url):
    key = unique_key()
    budget = RateBudget.for_store(store_url, key, R)
    pauses: list[float] = []

    def pause() -> None:
        pauses.append(budget.pause(1.5))
        assert budget.paused_until() == pauses[0] and 0 < budget.pause_remaining() <= 1.5
        assert budget.pause(0.2) == pauses[0], "a shorter pause never cuts a longer one"

    try:
        [(seen_remaining, granted_at)] = run_children(WAIT_FOR_PAUSE, 1, store_url, key, R, between=pause)
        paused_after = budget.paused_until()
    finally:
        budget.clear()
        budget.close()
    assert seen_remaining > 0
    assert granted_at >= pauses[0] - 0.01  # the store's clock is this machine's (to the millisecond)
    assert paused_after is None


def test_async_acquirers_share_the_budget_and_honour_a_pause(tmp_path):
    budget = RateBudget.for_store(f"sqlite:///{tmp_path / 'b.db'}", unique_key(), R)

    async def main() -> list[float]:
        stamps: list[float] = []

        async def one() -> None:
            await budget.aacquire(timeout=30)
            stamps.append(time.time())

        await asyncio.gather(*(one() for _ in range(8)))
        return stamps

    with budget:
        stamps = asyncio.run(main())
        assert len(stamps) == 8 and max_in_any_window(stamps) <= R
        until = budget.pause(0.4)
        asyncio.run(budget.aacquire(timeout=30))
        assert time.time() >= until - 0.01
        with pytest.raises(RateBudgetTimeout) as raised:
            budget.pause(30)
            asyncio.run(budget.aacquire(timeout=1))
        assert raised.value.paused and 29 < raised.value.retry_after <= 30


def test_store_urls(tmp_path):
    key = unique_key()
    assert isinstance(RateBudget.for_store("memory://", key, R), InProcessBudget)
    with RateBudget.for_store(f"sqlite:///{tmp_path / 'deep' / 'x.db'}", key, 2.5) as budget:
        assert (budget.store_kind, budget.limit, budget.interval_seconds) == ("sqlite", 2, 1.02)
    for bad in ("mysql://h/db", "sqlite:///:memory:", "sqlite://"):
        with pytest.raises(ValueError):
            RateBudget.for_store(bad, key, R)
    with pytest.raises(ValueError, match="key"):
        RateBudget.for_store("memory://", "", R)
    assert budget_for("memory://", key, R) is budget_for("memory://", key, R)
    assert budget_for("memory://", key, R) is not budget_for("memory://", key, 6)
    assert "secret" not in budget_key("https://X.test/V1/", "user") and budget_key(
        "https://X.test/V1/", "user"
    ) == budget_key("https://x.test/V1", "user")


# --------------------------------------------------------------------- in-process, fake clock
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_in_process_budget_keeps_the_rate_on_a_fake_clock():
    clock = FakeClock()
    budget = InProcessBudget(R, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(16):
        budget.acquire()
        stamps.append(clock.now)
    assert max_in_any_window(stamps, width=budget.interval_seconds) == R
    # 16 tokens: three full windows of 1.02 s (1 s + the default 20 ms margin) before the last one
    assert 3 * 1.02 <= clock.now - 100.0 < 3 * 1.02 + 0.05


def test_in_process_pause_holds_and_timeout_says_why():
    clock = FakeClock()
    budget = InProcessBudget(100, clock=clock, sleep=clock.sleep)
    budget.acquire()
    until = budget.pause(30)
    assert until == pytest.approx(130.0) and budget.pause_remaining() == pytest.approx(30.0)
    with pytest.raises(RateBudgetTimeout) as raised:
        budget.acquire(timeout=5)
    assert raised.value.paused and raised.value.retry_after == pytest.approx(30.0)
    assert clock.slept == [], "a wait longer than the timeout raises at once"
    assert budget.acquire() >= 30 and clock.now >= until
    assert budget.paused_until() is None


def test_a_grant_that_comes_late_is_not_used(caplog):
    # Checks slower than the 20 ms margin (an overloaded store or machine) spend their token and
    # check again; after ten in a row the eleventh is used, with a warning.
    clock = FakeClock()
    slow = {"on": True}

    def slow_clock() -> float:
        if slow["on"]:
            time.sleep(0.03)
        return clock()

    budget = InProcessBudget(100, clock=slow_clock, sleep=clock.sleep)
    budget.acquire()
    assert "using a late grant" in caplog.text
    slow["on"] = False
    # Grants are evenly spaced (one per 10 ms at 100/s), never a burst: at the same instant, no other.
    with pytest.raises(RateBudgetTimeout):
        budget.acquire(timeout=0)
    clock.now += 0.020  # a spacing later (10.5 ms, plus the library's few ms of slack)
    assert budget.acquire(timeout=0) == 0.0


def test_grants_are_evenly_spaced_never_a_burst():
    clock = FakeClock()
    budget = InProcessBudget(R, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(3 * R):
        budget.acquire()
        stamps.append(clock.now)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # A spacing between two grants: SPACING_FRACTION of 1/R (so that a check's own duration does not
    # add up from grant to grant), never a burst; the window still caps every second at R.
    assert min(gaps) >= SPACING_FRACTION * budget.interval_seconds / R * 0.99
    assert max_in_any_window(stamps, width=1.0) <= R


def test_weights_and_rates_are_checked():
    budget = InProcessBudget(R)
    assert budget.acquire(weight=0) == 0.0
    with pytest.raises(ValueError, match="never fit"):
        budget.acquire(weight=R + 1)
    for rate in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="rate_per_second"):
            InProcessBudget(rate)
    assert (window_for(5).limit, window_for(5).interval) == (5, 1020)
    assert (window_for(2.5).limit, window_for(2.5, 0).interval) == (2, 1000)
    assert (window_for(0.5).limit, window_for(0.5).interval) == (1, 2020)


# ------------------------------------------------------------------------------ 429 wait policy
def test_wait_has_a_30_second_floor_even_for_retry_after_zero():
    rng = random.Random(7)
    for retry_after in (None, 0, 0.0, 5, -3):
        assert 30.0 <= rate_limit_wait_seconds(retry_after, 1, rng=rng) <= 36.0
    assert 45.0 <= rate_limit_wait_seconds(45, 1, rng=rng) <= 54.0


def test_wait_doubles_per_consecutive_429_with_jitter():
    rng = random.Random(3)
    waits = [rate_limit_wait_seconds(None, n, rng=rng) for n in (1, 2, 3, 4)]
    for n, wait in enumerate(waits, start=1):
        base = 30.0 * 2 ** (n - 1)
        assert base <= wait <= base * 1.2
    assert len(set(waits)) == 4
    assert [rate_limit_wait_seconds(10, n, rng=random.Random(1)) for n in (1, 2)] == [
        rate_limit_wait_seconds(10, n, rng=random.Random(1)) for n in (1, 2)
    ]
    assert rate_limit_wait_seconds(40, 2, rng=rng, jitter=0) == 80.0
    assert rate_limit_wait_seconds(None, 0, rng=rng, jitter=0) == 30.0


def test_wait_is_capped():
    rng = random.Random(5)
    assert rate_limit_wait_seconds(None, 6, rng=rng) == DEFAULT_RATE_LIMIT_MAX_WAIT_SECONDS == 900.0
    assert rate_limit_wait_seconds(None, 500, rng=rng) == 900.0
    assert rate_limit_wait_seconds(5000, 1, rng=rng) == 900.0
    assert rate_limit_wait_seconds(None, 3, rng=rng, cap=100.0) == 100.0
    assert 60 <= rate_limit_wait_seconds(None, 2, rng=rng, cap=100.0) <= 72
    with pytest.raises(ValueError):
        rate_limit_wait_seconds(None, 1, rng=rng, cap=-1)
