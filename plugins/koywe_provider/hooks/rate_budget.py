"""One rate budget per Koywe API user for the whole deployment, and the wait after a 429.

Koywe (seed ``000_…``, API_NOTES "Rate limits") bans IPs that go over the contracted rate (default 5
requests/s per API user) and asks for at least 30 s after a 429. Every Koywe call of every process on
every host takes its token from one :class:`RateBudget`, whose state lives in a store all of them share:

=============================================  ======================================================
store URL                                      budget state
=============================================  ======================================================
``sqlite:///relative.db``,                     pyrate-limiter's ``SQLiteBucket`` in that file (one host;
``sqlite:////absolute/path.db``                a file lock ``<file>.lock`` serialises the processes)
``postgresql://user@host:5432/db``,            pyrate-limiter's ``PostgresBucket`` (psycopg 3; the
``postgresql+psycopg2://…`` (SQLAlchemy form)  server's clock; a table lock per check)
``redis://host:6379/0``, ``rediss://…``        pyrate-limiter's ``RedisBucket`` (Redis ``TIME`` clock;
                                               a Redis lock per check)
``memory://``                                  :class:`InProcessBudget` (scripts and unit tests only)
=============================================  ======================================================

The algorithm is the library's sliding-window log: at most ``limit`` acquisitions in any window of
``interval`` (:func:`window_for`: ``limit = floor(rate)`` per ``1 s + margin`` for rates >= 1, one per
``1 / rate s + margin`` below that). The margin (default 20 ms) absorbs the time between the check
and the moment the request really leaves. Each check is one atomic step under the store's own lock
(the timestamp is read inside it), so the promise holds under contention; when the window is full the
library's ``Decision.retry_after_ms`` says how long to sleep before the next check.

A 429 pauses the budget for everyone (:meth:`RateBudget.pause`): the pause is a row (or key) of the
same store, read inside every check, so no acquirer of any process is granted a token before it ends.
How long to pause is :func:`rate_limit_wait_seconds`.

Tables (created on first use): ``koywe_rate_<hash>`` (SQLite) / ``ratelimit___koywe_rate_<hash>``
(PostgreSQL) hold the window, ``koywe_rate_pause`` the pauses; Redis keys ``koywe:rate:<hash>``,
``…:pause`` and ``…:lock``. ``<hash>`` is derived from the key, so no API user name is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import random
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pyrate_limiter import (
    AbstractBucket,
    AbstractClock,
    InMemoryBucket,
    PostgresBucket,
    Rate,
    RateItem,
    RedisBucket,
    SQLiteBucket,
    SQLiteQueries,
)

from koywe_provider.hooks.token_store import api_user_key, store_url

log = logging.getLogger(__name__)

#: Added to every window (seconds): the slack between a granted check and the request leaving.
#: ``[koywe] rate_budget_margin_seconds``; the long-run rate is ``R / (1 + margin)`` (0.98 R at 20 ms).
DEFAULT_MARGIN_SECONDS = 0.02
#: ``[koywe] send_lead_seconds`` when unset: every request leaves this long after its grant (seconds).
DEFAULT_SEND_LEAD_SECONDS = 0.05
#: Koywe's minimum wait after a 429 (seconds, seed ``000_…``).
RATE_LIMIT_FLOOR_SECONDS = 30.0
#: Default of ``[koywe] rate_limit_max_wait_seconds``: the longest wait after a 429 (seconds).
DEFAULT_RATE_LIMIT_MAX_WAIT_SECONDS = 900.0
#: Upward jitter of :func:`rate_limit_wait_seconds`: up to this fraction of the wait is added.
RATE_LIMIT_JITTER = 0.2

#: The even spacing between grants, as a fraction of ``interval / limit``: below 1, so that the time a
#: check takes (a grant comes a few ms after its slot) does not add up from grant to grant; the window
#: still caps every second at ``limit``.
SPACING_FRACTION = 0.8

_ITEM_NAME = "koywe"
_LEAK_EVERY_MS = 10_000
_LEAK_SLACK_MS = 1_000
_RETRY_BUFFER_MS = 2
_CONTENTION_RETRY_MS = (2, 10)
_LOCK_LEASE_SECONDS = 5.0
_MAX_LATE_GRANTS = 10
_SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


class RateBudgetTimeout(TimeoutError):
    """No token could be granted within the caller's ``timeout``.

    ``retry_after``: seconds until a token may be granted (as far as the budget knows; a pause counts),
    ``paused``: whether a pause is what holds it.
    """

    def __init__(self, message: str, *, retry_after: float, paused: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.paused = paused


# --------------------------------------------------------------------------------- pure helpers
def budget_key(base_url: str, api_user: str) -> str:
    """The budget key of one Koywe API user: ``"<normalised base URL>|<API user>"``.

    Never put the password or the client secret in a key. Same identity as the token cache
    (:func:`koywe_provider.hooks.token_store.api_user_key`).
    """
    return api_user_key(base_url, api_user)


def window_for(rate_per_second: float, margin_seconds: float = DEFAULT_MARGIN_SECONDS) -> Rate:
    """The pyrate-limiter ``Rate`` (``limit`` acquisitions per ``interval`` ms) that keeps ``rate_per_second``.

    ``rate >= 1``: ``floor(rate)`` per ``1000 ms + margin`` (2.5/s becomes 2 per 1.05 s: never more than the
    rate in any one-second window); ``rate < 1``: one per ``1000 / rate ms + margin``.
    Raises ``ValueError`` for a rate that is not > 0 or a negative margin.
    """
    if not rate_per_second > 0 or math.isinf(rate_per_second):
        raise ValueError(f"rate_per_second must be a finite number > 0, got {rate_per_second!r}")
    if margin_seconds < 0:
        raise ValueError(f"margin_seconds must be >= 0, got {margin_seconds!r}")
    margin_ms = round(margin_seconds * 1000)
    if rate_per_second >= 1:
        return Rate(int(math.floor(rate_per_second)), 1000 + margin_ms)
    return Rate(1, math.ceil(1000 / rate_per_second) + margin_ms)


def spaced(window: Rate) -> list[Rate]:
    """``window`` plus an even spacing of one grant per ``SPACING_FRACTION * interval / limit``: never
    more than ``limit`` per window, and never a burst of the whole window at once. A burst granted at once reaches Koywe
    spread by each sender's own delay (a fenced send's lease UPDATE sits between grant and POST), and
    the next window's grants could then arrive in the same second; evenly spaced grants leave that
    delay a whole spacing of slack."""
    if window.limit < 2:
        return [window]
    # floor: the spacing rate may not be stricter on average than the window (pyrate-limiter refuses it)
    return [Rate(1, max(1, math.floor(SPACING_FRACTION * window.interval / window.limit))), window]


def rate_limit_wait_seconds(
    retry_after: float | None,
    consecutive_429s: int,
    *,
    floor: float = RATE_LIMIT_FLOOR_SECONDS,
    cap: float = DEFAULT_RATE_LIMIT_MAX_WAIT_SECONDS,
    rng: random.Random,
    jitter: float = RATE_LIMIT_JITTER,
) -> float:
    """Seconds to pause the budget after the ``consecutive_429s``-th 429 in a row (pure).

    ``min(cap, max(floor, retry_after) * 2**(consecutive_429s - 1) * (1 + jitter * rng.random()))``:
    Koywe's ``Retry-After`` (seconds; ``None`` when absent) is never obeyed below ``floor`` (30 s, so
    ``Retry-After: 0`` still waits 30 s), doubles per consecutive 429, gets up to ``jitter`` (20 %) added
    so that waiters do not return in step, and is capped by ``cap`` (``[koywe]
    rate_limit_max_wait_seconds``, default 900 s; the cap wins over a longer ``Retry-After``).
    ``consecutive_429s`` below 1 counts as 1; a negative ``retry_after`` as absent.
    Raises ``ValueError`` for a negative ``floor``, ``cap`` or ``jitter``.
    """
    if floor < 0 or cap < 0 or jitter < 0:
        raise ValueError(f"floor, cap and jitter must be >= 0, got {floor!r}, {cap!r}, {jitter!r}")
    base = max(floor, retry_after if retry_after is not None and retry_after > 0 else 0.0)
    exponent = min(max(1, int(consecutive_429s)) - 1, 64)
    wait = base * 2.0**exponent * (1.0 + jitter * rng.random())
    return min(cap, wait)


def margin_from_config() -> float:
    """``[koywe] rate_budget_margin_seconds`` from Airflow's configuration (default 0.02 s).

    The slack added to every window for the time between a grant and the request leaving (the fence's
    UPDATE, thread scheduling). Larger is safer against a strict server-side window and slower: the
    long-run rate is ``R / (1 + margin)``. Call at task run time, never at DAG parse time. Raises
    ``ValueError`` for a negative value or one of a second or more.
    """
    from airflow.sdk import conf

    value = conf.getfloat("koywe", "rate_budget_margin_seconds", fallback=DEFAULT_MARGIN_SECONDS)
    if not 0 <= value < 1:
        raise ValueError(f"[koywe] rate_budget_margin_seconds must be >= 0 and < 1, got {value!r}")
    return value


def send_lead_from_config() -> float:
    """``[koywe] send_lead_seconds`` from Airflow's configuration (default 0.05 s).

    Every Koywe request leaves this long after its grant, whatever ran in between (a fenced send's
    UPDATE, a thread hand-off), so fenced and unfenced calls keep the budget's spacing on the wire.
    Call at task run time, never at DAG parse time. Raises ``ValueError`` for a value outside [0, 1).
    """
    from airflow.sdk import conf

    value = conf.getfloat("koywe", "send_lead_seconds", fallback=DEFAULT_SEND_LEAD_SECONDS)
    if not 0 <= value < 1:
        raise ValueError(f"[koywe] send_lead_seconds must be >= 0 and < 1, got {value!r}")
    return value


def rate_limit_max_wait_from_config() -> float:
    """``[koywe] rate_limit_max_wait_seconds`` from Airflow's configuration (default 900 s).

    Call at task run time, never at DAG parse time. Raises ``ValueError`` for a value that is not > 0.
    """
    from airflow.sdk import conf

    value = conf.getfloat(
        "koywe", "rate_limit_max_wait_seconds", fallback=DEFAULT_RATE_LIMIT_MAX_WAIT_SECONDS
    )
    if not value > 0:
        raise ValueError(f"[koywe] rate_limit_max_wait_seconds must be > 0, got {value!r}")
    return value


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------- stores
class _Backend:
    """Where one budget's window and pause live. Every method runs under the budget's thread lock."""

    kind = "abstract"
    #: whether a pause set between the pre-check and the put can be missed (then the put is re-checked)
    recheck_pause_after_grant = False
    bucket: AbstractBucket

    def locked(self, timeout: float | None) -> contextlib.AbstractContextManager[Any]:
        """The cross-process lock of one check; raises ``TimeoutError`` when not held within ``timeout``."""
        return contextlib.nullcontext()

    def now_ms(self) -> int:
        """The store's clock, milliseconds (epoch ms for shared stores)."""
        now = self.bucket.now()
        assert isinstance(now, int)
        return now

    def get_pause_ms(self) -> int | None:
        raise NotImplementedError

    def set_pause_ms(self, until_ms: int) -> int:
        """Extend the pause to ``until_ms`` (never shortens it); returns the pause now in force."""
        raise NotImplementedError

    def clear_pause(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.bucket.close()


class _ClockAdapter(AbstractClock):
    """A pyrate-limiter clock over a ``Callable[[], float]`` of seconds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> int:
        return int(self._clock() * 1000)


class _MemoryBackend(_Backend):
    kind = "memory"

    def __init__(self, rate: Rate, clock: Callable[[], float]) -> None:
        self.bucket = InMemoryBucket(spaced(rate))
        # InMemoryBucket reads ``self._clock`` (pyrate-limiter's documented way to inject a clock).
        self.bucket._clock = _ClockAdapter(clock)
        self._pause_ms: int | None = None

    def get_pause_ms(self) -> int | None:
        return self._pause_ms

    def set_pause_ms(self, until_ms: int) -> int:
        self._pause_ms = max(self._pause_ms or until_ms, until_ms)
        return self._pause_ms

    def clear_pause(self) -> None:
        self._pause_ms = None


class _SQLiteBackend(_Backend):
    """pyrate-limiter's ``SQLiteBucket`` with its file lock (the library's multi-process mode)."""

    kind = "sqlite"

    def __init__(self, path: str, table: str, rate: Rate) -> None:
        from filelock import FileLock

        self.path = path
        self._file_lock = FileLock(path + ".lock")
        with self._file_lock:
            conn = sqlite3.connect(
                path,
                timeout=_SQLITE_BUSY_TIMEOUT_SECONDS,
                isolation_level="DEFERRED",
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(SQLiteQueries.CREATE_BUCKET_TABLE.format(table=table))
            conn.execute(
                SQLiteQueries.CREATE_INDEX_ON_TIMESTAMP.format(index_name=f"idx_{table}_ts", table_name=table)
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS koywe_rate_pause (budget TEXT PRIMARY KEY, until_ms INTEGER NOT NULL)"
            )
            conn.commit()
        self._table = table
        self.bucket = SQLiteBucket(spaced(rate), conn, table, lock=self._file_lock)

    @contextlib.contextmanager
    def locked(self, timeout: float | None) -> Iterator[None]:
        from filelock import Timeout

        try:
            self._file_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
        except Timeout as err:
            raise TimeoutError(f"file lock {self._file_lock.lock_file} not acquired") from err
        try:
            yield
        finally:
            self._file_lock.release()

    def get_pause_ms(self) -> int | None:
        with self._file_lock:
            row = self.bucket.conn.execute(
                "SELECT until_ms FROM koywe_rate_pause WHERE budget = ?", (self._table,)
            ).fetchone()
            return None if row is None else int(row[0])

    def set_pause_ms(self, until_ms: int) -> int:
        with self._file_lock:
            conn = self.bucket.conn
            conn.execute(
                "INSERT INTO koywe_rate_pause (budget, until_ms) VALUES (?, ?) ON CONFLICT (budget) "
                "DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)",
                (self._table, until_ms),
            )
            conn.commit()
            row = conn.execute(
                "SELECT until_ms FROM koywe_rate_pause WHERE budget = ?", (self._table,)
            ).fetchone()
            return int(row[0])

    def clear_pause(self) -> None:
        with self._file_lock:
            self.bucket.conn.execute("DELETE FROM koywe_rate_pause WHERE budget = ?", (self._table,))
            self.bucket.conn.commit()


class _PostgresBackend(_Backend):
    """pyrate-limiter's ``PostgresBucket`` (psycopg 3 pool, the server's clock, a table lock per check)."""

    kind = "postgresql"
    # The bucket takes its table lock inside put(); a pause committed between our pre-check and that
    # lock is caught by reading the pause once more after a grant.
    recheck_pause_after_grant = True

    def __init__(self, conninfo: str, table: str, rate: Rate) -> None:
        from psycopg_pool import ConnectionPool

        # synchronous_commit=off: a grant must not wait for a WAL flush between its timestamp and its
        # return (that delay is time the window does not see); after a server crash the last few
        # entries may be lost, which costs at most one window's worth of pacing.
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=2,
            open=True,
            name=f"koywe-rate-{table}",
            timeout=30.0,
            kwargs={"options": "-c synchronous_commit=off"},
        )
        self._budget = table
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(b"koywe_rate_pause") & 0x7FFFFFFF,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS koywe_rate_pause (budget TEXT PRIMARY KEY, until_ms BIGINT NOT NULL)"
            )
        self.bucket = PostgresBucket(self._pool, table, spaced(rate))

    def get_pause_ms(self) -> int | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT until_ms FROM koywe_rate_pause WHERE budget = %s", (self._budget,)
            ).fetchone()
            return None if row is None else int(row[0])

    def set_pause_ms(self, until_ms: int) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO koywe_rate_pause (budget, until_ms) VALUES (%s, %s) ON CONFLICT (budget) "
                "DO UPDATE SET until_ms = GREATEST(koywe_rate_pause.until_ms, EXCLUDED.until_ms) "
                "RETURNING until_ms",
                (self._budget, until_ms),
            ).fetchone()
            assert row is not None
            return int(row[0])

    def clear_pause(self) -> None:
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM koywe_rate_pause WHERE budget = %s", (self._budget,))


class _RedisTimeBucket(RedisBucket):
    """``RedisBucket`` on the Redis server's clock (``TIME``), the same for every host."""

    def now(self) -> int:
        seconds, microseconds = self.redis.time()
        return int(seconds) * 1000 + int(microseconds) // 1000


