"""Where ``KoyweHook`` keeps the Koywe access token between processes, and single-flight login.

Koywe (seed ``000_…``, "Manage access_token efficiently") asks clients to cache the token returned by
``POST /auth`` for its whole life (``expires_in``: 3600 s) and reuse it for every call. Every cache
entry records the base URL and the API user it was issued for, and a store bound to an API user
(``base_url=…, api_user=…``) never returns a token of another one (nor an entry that names none).

When several tasks find the token rejected (or about to expire) at once, :meth:`TokenStore.renew`
lets exactly one of them log in: the renewal runs under a lock shared by every process of the store
(SQLite: a lock row with a lease; PostgreSQL: an advisory lock; Redis: a Redis lock; in-process: a
thread lock). The first caller to hold it calls ``fetch()`` (one ``POST /auth``) and stores the token;
the others wait for the lock, then find that new token and reuse it without logging in.

Stores:

* :class:`VariableTokenStore`: the Airflow Variable ``koywe_token__<conn_id>`` (inside a running task;
  the name contains "token", so Airflow's secrets masker hides the value). Renewal is single-flight
  within a process only.
* :class:`SqlTokenStore`: tables ``koywe_token_cache`` and ``koywe_token_login_lock`` of a SQLite file
  or PostgreSQL database (the ledger's, like the rate budget), created on first use.
* :class:`RedisTokenStore`: keys ``koywe:token:<hash>`` and ``…:login``.
* :class:`MemoryTokenStore`: this object only (tests, scripts, ``test_connection``).

:func:`token_store_for` opens one from a URL (the same URL forms as the rate budget). The token is
stored as plain JSON ``{access_token, expires_at, base_url, api_user}``: it lives as long as the
database's access rules allow, never in a log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from koywe_provider.models.answers import AuthAnswer

log = logging.getLogger(__name__)

#: A stored token with less life than this (seconds) is renewed; matches the hook's refresh margin.
DEFAULT_MIN_SECONDS_LEFT = 300.0
#: How long a SQLite or Redis login lock stays held if its holder dies (seconds); must outlast one
#: ``POST /auth`` with its retries.
LOGIN_LOCK_LEASE_SECONDS = 120.0
#: How long :meth:`TokenStore.renew` waits for another process's login (seconds).
LOGIN_WAIT_SECONDS = 150.0
_POLL_SECONDS = 0.05


class TokenRenewalTimeout(TimeoutError):
    """Another process held the login lock for longer than ``renew``'s ``wait_seconds``."""


def normalize_base_url(base_url: str) -> str:
    """``base_url`` without surrounding spaces or trailing ``/``, scheme and host in lower case."""
    parts = urlsplit(base_url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, "")).rstrip("/")


def api_user_key(base_url: str, api_user: str) -> str:
    """The identity of one Koywe API user: ``"<normalised base URL>|<API user>"`` (never a secret).

    Keys the token cache and the rate budget. Raises ``ValueError`` when either part is empty.
    """
    if not base_url or not base_url.strip() or not api_user:
        raise ValueError("an API user identity needs a base URL and an API user name")
    return f"{normalize_base_url(base_url)}|{api_user}"


