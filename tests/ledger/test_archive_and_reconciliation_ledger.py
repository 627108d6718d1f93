"""Ledger side of the legal archive and the reconciliation, on SQLite and PostgreSQL: revision
0004_archive up/down/up, archive records, what lacks files, callback/polling stamps, stuck rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from koywe_provider.ledger import AttemptRecord, DocumentFacts, Ledger
from koywe_provider.ledger.archive import (
    ArchivedFile,
    archive_files_for,
    archive_summary,
    count_lacking_archive,
    lacking_archive,
    mark_archive_fetched,
    record_archive_files,
)
from koywe_provider.ledger.reconciliation import (
    documents_koywe_should_list,
    known_documents,
    missed_callbacks,
    rows_by_reference,
    stuck_rows,
)
from koywe_provider.ledger.status_updates import apply_status_reports

SHA = "a" * 64


def _alembic(ledger: Ledger, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from koywe_provider.ledger import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with ledger.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def payload(day: str, n: int = 1) -> dict:
    return {"header": {"issue_date": day, "document_type_id": 2, "account_id": "acc1"}, "n": n}


def issued(
    ledger: Ledger, make_item, reference: str, koywe_id: str, *, day: str = "2026-11-20", **facts
) -> int:
    ledger.ingest_many([make_item(reference, payload(day))])
    pk = ledger.get_by_reference("acc1", reference)["id"]
    ledger.claim(pk, owner="w")
    ledger.mark_sent(pk, owner="w", lease_seconds=60)
    ledger.mark_issued(
        pk,
        owner="w",
        facts=DocumentFacts(koywe_id, "7", document_status=1, **facts),
        attempt=AttemptRecord("create", "issued"),
    )
    return pk


def test_0004_downgrade_and_upgrade_again(ledger: Ledger, make_item) -> None:
    pk = issued(ledger, make_item, "A", "100", taxbureau_validation_status=3)
    record_archive_files(
        ledger,
        pk,
        generation=1,
        koywe_document_id="100",
        files=[ArchivedFile("xml", "file:///a.xml", SHA, 3)],
        source="create",
    )
    apply_status_reports(ledger, [DocumentFacts("100", counterparty_status=2)], source="callback")

    _alembic(ledger, "downgrade", "0003")
    assert ledger.current_revision() == "0003"
    inspector = sa.inspect(ledger.engine)
    assert "koywe_archive_files" not in set(inspector.get_table_names())
    columns = {c["name"] for c in inspector.get_columns("koywe_documents")}
    assert not {"last_callback_at", "last_polled_news_at", "archive_fetched_at"} & columns
    with ledger.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT state FROM koywe_documents WHERE reference = 'A'")) == "issued"
        assert conn.scalar(sa.text("SELECT count(*) FROM koywe_attempts")) == 1

    ledger.migrate()
    assert ledger.current_revision() == "0005_notes"  # the newest revision
    assert archive_files_for(ledger, pk) == []  # the records went with the table; the row stays
    assert ledger.get(pk)["last_callback_at"] is None
    _alembic(ledger, "downgrade", "0003")
    _alembic(ledger, "upgrade", "head")
    assert ledger.current_revision() == "0005_notes"


def test_archive_records_replace_and_lacking_files(ledger: Ledger, make_item) -> None:
    a = issued(ledger, make_item, "A", "100")
    b = issued(ledger, make_item, "B", "101")
    c = issued(ledger, make_item, "C", "102", day="2026-11-21")
    ledger.ingest_many([make_item("PENDING", payload("2026-11-20"))])  # no Koywe document: never lacking
    assert {x.reference for x in lacking_archive(ledger)} == {"A", "B", "C"}
    window = {"issue_date_from": "2026-11-20", "issue_date_to": "2026-11-20"}
    assert [(x.reference, x.missing) for x in lacking_archive(ledger, **window)] == [
        ("A", ("xml", "pdf")),
        ("B", ("xml", "pdf")),
    ]
    first = lacking_archive(ledger, **window)[0]
    assert (first.koywe_document_id, first.issue_date, first.document_type_id, first.account_id) == (
        "100",
        "2026-11-20",
        2,
        "acc1",
    )

    record_archive_files(
        ledger,
        a,
        generation=1,
        koywe_document_id="100",
        files=[ArchivedFile("xml", "file:///a.xml", SHA, 3)],
        source="create",
    )
    assert [(x.reference, x.missing) for x in lacking_archive(ledger, **window)] == [
        ("A", ("pdf",)),
        ("B", ("xml", "pdf")),
    ]
    files = [ArchivedFile("xml", "file:///a2.xml", "b" * 64, 4), ArchivedFile("pdf", "file:///a.pdf", SHA, 5)]
    assert (
        record_archive_files(ledger, a, generation=1, koywe_document_id="100", files=files, source="fetch")
        == 2
    )
    records = archive_files_for(ledger, a)
    assert [(r["kind"], r["path"], r["sha256"], r["size_bytes"], r["source"]) for r in records] == [
        ("pdf", "file:///a.pdf", SHA, 5, "fetch"),
        ("xml", "file:///a2.xml", "b" * 64, 4, "fetch"),  # the second write replaced the first record
    ]
    mark_archive_fetched(ledger, b)
    assert lacking_archive(ledger, **window) == []
    assert [x.reference for x in lacking_archive(ledger, **window, include_fetched=True)] == ["B"]
    assert count_lacking_archive(ledger) == 1  # C
    assert [x.reference for x in lacking_archive(ledger, account_id="other")] == []
    assert archive_summary(ledger) == {"documents": 1, "files": 2, "bytes": 9}
    with pytest.raises(ValueError, match="source"):
        record_archive_files(ledger, c, generation=1, koywe_document_id="102", files=files, source="guess")
    with pytest.raises(ValueError, match="sha256"):
        ArchivedFile("xml", "p", "short", 1)


def test_callbacks_and_polling_stamp_the_rows(ledger: Ledger, make_item, clock) -> None:
    a = issued(ledger, make_item, "A", "100", taxbureau_validation_status=1)
    b = issued(ledger, make_item, "B", "101", taxbureau_validation_status=1)
    c = issued(ledger, make_item, "C", "102", taxbureau_validation_status=1)

    apply_status_reports(ledger, [DocumentFacts("100", taxbureau_validation_status=3)], source="polling")
    apply_status_reports(
        ledger, [DocumentFacts("101", taxbureau_validation_status=1)], source="polling"
    )  # no news
    apply_status_reports(ledger, [DocumentFacts("102", taxbureau_validation_status=3)], source="sensor")
    polled_at = ledger.get(a)["last_polled_news_at"]
    assert polled_at is not None and ledger.get(b)["last_polled_news_at"] is None
    assert ledger.get(c)["last_polled_news_at"] is not None
    clock.advance(minutes=1)
    # The callback for C arrives late (no news any more): it still counts as delivered.
    counts = apply_status_reports(
        ledger, [DocumentFacts("102", taxbureau_validation_status=3)], source="callback"
    )
    assert counts.unchanged == 1 and ledger.get(c)["last_callback_at"] > ledger.get(c)["last_polled_news_at"]

    window = {"issue_date_from": "2026-11-20", "issue_date_to": "2026-11-20"}
    assert missed_callbacks(ledger, **window, older_than=polled_at) == []  # not old enough yet
    later = clock.advance(hours=7)
    assert [
        r["reference"] for r in missed_callbacks(ledger, **window, older_than=later - timedelta(hours=6))
    ] == ["A"]
    assert missed_callbacks(ledger, issue_date_from="2026-11-21", issue_date_to=None, older_than=later) == []


def test_stuck_rows_and_what_koywe_should_list(ledger: Ledger, make_item, clock) -> None:
    start = clock.freeze()
    pending_bureau = issued(ledger, make_item, "WAIT", "100", taxbureau_validation_status=1)
    issued(ledger, make_item, "DONE", "101", taxbureau_validation_status=3)
    ledger.ingest_many([make_item("UNK", payload("2026-11-20")), make_item("FRESH", payload("2026-11-20"))])
    unk, fresh = (ledger.get_by_reference("acc1", r)["id"] for r in ("UNK", "FRESH"))
    ledger.claim(unk, owner="w")
    ledger.mark_sent(unk, owner="w", lease_seconds=60)
    ledger.mark_unknown(
        unk, owner="w", error="timeout", error_class="T", attempt=AttemptRecord("create", "unknown")
    )
    clock.freeze(start + timedelta(hours=5))
    ledger.claim(fresh, owner="w")
    ledger.mark_sent(fresh, owner="w", lease_seconds=60)
    ledger.mark_unknown(
        fresh, owner="w", error="timeout", error_class="T", attempt=AttemptRecord("create", "unknown")
    )
    now = clock.freeze(start + timedelta(hours=7))

    stuck = stuck_rows(
        ledger, issue_date_from="2026-11-20", issue_date_to="2026-11-20", older_than=now - timedelta(hours=6)
    )
    assert [(r["reference"], r["stuck"], r["since"]) for r in stuck] == [
        ("WAIT", "bureau_pending", start),
        ("UNK", "unknown", start),  # since its first POST, not since its last change
    ]
    assert stuck_rows(ledger, issue_date_from="2026-11-21", issue_date_to=None, older_than=now) == []

    expected = documents_koywe_should_list(ledger, issue_date_from="2026-11-20", issue_date_to="2026-11-20")
    assert [r["reference"] for r in expected] == ["WAIT", "DONE"]
    assert (
        documents_koywe_should_list(
            ledger, issue_date_from="2026-11-20", issue_date_to="2026-11-20", issued_before=start
        )
        == []
    )  # issued while Koywe's list was read: not expected in it
    known = known_documents(ledger, ["100", "999"])
    assert set(known) == {"100"} and known["100"].row["id"] == pending_bureau
    assert set(rows_by_reference(ledger, [("acc1", "UNK"), ("acc2", "UNK")])) == {("acc1", "UNK")}


def test_known_documents_finds_earlier_generations(ledger: Ledger, make_item) -> None:
    pk = issued(ledger, make_item, "G", "200", taxbureau_validation_status=1)
    apply_status_reports(ledger, [DocumentFacts("200", taxbureau_validation_status=5)])  # bureau rejected
    assert ledger.get(pk)["state"] == "rejected"
    ledger.requeue(["G"])
    assert ledger.get(pk)["generation"] == 2
    known = known_documents(ledger, ["200"])
    assert known["200"].earlier_generation == 1 and known["200"].row["id"] == pk


def test_a_write_refuses_an_unknown_row(ledger: Ledger) -> None:
    from koywe_provider.ledger import DocumentNotFoundError

    with pytest.raises(DocumentNotFoundError):
        record_archive_files(
            ledger,
            999,
            generation=1,
            koywe_document_id="1",
            files=[ArchivedFile("pdf", "p", SHA, 1)],
            source="fetch",
        )