class _RedisBackend(_Backend):
    """pyrate-limiter's ``RedisBucket``; each check holds a Redis lock, so its timestamp (read inside
    the lock) and its put are one step for every client (the bucket's script counts only entries up
    to the caller's ``now``, which a concurrent client could otherwise overtake)."""

    kind = "redis"

    def __init__(self, url: str, key: str, rate: Rate) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)
        self._key = key
        self.bucket = _RedisTimeBucket.init(spaced(rate), self._redis, key)

    @contextlib.contextmanager
    def locked(self, timeout: float | None) -> Iterator[None]:
        from redis.exceptions import LockError

        lock = self._redis.lock(
            f"{self._key}:lock",
            timeout=_LOCK_LEASE_SECONDS,
            sleep=0.002,
            blocking=True,
            blocking_timeout=timeout,
            thread_local=False,
        )
        if not lock.acquire():
            raise TimeoutError(f"Redis lock {self._key}:lock not acquired")
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:
                log.warning(
                    "Redis lock %s:lock expired while held (a check took > %s s)",
                    self._key,
                    _LOCK_LEASE_SECONDS,
                )

    def get_pause_ms(self) -> int | None:
        value = self._redis.get(f"{self._key}:pause")
        return None if value is None else int(value)

    def set_pause_ms(self, until_ms: int) -> int:
        # Under the same Redis lock as every check: read, extend, write is one step.
        with self.locked(30.0):
            current = self.get_pause_ms()
            until_ms = max(current or until_ms, until_ms)
            ttl_ms = max(1, until_ms - self.now_ms()) + 60_000
            self._redis.set(f"{self._key}:pause", until_ms, px=ttl_ms)
            return until_ms

    def clear_pause(self) -> None:
        self._redis.delete(f"{self._key}:pause")

    def close(self) -> None:
        self._redis.close()