def store_url(store: Any) -> str:
    """The URL of ``store``: a URL string as is, or a SQLAlchemy ``URL`` or ``Engine`` (e.g. the
    ledger's ``engine``) rendered with its password. Raises ``TypeError`` for anything else."""
    if isinstance(store, str):
        return store
    url = getattr(store, "url", store)
    render = getattr(url, "render_as_string", None)
    if render is None:
        raise TypeError(f"expected a store URL, a SQLAlchemy URL or an Engine, got {type(store).__name__}")
    return str(render(hide_password=False))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedToken:
    """A bearer token, the moment it expires (timezone-aware UTC) and whom it was issued for.

    ``base_url`` (normalised) and ``api_user`` are ``None`` until a store bound to an API user saves
    the token (it stamps them). ``repr`` never shows the token.
    """

    access_token: str = field(repr=False)
    expires_at: datetime
    base_url: str | None = None
    api_user: str | None = None

    @classmethod
    def from_auth_answer(
        cls,
        answer: AuthAnswer,
        *,
        now: datetime | None = None,
        base_url: str | None = None,
        api_user: str | None = None,
    ) -> CachedToken:
        """Build from a typed ``POST /auth`` answer (``expires_in`` seconds, default 3600)."""
        now = now or datetime.now(UTC)
        return cls(
            access_token=answer.access_token.get_secret_value(),
            expires_at=now + timedelta(seconds=float(answer.expires_in or 3600)),
            base_url=normalize_base_url(base_url) if base_url else None,
            api_user=api_user,
        )

    def seconds_left(self, now: datetime | None = None) -> float:
        return (self.expires_at - (now or datetime.now(UTC))).total_seconds()

    def usable(
        self,
        *,
        rejected: str | None = None,
        min_seconds_left: float = DEFAULT_MIN_SECONDS_LEFT,
        now: datetime | None = None,
    ) -> bool:
        """Not the ``rejected`` token and at least ``min_seconds_left`` seconds of life left."""
        return self.access_token != rejected and self.seconds_left(now) >= min_seconds_left

    def belongs_to(self, base_url: str, api_user: str) -> bool:
        """Whether this entry names this base URL and API user (an entry naming none never does)."""
        return self.base_url == normalize_base_url(base_url) and self.api_user == api_user

    def owned_by(self, base_url: str, api_user: str) -> CachedToken:
        """This token stamped with its base URL and API user."""
        return replace(self, base_url=normalize_base_url(base_url), api_user=api_user)

    def to_json(self) -> str:
        data: dict[str, str] = {"access_token": self.access_token, "expires_at": self.expires_at.isoformat()}
        if self.base_url is not None and self.api_user is not None:
            data.update(base_url=self.base_url, api_user=self.api_user)
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: str | dict) -> CachedToken:
        """Parse ``{"access_token": str, "expires_at": ISO-8601[, "base_url": str, "api_user": str]}``.

        Raises ``ValueError`` for anything else.
        """
        try:
            data = json.loads(raw) if isinstance(raw, str) else raw
            expires_at = datetime.fromisoformat(data["expires_at"])
            token = data["access_token"]
            base_url = data.get("base_url")
            api_user = data.get("api_user")
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as err:
            raise ValueError("token cache entry lacks access_token or expires_at") from err
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if not isinstance(token, str) or not token:
            raise ValueError("token cache entry has an empty access_token")
        if not (isinstance(base_url, str) and isinstance(api_user, str)):
            base_url = api_user = None
        return cls(access_token=token, expires_at=expires_at, base_url=base_url, api_user=api_user)


class TokenStore(Protocol):
    """Shared storage of one API user's token (read by every task that calls Koywe)."""

    def load(self) -> CachedToken | None:
        """The stored token of this store's API user, or ``None`` (also for another user's token)."""
        ...

    def save(self, token: CachedToken) -> None:
        """Store ``token`` (stamped with this store's API user)."""
        ...

    def renew(
        self,
        fetch: Callable[[], CachedToken],
        *,
        rejected: str | None = None,
        min_seconds_left: float = DEFAULT_MIN_SECONDS_LEFT,
        wait_seconds: float = LOGIN_WAIT_SECONDS,
    ) -> CachedToken:
        """Single-flight login: see :meth:`MemoryTokenStore.renew` (the same for every store)."""
        ...


# One thread lock per renewal name in this process: threads queue here before the shared lock.
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(name: str) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(name, threading.Lock())


def _reset_thread_locks_after_fork() -> None:
    # A lock another thread held at fork time would stay held forever in the child.
    global _thread_locks_guard, _engines_guard
    _thread_locks.clear()
    _thread_locks_guard = threading.Lock()
    _engines_guard = threading.Lock()


os.register_at_fork(after_in_child=_reset_thread_locks_after_fork)


