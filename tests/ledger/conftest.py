"""Fixtures of the ledger tests: every test runs on SQLite (a temporary file) and on PostgreSQL.

PostgreSQL: one throwaway database ``koywe_ledger_test_<random>`` per test session on
``KOYWE_LEDGER_TEST_PG_URL`` (default ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``), dropped
at the end; each test starts from an empty schema. When the server is unreachable the PostgreSQL tests
are skipped, or fail when ``CI == "true"``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from koywe_provider.ledger import IngestItem, Ledger

PG_ADMIN_URL = os.environ.get(
    "KOYWE_LEDGER_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
LEDGER_TABLES = (
    "koywe_archive_files",
    "koywe_payload_history",
    "koywe_document_generations",
    "koywe_attempts",
    "koywe_ingest_conflicts",
    "koywe_documents",
    "koywe_accounts",
    "koywe_alembic_version",
)


def _admin_engine() -> sa.Engine:
    return sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5}
    )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of this session's throwaway PostgreSQL database."""
    admin = _admin_engine()
    safe = make_url(PG_ADMIN_URL).render_as_string(hide_password=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        reason = f"PostgreSQL not reachable at {safe}: {type(exc).__name__}: {str(exc).strip()[:200]}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the PostgreSQL ledger tests must run)", pytrace=False)
        pytest.skip(reason)
    name = f"koywe_ledger_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_pg(url: str) -> None:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for table in LEDGER_TABLES:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> str:
    """An empty (un-migrated) ledger database on ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url = request.getfixturevalue("pg_url")
    _reset_pg(url)
    return url


class LedgerClock:
    """The ledger's clock in tests: the real time plus an offset, or a frozen instant.

    ``advance(minutes=5)`` moves it forward (a lease expires without sleeping); ``freeze(at)`` stops it
    (``at`` defaults to the current reading) so timestamps can be compared exactly.
    """

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        if self.frozen is not None:
            return self.frozen
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> datetime:
        step = timedelta(**delta)
        if self.frozen is not None:
            self.frozen += step
        else:
            self.offset += step
        return self()

    def freeze(self, at: datetime | None = None) -> datetime:
        self.frozen = at or self()
        return self.frozen


@pytest.fixture
def clock() -> LedgerClock:
    """The clock of the ``ledger`` fixture (and of every ``make_ledger()`` instance by default)."""
    return LedgerClock()


@pytest.fixture
def make_ledger(db_url: str, clock: LedgerClock) -> Iterator[Callable[..., Ledger]]:
    """Factory of extra :class:`Ledger` instances on the test database (disposed at teardown), all
    reading the ``clock`` fixture unless given another ``clock``."""
    made: list[Ledger] = []

    def factory(**kwargs: Any) -> Ledger:
        kwargs.setdefault("clock", clock)
        ledger = Ledger(db_url, **kwargs)
        made.append(ledger)
        return ledger

    yield factory
    for ledger in made:
        ledger.dispose()


@pytest.fixture
def ledger(make_ledger: Callable[..., Ledger]) -> Ledger:
    """A migrated, empty ledger."""
    instance = make_ledger()
    instance.migrate()
    return instance


def item(
    reference: str | None,
    payload: dict | None = None,
    *,
    account_id: str = "acc1",
    source: str = "file:///inbox/a.jsonl",
    line_no: int | None = 1,
    error: str | None = None,
    error_field: str | None = None,
    raw_line: str | None = None,
    payload_hash: str | None = None,
) -> IngestItem:
    """Build an :class:`IngestItem` (valid unless ``error`` is given)."""
    if payload is None and error is None:
        payload = {"ref": reference, "amount": 100}
    return IngestItem(
        reference=reference,
        account_id=account_id,
        payload=payload,
        payload_hash=payload_hash,
        source=source,
        line_no=line_no,
        error=error,
        error_field=error_field,
        raw_line=raw_line,
    )


@pytest.fixture
def make_item() -> Callable[..., IngestItem]:
    return item


@pytest.fixture
def seed(ledger: Ledger) -> Callable[..., list[int]]:
    """``seed(n, prefix="r")``: ingest ``n`` valid documents and return their ids in order."""

    def _seed(n: int, prefix: str = "r", run_id: str | None = "run-1") -> list[int]:
        counts = ledger.ingest_many(
            (item(f"{prefix}-{i:06d}", {"n": i}, line_no=i + 1) for i in range(n)), run_id=run_id
        )
        assert counts.added == n
        with ledger.engine.connect() as conn:
            return list(
                conn.scalars(
                    sa.text("SELECT id FROM koywe_documents WHERE reference LIKE :p ORDER BY id"),
                    {"p": f"{prefix}-%"},
                )
            )

    return _seed
