"""The ledger's database: engine, SQLite settings, transactions, migrations and the clock.

Every ledger method opens its own short-lived session and commits before returning: no transaction is
ever held across an HTTP call. Writes on SQLite start with ``BEGIN IMMEDIATE`` (the write lock is taken
up front, so concurrent writers queue on ``busy_timeout`` instead of failing with ``SQLITE_BUSY``
half-way); reads use a deferred ``BEGIN``. On PostgreSQL the claim queries use ``FOR UPDATE SKIP
LOCKED``.

Pure SQLAlchemy + Alembic: nothing here imports Airflow or another part of ``koywe_provider``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from koywe_provider.ledger.models import VERSION_TABLE, as_utc, utcnow

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: ``pg_advisory_xact_lock`` key serialising concurrent :meth:`LedgerDatabase.migrate` calls on PostgreSQL.
MIGRATE_LOCK_KEY = int.from_bytes(b"KOYWLDGR", "big")
#: SQLite ``busy_timeout`` (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: How long :meth:`LedgerDatabase.migrate` keeps retrying while SQLite reports "database is locked"
#: (seconds).
MIGRATE_LOCKED_DEADLINE_SECONDS = 300.0

Clock = Callable[[], datetime]


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy (not pysqlite) decide where transactions begin: see _sqlite_on_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            # Switching a fresh file to WAL needs an exclusive lock and fails at once, without waiting,
            # while another connection (a concurrent migration) writes. The journal mode belongs to the
            # file: that writer or a later connection switches it; this one works in either mode.
            if not _is_locked(exc):
                raise
            log.debug("ledger: journal_mode=WAL postponed, the database is locked")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("koywe_sqlite_begin", "IMMEDIATE")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"bad koywe_sqlite_begin {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _is_locked(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in text or "database table is locked" in text


class LedgerDatabase:
    """The ledger's database connection (SQLite file or PostgreSQL), its migrations and its clock.

    ``url``: SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg2://user@host/db``).
    ``clock``: returns the current time (aware, or naive UTC); every timestamp the ledger writes and
    every lease/due comparison uses it (default: the system clock). ``engine_kwargs`` go to
    :func:`sqlalchemy.create_engine` (``pool_pre_ping=True`` by default). On SQLite every connection
    gets ``busy_timeout=30000``, ``journal_mode=WAL`` and ``foreign_keys=ON``.
    Thread-safe: share one instance per process and URL. Call :meth:`migrate` before first use.
    """

    def __init__(self, url: str | URL, *, clock: Clock | None = None, **engine_kwargs: Any) -> None:
        engine_kwargs.setdefault("pool_pre_ping", True)
        url = sa.make_url(url)
        if url.get_backend_name() == "sqlite":
            connect_args = dict(engine_kwargs.pop("connect_args", {}) or {})
            # pysqlite's own busy handler, effective before the on-connect pragmas run.
            connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
            engine_kwargs["connect_args"] = connect_args
        self.engine: Engine = sa.create_engine(url, **engine_kwargs)
        self.dialect: str = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        self._clock: Clock = clock or utcnow
        self._write: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        self._read: sessionmaker[Session] = sessionmaker(self.reading_engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def reading_engine(self) -> Engine:
        """The engine for read-only work: a deferred ``BEGIN`` on SQLite (no write lock)."""
        return self.engine.execution_options(koywe_sqlite_begin="DEFERRED")

    @property
    def clock(self) -> Clock:
        """The clock the ledger reads (see the class docstring)."""
        return self._clock

    def _now(self) -> datetime:
        now = as_utc(self._clock())
        assert now is not None
        return now

    # ------------------------------------------------------------------------------------ lifecycle
    def migrate(self, *, locked_deadline_seconds: float = MIGRATE_LOCKED_DEADLINE_SECONDS) -> None:
        """Upgrade the schema to the newest Alembic revision (version table ``koywe_alembic_version``).

        Idempotent, and safe to call from several processes at once: the whole upgrade runs in one
        transaction that first takes ``pg_advisory_xact_lock`` on PostgreSQL, or the SQLite write lock
        (``BEGIN IMMEDIATE``) before the current version is read; a later caller then finds the
        database at head and does nothing. On SQLite a "database is locked" error (a busy machine where
        another process held the lock longer than ``busy_timeout``) is retried with a fresh connection
        until ``locked_deadline_seconds`` have passed, then raised.
        """
        deadline = time.monotonic() + locked_deadline_seconds
        delay = 0.05
        while True:
            try:
                self._migrate_once()
                return
            except OperationalError as exc:
                if self.dialect != "sqlite" or not _is_locked(exc) or time.monotonic() >= deadline:
                    raise
                log.warning("ledger migration: SQLite database is locked; retrying in %.2f s", delay)
                self.engine.dispose()
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _migrate_once(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option(
            "sqlalchemy.url", self.engine.url.render_as_string(hide_password=False).replace("%", "%%")
        )
        # engine.begin() on SQLite issues BEGIN IMMEDIATE (see _sqlite_on_begin): the write lock is held
        # before Alembic reads the version table, so two migrators never both see an old revision.
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def current_revision(self) -> str | None:
        """The Alembic revision the database is at (``None`` before :meth:`migrate`)."""
        from alembic.runtime.migration import MigrationContext

        with self.reading_engine.connect() as conn:
            return MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()

    def dispose(self) -> None:
        """Close every pooled connection (the instance stays usable; new connections open on demand)."""
        self.engine.dispose()


__all__ = [
    "MIGRATE_LOCK_KEY",
    "MIGRATIONS_DIR",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Clock",
    "LedgerDatabase",
]