class _OwnedTokenStore:
    """Owner checks and single-flight :meth:`renew` on top of ``_read`` / ``_write`` / ``_shared_lock``."""

    def __init__(self, *, base_url: str | None, api_user: str | None) -> None:
        if (base_url is None) != (api_user is None):
            raise ValueError("give both base_url and api_user, or neither")
        self.base_url = normalize_base_url(base_url) if base_url is not None else None
        self.api_user = api_user

    # -- to implement ----------------------------------------------------------------------------
    def _read(self) -> CachedToken | None:
        raise NotImplementedError

    def _write(self, token: CachedToken) -> None:
        raise NotImplementedError

    def _lock_name(self) -> str:
        raise NotImplementedError

    def _renewal_thread_lock(self) -> threading.Lock:
        """The in-process part of the renewal lock: one per store identity and process."""
        return _thread_lock(self._lock_name())

    @contextlib.contextmanager
    def _shared_lock(self, deadline: float) -> Iterator[None]:
        """The cross-process part of the renewal lock (none by default); raises TokenRenewalTimeout."""
        yield

    # -- API -------------------------------------------------------------------------------------
    def _owns(self, token: CachedToken) -> bool:
        if self.base_url is None or self.api_user is None:
            return True
        return token.belongs_to(self.base_url, self.api_user)

    def _stamp(self, token: CachedToken) -> CachedToken:
        if self.base_url is None or self.api_user is None:
            return token
        if token.base_url is None and token.api_user is None:
            return token.owned_by(self.base_url, self.api_user)
        if not token.belongs_to(self.base_url, self.api_user):
            raise ValueError("this token was issued for another base URL or API user")
        return token

    def load(self) -> CachedToken | None:
        """The stored token of this store's API user, or ``None``: nothing stored, an unreadable
        entry, or an entry for another base URL or API user (or naming none, when the store is bound)."""
        token = self._read()
        if token is None or not self._owns(token):
            return None
        return token

    def save(self, token: CachedToken) -> None:
        """Store ``token``, stamped with this store's base URL and API user.

        Raises ``ValueError`` when ``token`` already names another base URL or API user.
        """
        self._write(self._stamp(token))

    def renew(
        self,
        fetch: Callable[[], CachedToken],
        *,
        rejected: str | None = None,
        min_seconds_left: float = DEFAULT_MIN_SECONDS_LEFT,
        wait_seconds: float = LOGIN_WAIT_SECONDS,
    ) -> CachedToken:
        """Return a token other than ``rejected`` with ``min_seconds_left`` of life, logging in at most
        once for every process sharing the store.

        Under the renewal lock (this process's thread lock, then the store's shared lock): if the
        stored token is usable (not ``rejected``, enough life), return it without calling ``fetch``;
        otherwise call ``fetch()`` (one ``POST /auth``, returning a :class:`CachedToken`), store its
        result and return it. ``rejected``: the access token Koywe just refused (401), or ``None`` when
        renewing for expiry. Raises :class:`TokenRenewalTimeout` when the lock is not held within
        ``wait_seconds``, whatever ``fetch`` raises (nothing is stored then), and ``ValueError`` when
        ``fetch`` returns another API user's token.
        """
        deadline = time.monotonic() + wait_seconds
        lock = self._renewal_thread_lock()
        if not lock.acquire(timeout=max(0.0, wait_seconds)):
            raise TokenRenewalTimeout(f"another thread held the Koywe login lock for over {wait_seconds:g} s")
        try:
            with self._shared_lock(deadline):
                current = self.load()
                if current is not None and current.usable(
                    rejected=rejected, min_seconds_left=min_seconds_left
                ):
                    return current
                token = self._stamp(fetch())
                self._write(token)
                return token
        finally:
            lock.release()


class MemoryTokenStore(_OwnedTokenStore):
    """A token store local to this object; for tests, scripts, ``test_connection`` and the benchmark.

    ``base_url`` / ``api_user`` (both or neither) bind it to one API user; unbound, it keeps whatever
    it is given. :meth:`renew` is single-flight among the threads sharing this object.
    """

    def __init__(self, *, base_url: str | None = None, api_user: str | None = None) -> None:
        super().__init__(base_url=base_url, api_user=api_user)
        self._token: CachedToken | None = None
        self._lock = threading.Lock()
        self._renew_lock = threading.Lock()

    def _read(self) -> CachedToken | None:
        with self._lock:
            return self._token

    def _write(self, token: CachedToken) -> None:
        with self._lock:
            self._token = token

    def _lock_name(self) -> str:
        return f"memory:{id(self)}"

    def _renewal_thread_lock(self) -> threading.Lock:
        return self._renew_lock


