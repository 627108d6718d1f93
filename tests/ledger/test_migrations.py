"""Alembic migrations: idempotent, concurrent-safe, and in agreement with the ORM models."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from koywe_provider.ledger import VERSION_TABLE, Base, Ledger
from koywe_provider.ledger.models import include_name

HEAD = "0005_notes"  # newest revision in koywe_provider/ledger/migrations/versions


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


# --- revision 0003: generations ------------------------------------------------------------------
def _alembic(ledger: Ledger, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from koywe_provider.ledger import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with ledger.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


_INSERT_0002 = sa.text(
    "INSERT INTO koywe_documents (account_id, reference, state, payload_hash, source, attempts,"
    " koywe_document_id, document_number, taxbureau_validation_status, last_error_class, created_at,"
    " updated_at) VALUES ('a', :ref, :state, :hash, 's', :attempts, :koywe_id, :number, :validation,"
    " :error_class, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


def _rows_0002(ledger: Ledger, rows: list[dict]) -> None:
    defaults = {"hash": "h", "attempts": 1, "number": None, "validation": None, "error_class": None}
    with ledger.engine.begin() as conn:
        for row in rows:
            conn.execute(_INSERT_0002, {**defaults, **row})


def test_0003_cleans_koywe_ids_and_backfills_generations(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    _alembic(ledger, "upgrade", "0002")
    _rows_0002(
        ledger,
        [
            {"ref": "ISSUED", "state": "issued", "koywe_id": "100", "number": "7", "validation": 3},
            {"ref": "NONE-TEXT", "state": "unknown", "koywe_id": "None", "attempts": 3},
            {"ref": "EMPTY", "state": "unknown", "koywe_id": "", "attempts": 2},
            {"ref": "ALSO-NONE", "state": "unknown", "koywe_id": "None"},  # would break the unique index
            {"ref": "REJ-400", "state": "rejected", "koywe_id": None, "error_class": "KoyweRejectedError"},
            {
                "ref": "REJ-BUREAU",
                "state": "rejected",
                "koywe_id": "101",
                "validation": 5,
                "error_class": "taxbureau_rejected",
            },
            {"ref": "PENDING", "state": "pending", "koywe_id": None, "attempts": 0},
            {"ref": "DRAFT", "state": "draft", "koywe_id": "102"},
        ],
    )
    with ledger.engine.begin() as conn:
        pk = conn.scalar(sa.text("SELECT id FROM koywe_documents WHERE reference = 'ISSUED'"))
        conn.execute(
            sa.text(
                "INSERT INTO koywe_attempts (document_pk, attempted_at, kind, outcome, duration_ms)"
                " VALUES (:pk, CURRENT_TIMESTAMP, 'create', 'issued', 5)"
            ),
            {"pk": pk},
        )
    ledger.migrate()
    assert ledger.current_revision() == HEAD

    def row(ref: str) -> dict:
        found = ledger.get_by_reference("a", ref)
        assert found is not None
        return found

    assert [row(r)["koywe_document_id"] for r in ("NONE-TEXT", "EMPTY", "ALSO-NONE")] == [None] * 3
    assert row("ISSUED")["koywe_document_id"] == "100"
    assert {
        (r, row(r)["generation"], row(r)["generation_sends"]) for r in ("ISSUED", "NONE-TEXT", "PENDING")
    } == {
        ("ISSUED", 1, 1),
        ("NONE-TEXT", 1, 3),
        ("PENDING", 1, 0),
    }
    assert row("ISSUED")["counterparty_status"] is None and row("ISSUED")["result_error_message"] is None
    assert [a["generation"] for a in ledger.attempts_for(pk)] == [1]
    backfilled = {
        ref: [
            (g["generation"], g["koywe_reference"], g["koywe_document_id"], g["outcome"])
            for g in ledger.generations_for(row(ref)["id"])
        ]
        for ref in ("ISSUED", "NONE-TEXT", "REJ-400", "REJ-BUREAU", "PENDING", "DRAFT")
    }
    assert backfilled == {
        "ISSUED": [(1, "ISSUED", "100", "issued")],
        "NONE-TEXT": [],
        "REJ-400": [(1, "REJ-400", None, "rejected")],
        "REJ-BUREAU": [(1, "REJ-BUREAU", "101", "taxbureau_rejected")],
        "PENDING": [],
        "DRAFT": [(1, "DRAFT", "102", "draft")],
    }
    (issued,) = ledger.generations_for(row("ISSUED")["id"])
    assert issued["document_number"] == "7" and issued["taxbureau_validation_status"] == 3
    assert issued["ended_at"] is None and issued["started_at"] is not None
    assert ledger.generations_for(row("REJ-400")["id"])[0]["ended_at"] is not None
    # the unique index is in force
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE koywe_documents SET koywe_document_id = '100' WHERE reference = 'DRAFT'")
        )


def test_0003_refuses_duplicate_koywe_ids(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    _alembic(ledger, "upgrade", "0002")
    _rows_0002(
        ledger,
        [
            {"ref": "A", "state": "issued", "koywe_id": "200"},
            {"ref": "B", "state": "issued", "koywe_id": "200"},
        ],
    )
    with pytest.raises(RuntimeError, match="200 \\(2 rows\\)"):
        ledger.migrate()
    assert ledger.current_revision() == "0002"  # nothing half-done


def test_0003_downgrade_and_upgrade_again(ledger: Ledger, make_item) -> None:
    from koywe_provider.ledger import AttemptRecord, DocumentFacts

    ledger.ingest_many([make_item("NS", {"a": 1}), make_item("REJ", {"b": 1})])
    ns, rej = (ledger.get_by_reference("acc1", r)["id"] for r in ("NS", "REJ"))
    for pk in (ns, rej):
        ledger.claim(pk, owner="w")
        ledger.mark_sent(pk, owner="w", lease_seconds=60)
    ledger.mark_issued(
        ns,
        owner="w",
        facts=DocumentFacts("300", "1", result_status=2),
        attempt=AttemptRecord("create", "not_sent"),
    )
    ledger.mark_rejected(rej, owner="w", error="bad", error_class="KoyweRejectedError")
    ledger.requeue(["REJ"])
    ledger.ingest_many([make_item("REJ", {"b": 2})])  # a correction of the pending generation 2

    _alembic(ledger, "downgrade", "0002")
    assert ledger.current_revision() == "0002"
    inspector = sa.inspect(ledger.engine)
    tables = set(inspector.get_table_names())
    assert "koywe_document_generations" not in tables and "koywe_payload_history" not in tables
    columns = {c["name"] for c in inspector.get_columns("koywe_documents")}
    assert not {"generation", "generation_sends", "counterparty_status", "result_error_message"} & columns
    assert "generation" not in {c["name"] for c in inspector.get_columns("koywe_attempts")}
    indexes = {ix["name"] for ix in inspector.get_indexes("koywe_documents")}
    assert not {"uq_koywe_documents_koywe_document_id", "ix_koywe_documents_reference"} & indexes
    with ledger.engine.connect() as conn:
        states = {r[0]: r[1] for r in conn.execute(sa.text("SELECT reference, state FROM koywe_documents"))}
        attempts = conn.scalar(sa.text("SELECT count(*) FROM koywe_attempts"))
    assert states == {"NS": "issued", "REJ": "pending"}  # a not_sent document exists: never resent
    assert attempts == 1  # the attempts log survives the table rebuilds

    ledger.migrate()
    assert ledger.current_revision() == HEAD
    row = ledger.get(ns)
    assert (row["state"], row["generation"], row["generation_sends"]) == ("issued", 1, 1)
    assert [g["outcome"] for g in ledger.generations_for(ns)] == ["issued"]
    assert [a["generation"] for a in ledger.attempts_for(ns)] == [1]


# --- revision 0005: notes and cancellations ------------------------------------------------------
def test_0005_downgrade_and_upgrade_again(ledger: Ledger, make_item) -> None:
    from koywe_provider.ledger import DocumentFacts

    ledger.ingest_many([make_item("INV", {"totals": {"total_amount": 100}}), make_item("DRAFT", {"d": 1})])
    inv, draft = (ledger.get_by_reference("acc1", r)["id"] for r in ("INV", "DRAFT"))
    for pk, status in ((inv, 1), (draft, 0)):
        ledger.claim(pk, owner="w")
        ledger.mark_sent(pk, owner="w", lease_seconds=60)
        ledger.mark_issued(pk, owner="w", facts=DocumentFacts(str(700 + pk), "1", document_status=status))
    note, _ = ledger.create_note(
        inv, kind="credit_note", payload={"totals": {"total_amount": 40}}, request_key="k"
    )
    ledger.request_cancellation(inv)
    ledger.mark_deleted(draft)
    ledger.register_external(
        account_id="acc1", reference="OLD", payload={"totals": {"total_amount": 9}}, folio="F-1"
    )
    inspector = sa.inspect(ledger.engine)
    assert "ix_koywe_documents_original_pk" in {ix["name"] for ix in inspector.get_indexes("koywe_documents")}

    _alembic(ledger, "downgrade", "0004_archive")
    assert ledger.current_revision() == "0004_archive"
    inspector = sa.inspect(ledger.engine)
    columns = {c["name"] for c in inspector.get_columns("koywe_documents")}
    assert not {"original_pk", "note_kind", "cancellation_status", "cancellation_requested_at"} & columns
    assert "ix_koywe_documents_original_pk" not in {
        ix["name"] for ix in inspector.get_indexes("koywe_documents")
    }
    with ledger.engine.connect() as conn:
        states = dict(conn.execute(sa.text("SELECT reference, state FROM koywe_documents")).all())
        errors = dict(conn.execute(sa.text("SELECT reference, last_error_class FROM koywe_documents")).all())
    # 0004's code knows neither "deleted" nor "external": held for a person, never sent automatically
    assert states == {"INV": "issued", "DRAFT": "dead", "OLD": "dead", "INV/NC-1": "pending"}
    assert errors["DRAFT"] == errors["OLD"] == "downgraded"

    ledger.migrate()
    assert ledger.current_revision() == HEAD
    row = ledger.get(note["id"])
    assert (row["original_pk"], row["note_kind"], row["cancellation_status"]) == (None, None, None)
    assert ledger.get(inv)["cancellation_status"] is None  # dropped with the column, nothing invented


# --- migrate() under contention -----------------------------------------------------------------
def test_migrate_waits_for_a_writer_holding_the_lock(
    backend: str, make_ledger: Callable[..., Ledger], tmp_path
) -> None:
    """A fresh SQLite file whose write lock another process holds (rollback-journal mode, so switching
    to WAL cannot happen yet): migrate() waits for the lock instead of failing with "database is
    locked"."""
    if backend != "sqlite":
        pytest.skip("SQLite locking")
    import sqlite3

    ledger = make_ledger()
    holder = sqlite3.connect(ledger.engine.url.database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other_app (a INTEGER)")
    connected = threading.Event()
    sa.event.listen(ledger.engine, "connect", lambda *_: connected.set())
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ledger.migrate()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert connected.wait(60), "migrate() never connected"
    assert thread.is_alive() and ledger.current_revision() is None  # blocked on the lock
    holder.execute("COMMIT")
    holder.close()
    thread.join(120)
    assert not errors, errors
    assert ledger.current_revision() == HEAD


def test_migrate_retries_database_is_locked_until_a_deadline(backend: str, make_ledger, monkeypatch) -> None:
    if backend != "sqlite":
        pytest.skip("the retry is for SQLite's 'database is locked'")
    from sqlalchemy.exc import OperationalError

    ledger = make_ledger()
    real = ledger._migrate_once
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        real()

    monkeypatch.setattr(ledger, "_migrate_once", flaky)
    monkeypatch.setattr("koywe_provider.ledger.database.time.sleep", lambda _s: None)
    ledger.migrate()
    assert len(calls) == 3 and ledger.current_revision() == HEAD

    def always_locked() -> None:
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    monkeypatch.setattr(ledger, "_migrate_once", always_locked)
    with pytest.raises(OperationalError, match="locked"):
        ledger.migrate(locked_deadline_seconds=0)

    def broken() -> None:
        calls.append(1)
        raise OperationalError("SELECT", {}, Exception("no such table: nonsense"))

    calls.clear()
    monkeypatch.setattr(ledger, "_migrate_once", broken)
    with pytest.raises(OperationalError, match="nonsense"):
        ledger.migrate()
    assert len(calls) == 1  # only "locked" is retried


_MIGRATE_IN_A_PROCESS = """
import pathlib, sys, time
from koywe_provider.ledger import Ledger
ledger = Ledger(sys.argv[1])
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
ledger.migrate()
print(ledger.current_revision())
"""


def test_migrate_concurrently_from_processes(
    db_url: str, make_ledger: Callable[..., Ledger], tmp_path
) -> None:
    """Several worker processes starting at once (a deploy) all migrate the same new database."""
    import subprocess
    import sys

    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_IN_A_PROCESS, db_url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    go.touch()
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [err[-2000:] for _, err in results]
    assert [out.strip().splitlines()[-1] for out, _ in results] == [HEAD] * len(procs)
    ledger = make_ledger()
    with ledger.engine.connect() as conn:
        assert conn.scalar(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")) == 1