_PG_URL = re.compile(r"^postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?://", re.IGNORECASE)


def _open_backend(url: str, key: str, rate: Rate) -> _Backend | None:
    """The backend of ``url`` (``None`` for ``memory://``); raises ``ValueError`` for anything else."""
    table = f"koywe_rate_{_digest(key)}"
    if url.startswith("memory:"):
        return None
    if url.startswith("sqlite:"):
        import sqlalchemy as sa

        database = sa.make_url(url).database
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ValueError(f"a shared SQLite budget needs a file path (sqlite:///path.db), got {url!r}")
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        return _SQLiteBackend(database, table, rate)
    if _PG_URL.match(url):
        return _PostgresBackend(_PG_URL.sub("postgresql://", url, count=1), table, rate)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _RedisBackend(url, f"koywe:rate:{_digest(key)}", rate)
    raise ValueError(
        "unknown rate budget store (use sqlite:///path.db, postgresql://…, postgresql+psycopg2://…, "
        f"redis://… or memory://): {url.split('://', 1)[0]!r}"
    )


# ------------------------------------------------------------------------------------- budgets
class RateBudget:
    """At most ``rate_per_second`` Koywe calls per second for one API user, across every process that
    shares the store and the key.

    Build with :meth:`for_store` (or the per-process cache :func:`budget_for`); the constructor is
    internal. Thread-safe; use one instance per process (it holds a connection or pool, a file lock or
    a Redis client); after ``fork`` build a new one. ``limit`` and ``interval_seconds`` give the window
    (:func:`window_for`). Every method may raise the store driver's error when the store fails
    (``sqlite3.OperationalError``, ``psycopg.Error``, ``redis.RedisError``): nothing is granted then.
    """

    def __init__(
        self,
        backend: _Backend,
        key: str,
        rate_per_second: float,
        *,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = window_for(rate_per_second, margin_seconds)
        self._backend = backend
        self.key = key
        self.rate_per_second = float(rate_per_second)
        self.margin_seconds = float(margin_seconds)
        self._sleep = sleep
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # One thread of this process polls the store at a time; the others queue behind it. Without
        # it, every thread of every process checks the store for every slot (32 checks, each a locked
        # transaction, for one grant with 4 tasks of 8 threads).
        self._poller = threading.Lock()
        self._last_wait = 0.0
        self._last_leak: float | None = None
        self._late_grants = 0
        self._rng = random.Random()

    @classmethod
    def for_store(
        cls,
        store: Any,
        key: str,
        rate_per_second: float,
        *,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
    ) -> RateBudget:
        """Open the budget ``key`` at ``rate_per_second`` in ``store``: a URL (see the module docstring)
        or a SQLAlchemy ``URL`` / ``Engine`` such as the ledger's ``engine``.

        ``key``: the API user's identity, :func:`budget_key` (base URL + API user; never a secret).
        Every process must use the same rate for a key: each enforces its own ``limit`` on the shared
        window. Creates the tables or keys it needs. Raises ``ValueError`` for an unknown URL, a rate
        that is not > 0 or an empty key, ``TypeError`` for another kind of ``store``; the driver's error
        when the store does not answer.
        """
        if not key:
            raise ValueError("a rate budget needs a non-empty key (base URL + API user)")
        window = window_for(rate_per_second, margin_seconds)
        backend = _open_backend(store_url(store), key, window)
        if backend is None:
            return InProcessBudget(rate_per_second, key=key, margin_seconds=margin_seconds)
        return RateBudget(backend, key, rate_per_second, margin_seconds=margin_seconds)

    # -- properties ------------------------------------------------------------------------------
    @property
    def store_kind(self) -> str:
        """``"memory"``, ``"sqlite"``, ``"postgresql"`` or ``"redis"``."""
        return self._backend.kind

    @property
    def limit(self) -> int:
        """Acquisitions (weight units) allowed in any window of :attr:`interval_seconds`."""
        return self._rate.limit

    @property
    def interval_seconds(self) -> float:
        """The window's length in seconds (1 s + margin for rates >= 1)."""
        return self._rate.interval / 1000

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(store={self.store_kind}, limit={self.limit}, "
            f"interval={self.interval_seconds:g}s)"
        )

    # -- acquiring -------------------------------------------------------------------------------
    def _check_weight(self, weight: int) -> None:
        if not isinstance(weight, int) or weight < 0:
            raise ValueError(f"weight must be an int >= 0, got {weight!r}")
        if weight > self.limit:
            raise ValueError(
                f"weight {weight} can never fit a budget of {self.limit} per {self.interval_seconds:g} s"
            )

    def _attempt(self, weight: int, lock_timeout: float | None) -> tuple[float, bool] | float:
        """One atomic check: the grant's ``time.monotonic()`` when granted, else ``(seconds to wait,
        paused)``.

        Nothing but the check itself runs between reading the store's clock and the grant (the pause
        is read first, old entries are removed before), and a grant that took longer than the
        margin from its timestamp is not used: its token stays spent and the caller checks again at
        once (at most ``_MAX_LATE_GRANTS`` times in a row, then it is used and a warning logged).
        Raises ``TimeoutError`` when the store's lock is not held within ``lock_timeout``.
        """
        backend = self._backend
        with self._lock:
            self._leak_if_due()
            with backend.locked(lock_timeout):
                paused = backend.get_pause_ms()
                checked = time.perf_counter()
                granted_at = time.monotonic()
                now = backend.now_ms()
                if paused is not None and paused > now:
                    return (paused - now) / 1000, True
                item = RateItem(_ITEM_NAME, now, weight=weight)
                decision = backend.bucket.put_decision(item)
                assert not asyncio.iscoroutine(decision)
                if decision.allowed:
                    if backend.recheck_pause_after_grant:
                        paused = backend.get_pause_ms()
                        if paused is not None and paused > now:
                            # Granted while a pause was being set: the token is spent, not used.
                            return max(0, paused - backend.now_ms()) / 1000, True
                    late = self._timely(time.perf_counter() - checked)
                    return granted_at if late is None else late
            wait_ms = decision.retry_after_ms
            if wait_ms is None:
                # The library's own estimate (e.g. PostgreSQL answered "table busy", not "window full").
                waiting = backend.bucket.waiting(item)
                assert isinstance(waiting, int)
                wait_ms = waiting
            if wait_ms <= 0:
                wait_ms = self._rng.randint(*_CONTENTION_RETRY_MS)
            else:
                wait_ms += _RETRY_BUFFER_MS
            return wait_ms / 1000, False

    def _timely(self, took: float) -> tuple[float, bool] | None:
        """``None`` (use the grant) unless it came ``took`` seconds after its timestamp, over the margin."""
        if self.margin_seconds == 0 or took <= self.margin_seconds:
            self._late_grants = 0
            return None
        self._late_grants += 1
        if self._late_grants > _MAX_LATE_GRANTS:
            log.warning(
                "rate budget %s: %d checks in a row took over %.0f ms (an overloaded store or machine); "
                "using a late grant",
                self.store_kind,
                self._late_grants,
                self.margin_seconds * 1000,
            )
            self._late_grants = 0
            return None
        return 0.0, False

    def _leak_if_due(self) -> None:
        """Remove entries older than the window (pyrate-limiter's ``leak``) every ``_LEAK_EVERY_MS``."""
        tick = time.monotonic()
        if self._last_leak is not None and tick - self._last_leak < _LEAK_EVERY_MS / 1000:
            return
        self._last_leak = tick
        try:
            self._backend.bucket.leak(self._backend.now_ms() - _LEAK_SLACK_MS)
        except Exception:  # cleaning up old entries must never fail an acquisition
            log.warning("rate budget %s: removing old window entries failed", self.store_kind, exc_info=True)

    def _remaining(self, deadline: float | None) -> float | None:
        return None if deadline is None else deadline - self._monotonic()

    def _lock_timeout(self, deadline: float | None) -> float:
        remaining = self._remaining(deadline)
        return 30.0 if remaining is None else max(0.0, min(30.0, remaining))

    def _timeout(self, weight: int, wait: float, paused: bool, timeout: float | None) -> RateBudgetTimeout:
        why = "paused after a 429" if paused else "the window is full"
        return RateBudgetTimeout(
            f"no rate token of weight {weight} within {timeout:g} s ({why}; next in {wait:.3f} s)",
            retry_after=wait,
            paused=paused,
        )

    def acquire(self, weight: int = 1, timeout: float | None = None) -> float:
        """Block until ``weight`` tokens are granted; return the seconds waited.

        Never more than :attr:`limit` units are granted in any :attr:`interval_seconds` window, over
        every process sharing the store and key; a pause (:meth:`pause`) holds every caller until it
        ends. The threads of one process take turns: one polls the store, the others queue behind it.
        ``timeout`` (seconds; ``None`` = wait as long as it takes, ``0`` = one check): when the
        next token cannot come within it, raises :class:`RateBudgetTimeout` at once (its
        ``retry_after`` says when it would). Raises ``ValueError`` for a weight above :attr:`limit`.
        """
        if weight == 0:
            return 0.0
        started = self._monotonic()
        self.acquire_at(weight, timeout)
        return self._monotonic() - started

    def acquire_at(self, weight: int = 1, timeout: float | None = None) -> float:
        """:meth:`acquire`, returning when the grant was made (``time.monotonic()``, read inside the
        store's check) rather than the wait: a caller that sends later than that by more than
        :attr:`margin_seconds` knows its token went stale. Same semantics and errors."""
        self._check_weight(weight)
        if weight == 0:
            return time.monotonic()
        started = self._monotonic()
        deadline = None if timeout is None else started + max(0.0, timeout)
        if not self._poller.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            assert timeout is not None
            raise self._timeout(weight, max(self._last_wait, 0.001), False, timeout)
        try:
            while True:
                try:
                    outcome = self._attempt(weight, self._lock_timeout(deadline))
                except TimeoutError:
                    outcome = (0.005, False)
                if not isinstance(outcome, tuple):
                    return outcome
                wait, paused = outcome
                self._last_wait = wait
                remaining = self._remaining(deadline)
                if remaining is not None and wait > remaining:
                    assert timeout is not None
                    raise self._timeout(weight, wait, paused, timeout)
                self._sleep(wait)
        finally:
            self._poller.release()

    async def aacquire(self, weight: int = 1, timeout: float | None = None) -> float:
        """:meth:`acquire` for asyncio (the triggerer): checks run in a worker thread, waits are
        ``asyncio.sleep``, so the event loop never blocks. Same semantics, errors and return value."""
        if weight == 0:
            return 0.0
        started = self._monotonic()
        await self.aacquire_at(weight, timeout)
        return self._monotonic() - started

    async def aacquire_at(self, weight: int = 1, timeout: float | None = None) -> float:
        """:meth:`acquire_at` for asyncio: returns the grant's ``time.monotonic()``."""
        self._check_weight(weight)
        if weight == 0:
            return time.monotonic()
        started = self._monotonic()
        deadline = None if timeout is None else started + max(0.0, timeout)
        while True:
            try:
                outcome = await self._aattempt(weight, self._lock_timeout(deadline))
            except TimeoutError:
                outcome = (0.005, False)
            if not isinstance(outcome, tuple):
                return outcome
            wait, paused = outcome
            remaining = self._remaining(deadline)
            if remaining is not None and wait > remaining:
                assert timeout is not None
                raise self._timeout(weight, wait, paused, timeout)
            await asyncio.sleep(wait)

    async def _aattempt(self, weight: int, lock_timeout: float | None) -> tuple[float, bool] | float:
        return await asyncio.to_thread(self._attempt, weight, lock_timeout)

    # -- pausing ---------------------------------------------------------------------------------
    def pause(self, seconds: float) -> float:
        """Hold every acquirer of every process sharing this budget for ``seconds`` from now.

        Stored in the budget's store; never shortens a longer pause already in force (the longest
        wins). Returns the moment the pause ends, in seconds on the budget's clock (epoch seconds for
        shared stores, like :meth:`paused_until`). ``seconds <= 0`` changes nothing.
        """
        with self._lock:
            now = self._backend.now_ms()
            if seconds <= 0:
                current = self._backend.get_pause_ms()
                return max(current or now, now) / 1000
            until = self._backend.set_pause_ms(now + math.ceil(seconds * 1000))
            log.info("Koywe rate budget paused for %.1f s (%s)", (until - now) / 1000, self.store_kind)
            return until / 1000

    def paused_until(self) -> float | None:
        """When the pause in force ends (seconds on the budget's clock: epoch seconds for SQLite,
        PostgreSQL and Redis), or ``None`` when the budget is not paused."""
        with self._lock:
            until = self._backend.get_pause_ms()
            if until is None or until <= self._backend.now_ms():
                return None
            return until / 1000

    def pause_remaining(self) -> float:
        """Seconds until the pause in force ends; ``0.0`` when the budget is not paused."""
        with self._lock:
            until = self._backend.get_pause_ms()
            return 0.0 if until is None else max(0.0, (until - self._backend.now_ms()) / 1000)

    # -- lifecycle -------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget this budget's window and pause in the store, for every process (tests; an operator
        after a contract change). The tables stay."""
        with self._lock, self._backend.locked(30.0):
            self._backend.bucket.flush()
            self._backend.clear_pause()

    def close(self) -> None:
        """Release the connection, pool or client (the shared state stays in the store)."""
        with self._lock:
            try:
                self._backend.close()
            except Exception:
                log.debug("closing rate budget %s failed", self.store_kind, exc_info=True)

    def __enter__(self) -> RateBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessBudget(RateBudget):
    """A budget private to this object: for scripts, the benchmark's baseline and unit tests.

    Same semantics as a shared :class:`RateBudget` (pyrate-limiter's ``InMemoryBucket``), but only
    callers of this very object share it. ``clock`` (seconds, monotonic; default ``time.monotonic``)
    and ``sleep`` (default ``time.sleep``) are injectable, so tests can run on a fake clock;
    :meth:`paused_until` is on that clock.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        key: str = "in-process",
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        backend = _MemoryBackend(window_for(rate_per_second, margin_seconds), clock)
        super().__init__(
            backend, key, rate_per_second, margin_seconds=margin_seconds, sleep=sleep, monotonic=clock
        )

    async def _aattempt(self, weight: int, lock_timeout: float | None) -> tuple[float, bool] | float:
        return self._attempt(weight, lock_timeout)  # memory only: no I/O, no thread needed


# -------------------------------------------------------------------------- per-process cache
_budgets: dict[tuple[str, str, float, float], RateBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(
    store: Any,
    key: str,
    rate_per_second: float,
    *,
    margin_seconds: float = DEFAULT_MARGIN_SECONDS,
) -> RateBudget:
    """This process's :class:`RateBudget` for ``(store, key, rate)``, opened on first use
    (:meth:`RateBudget.for_store`; same arguments and errors). Every hook of a process shares it;
    a forked child starts with an empty cache (it never reuses its parent's connections)."""
    cache_key = (store_url(store), key, float(rate_per_second), float(margin_seconds))
    with _budgets_lock:
        budget = _budgets.get(cache_key)
        if budget is None:
            budget = RateBudget.for_store(store, key, rate_per_second, margin_seconds=margin_seconds)
            _budgets[cache_key] = budget
        return budget


def _forget_budgets_after_fork() -> None:
    global _budgets_lock
    _budgets.clear()
    _budgets_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_budgets_after_fork)