class VariableTokenStore(_OwnedTokenStore):
    """Keeps the token in the Airflow Variable ``key`` as JSON ``{access_token, expires_at, base_url, api_user}``.

    Works wherever the Task SDK can read and write Variables (a running task, ``dag.test()``).
    A missing, unreadable or corrupt value reads as "no token"; it is never logged. Bound to an API
    user (``base_url`` and ``api_user``), it ignores a value saved for another one, or naming none
    (e.g. one left by the demo's sandbox). :meth:`renew` is single-flight within this process only
    (Variables have no lock): use :class:`SqlTokenStore` or :class:`RedisTokenStore` across processes.
    """

    def __init__(self, key: str, *, base_url: str | None = None, api_user: str | None = None) -> None:
        super().__init__(base_url=base_url, api_user=api_user)
        self.key = key

    def _read(self) -> CachedToken | None:
        from airflow.sdk import Variable

        raw = Variable.get(self.key, default=None)
        if not raw:
            return None
        try:
            return CachedToken.from_json(raw)
        except ValueError:
            log.warning("Ignoring unreadable Koywe token cache in Variable %s", self.key)
            return None

    def _write(self, token: CachedToken) -> None:
        from airflow.sdk import Variable

        Variable.set(self.key, token.to_json(), description="Koywe API token cache, managed by KoyweHook")

    def _lock_name(self) -> str:
        return f"variable:{self.key}"


class SharedLockVariableTokenStore(VariableTokenStore):
    """The Airflow Variable store whose renewal is serialised across processes and hosts through the
    lock of another store (the deployment's shared state: :class:`SqlTokenStore` on the ledger's
    database, or :class:`RedisTokenStore`): one ``POST /auth`` per token life for the whole deployment,
    also when several tasks find the cached token rejected at once. The token itself stays in the
    Variable ``key``."""

    def __init__(
        self,
        key: str,
        *,
        lock_store: _OwnedTokenStore,
        base_url: str | None = None,
        api_user: str | None = None,
    ) -> None:
        super().__init__(key, base_url=base_url, api_user=api_user)
        self._lock_store = lock_store

    def _shared_lock(self, deadline: float) -> contextlib.AbstractContextManager[None]:
        return self._lock_store._shared_lock(deadline)


def variable_key(conn_id: str) -> str:
    """Name of the Variable caching ``conn_id``'s token: ``koywe_token__<conn_id>``."""
    return f"koywe_token__{conn_id}"


