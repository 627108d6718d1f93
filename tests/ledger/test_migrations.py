"""Alembic migrations: idempotent, concurrent-safe, and in agreement with the ORM models."""

from __future__ import annotations

import threading
from collections.abc import Callable

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from koywe_provider.ledger import VERSION_TABLE, Base, Ledger
from koywe_provider.ledger.models import include_name

HEAD = "0002"  # newest revision in koywe_provider/ledger/migrations/versions


def _tables(ledger: Ledger) -> set[str]:
    return set(sa.inspect(ledger.engine).get_table_names())


def test_migrate_twice(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    assert ledger.current_revision() is None
    ledger.migrate()
    ledger.migrate()
    assert ledger.current_revision() == HEAD
    tables = _tables(ledger)
    assert {"koywe_documents", "koywe_attempts", "koywe_ingest_conflicts", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # Airflow's own version table is left alone
    with ledger.engine.connect() as conn:
        assert conn.scalars(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all() == [HEAD]


def test_migrate_concurrently(make_ledger: Callable[..., Ledger]) -> None:
    ledgers = [make_ledger() for _ in range(4)]
    barrier = threading.Barrier(len(ledgers))
    errors: list[BaseException] = []

    def run(ledger: Ledger) -> None:
        try:
            barrier.wait()
            ledger.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ledger,)) for ledger in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert ledgers[0].current_revision() == HEAD
    with ledgers[0].engine.connect() as conn:
        assert conn.scalar(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")) == 1


def test_models_match_migration(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={"version_table": VERSION_TABLE, "include_name": include_name, "compare_type": True},
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_schema_shape(ledger: Ledger) -> None:
    inspector = sa.inspect(ledger.engine)
    indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("koywe_documents")}
    assert {("state",), ("next_attempt_at",), ("state", "next_attempt_at")} <= indexes
    uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("koywe_documents")}
    assert ("account_id", "reference") in uniques
    uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("koywe_ingest_conflicts")}
    assert ("account_id", "reference", "payload_hash") in uniques
    fks = inspector.get_foreign_keys("koywe_attempts")
    assert fks[0]["referred_table"] == "koywe_documents" and fks[0]["constrained_columns"] == ["document_pk"]


def test_schema_comparison_would_notice_a_difference(ledger: Ledger) -> None:
    """Control for the test above: the comparison does look at the ledger tables."""
    altered = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(altered)
    altered.tables["koywe_documents"].append_column(sa.Column("extra_column", sa.Integer, nullable=True))
    with ledger.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "include_name": include_name}
        )
        diff = compare_metadata(context, altered)
    assert [d[0] for d in diff] == ["add_column"]