# ------------------------------------------------------------------------------- SQL and Redis
_engines: dict[tuple[int, str], Engine] = {}
_engines_guard = threading.Lock()
_SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN IMMEDIATE
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # Writes take the write lock up front; reads (koywe_sqlite_begin="DEFERRED") take none.
    mode = conn.get_execution_options().get("koywe_sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql("BEGIN DEFERRED" if mode == "DEFERRED" else "BEGIN IMMEDIATE")


def _engine_for(url: str) -> Engine:
    """One SQLAlchemy engine per URL and process, with the token tables created."""
    import sqlalchemy as sa
    from sqlalchemy import event

    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    cache_key = (os.getpid(), url)
    with _engines_guard:
        engine = _engines.get(cache_key)
        if engine is not None:
            return engine
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise ValueError(
                    f"a shared SQLite token store needs a file path (sqlite:///path.db), got {url!r}"
                )
            engine = sa.create_engine(parsed, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000})
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        elif parsed.get_backend_name() == "postgresql":
            engine = sa.create_engine(parsed, pool_pre_ping=True)
        else:
            raise ValueError(
                f"SqlTokenStore needs a sqlite:/// or postgresql:// URL, got {parsed.drivername!r}"
            )
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key("koywe_token_tables")}
                )
            conn.execute(
                sa.text(
                    "CREATE TABLE IF NOT EXISTS koywe_token_cache (cache_key VARCHAR(64) PRIMARY KEY, "
                    "entry TEXT NOT NULL, updated_at_ms BIGINT NOT NULL)"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TABLE IF NOT EXISTS koywe_token_login_lock (cache_key VARCHAR(64) PRIMARY KEY, "
                    "holder VARCHAR(64) NOT NULL, expires_at_ms BIGINT NOT NULL)"
                )
            )
        _engines[cache_key] = engine
        return engine


def _advisory_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key, the same in every process."""
    return int.from_bytes(hashlib.sha256(f"koywe|{name}".encode()).digest()[:8], "big", signed=True)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _poll(deadline: float, what: str) -> None:
    if time.monotonic() >= deadline:
        raise TokenRenewalTimeout(f"{what} was held by another process past the wait")
    time.sleep(_POLL_SECONDS * (0.5 + random.random()))


class SqlTokenStore(_OwnedTokenStore):
    """The token of one API user in a SQLite file or PostgreSQL database (table ``koywe_token_cache``).

    ``url``: a SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://…``, ``postgresql+psycopg2://…``),
    typically the ledger's. The renewal lock is a row of ``koywe_token_login_lock`` with a lease of
    ``lease_seconds`` on SQLite (taken over when its holder died), and a session advisory lock on
    PostgreSQL (released by the server when its holder dies). Tables are created on first use.
    Raises ``ValueError`` for another kind of URL.
    """

    def __init__(
        self, url: str, *, base_url: str, api_user: str, lease_seconds: float = LOGIN_LOCK_LEASE_SECONDS
    ) -> None:
        super().__init__(base_url=base_url, api_user=api_user)
        self.url = url
        self.lease_seconds = lease_seconds
        self.cache_key = _digest(api_user_key(base_url, api_user))
        self._engine = _engine_for(url)

    def _lock_name(self) -> str:
        return f"sql:{self.url}:{self.cache_key}"

    def _read(self) -> CachedToken | None:
        import sqlalchemy as sa

        with self._engine.execution_options(koywe_sqlite_begin="DEFERRED").begin() as conn:
            raw = conn.execute(
                sa.text("SELECT entry FROM koywe_token_cache WHERE cache_key = :k"), {"k": self.cache_key}
            ).scalar()
        if raw is None:
            return None
        try:
            return CachedToken.from_json(raw)
        except ValueError:
            log.warning("Ignoring an unreadable Koywe token cache entry")
            return None

    def _write(self, token: CachedToken) -> None:
        import sqlalchemy as sa

        with self._engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO koywe_token_cache (cache_key, entry, updated_at_ms) VALUES (:k, :e, :t) "
                    "ON CONFLICT (cache_key) DO UPDATE SET entry = excluded.entry, "
                    "updated_at_ms = excluded.updated_at_ms"
                ),
                {"k": self.cache_key, "e": token.to_json(), "t": _now_ms()},
            )

    @contextlib.contextmanager
    def _shared_lock(self, deadline: float) -> Iterator[None]:
        if self._engine.dialect.name == "postgresql":
            with self._advisory_lock(deadline):
                yield
        else:
            with self._lock_row(deadline):
                yield

    @contextlib.contextmanager
    def _advisory_lock(self, deadline: float) -> Iterator[None]:
        import sqlalchemy as sa

        key = _advisory_key(f"login|{self.cache_key}")
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                _poll(deadline, "the Koywe login lock")
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

    @contextlib.contextmanager
    def _lock_row(self, deadline: float) -> Iterator[None]:
        import sqlalchemy as sa

        holder = uuid.uuid4().hex
        while True:
            with self._engine.begin() as conn:  # BEGIN IMMEDIATE: one writer at a time
                row = conn.execute(
                    sa.text("SELECT expires_at_ms FROM koywe_token_login_lock WHERE cache_key = :k"),
                    {"k": self.cache_key},
                ).first()
                now = _now_ms()
                if row is None or row[0] <= now:
                    if row is not None:
                        log.warning("Taking over an expired Koywe login lock (its holder died or hung)")
                    conn.execute(
                        sa.text(
                            "INSERT INTO koywe_token_login_lock (cache_key, holder, expires_at_ms) "
                            "VALUES (:k, :h, :e) ON CONFLICT (cache_key) DO UPDATE SET "
                            "holder = excluded.holder, expires_at_ms = excluded.expires_at_ms"
                        ),
                        {"k": self.cache_key, "h": holder, "e": now + int(self.lease_seconds * 1000)},
                    )
                    break
            _poll(deadline, "the Koywe login lock")
        try:
            yield
        finally:
            with self._engine.begin() as conn:
                conn.execute(
                    sa.text("DELETE FROM koywe_token_login_lock WHERE cache_key = :k AND holder = :h"),
                    {"k": self.cache_key, "h": holder},
                )


class RedisTokenStore(_OwnedTokenStore):
    """The token of one API user in Redis (key ``koywe:token:<hash>``, expiring with the token).

    The renewal lock is a Redis lock (``…:login``) with a lease of ``lease_seconds``.
    """

    def __init__(
        self, url: str, *, base_url: str, api_user: str, lease_seconds: float = LOGIN_LOCK_LEASE_SECONDS
    ) -> None:
        super().__init__(base_url=base_url, api_user=api_user)
        self.url = url
        self.lease_seconds = lease_seconds
        self.redis_key = f"koywe:token:{_digest(api_user_key(base_url, api_user))}"
        self._redis = _redis_for(url)

    def _lock_name(self) -> str:
        return f"redis:{self.url}:{self.redis_key}"

    def _read(self) -> CachedToken | None:
        raw = self._redis.get(self.redis_key)
        if raw is None:
            return None
        try:
            return CachedToken.from_json(raw.decode() if isinstance(raw, bytes) else raw)
        except (ValueError, UnicodeDecodeError):
            log.warning("Ignoring an unreadable Koywe token cache entry")
            return None

    def _write(self, token: CachedToken) -> None:
        ttl_ms = int(token.seconds_left() * 1000)
        if ttl_ms > 0:
            self._redis.set(self.redis_key, token.to_json(), px=ttl_ms)
        else:
            self._redis.delete(self.redis_key)

    @contextlib.contextmanager
    def _shared_lock(self, deadline: float) -> Iterator[None]:
        from redis.exceptions import LockError

        lock = self._redis.lock(
            f"{self.redis_key}:login",
            timeout=self.lease_seconds,
            sleep=_POLL_SECONDS,
            blocking=True,
            blocking_timeout=max(0.0, deadline - time.monotonic()),
            thread_local=False,
        )
        if not lock.acquire():
            raise TokenRenewalTimeout("the Koywe login lock was held by another process past the wait")
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("The Koywe login lock expired before the login finished")


_memory_stores: dict[tuple[str, str], MemoryTokenStore] = {}
_redis_clients: dict[tuple[int, str], Any] = {}


def _redis_for(url: str) -> Any:
    """One Redis client (connection pool) per URL and process."""
    import redis

    cache_key = (os.getpid(), url)
    with _engines_guard:
        client = _redis_clients.get(cache_key)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)
            _redis_clients[cache_key] = client
        return client


def token_store_for(store: Any, *, base_url: str, api_user: str) -> TokenStore:
    """The token store of one API user in ``store`` (the rate budget's URL forms, or a SQLAlchemy
    ``URL`` / ``Engine`` such as the ledger's).

    ``sqlite:///path.db``, ``postgresql://…``, ``postgresql+psycopg2://…``: :class:`SqlTokenStore`;
    ``redis://…``: :class:`RedisTokenStore`; ``memory://``: this process's :class:`MemoryTokenStore`
    of that API user. Cheap to call per hook: engines and Redis clients are shared per process.
    Raises ``ValueError`` for another URL, ``TypeError`` for another kind of object.
    """
    url = store_url(store)
    if url.startswith("memory:"):
        with _thread_locks_guard:
            key = (normalize_base_url(base_url), api_user)
            return _memory_stores.setdefault(key, MemoryTokenStore(base_url=base_url, api_user=api_user))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisTokenStore(url, base_url=base_url, api_user=api_user)
    if url.startswith(("sqlite:", "postgres")):
        return SqlTokenStore(url, base_url=base_url, api_user=api_user)
    raise ValueError(
        "unknown token store (use sqlite:///path.db, postgresql://…, redis://… or memory://): "
        f"{url.split('://', 1)[0]!r}"
    )
