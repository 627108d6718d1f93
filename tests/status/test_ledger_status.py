"""Tax-bureau and document statuses in the ledger: forwards only, idempotent, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from koywe_provider.ledger import DocumentFacts, IngestItem, Ledger
from koywe_provider.ledger.status_updates import (
    apply_status_reports,
    awaiting_taxbureau,
    taxbureau_rejections,
)


@pytest.fixture
def ledger(ledger_on_each_backend):
    return ledger_on_each_backend


def issued(
    ledger: Ledger, reference: str, koywe_id: str, *, document_status=1, validation=1, date="2026-11-20"
):
    payload = {"header": {"account_id": 1, "issue_date": date}}
    ledger.ingest_many([IngestItem(reference, "1", payload, None, "inbox.jsonl", 1)])
    row = ledger.get_by_reference("1", reference)
    ledger.mark_issued(
        row["id"],
        facts=DocumentFacts(
            koywe_document_id=koywe_id,
            document_number="1",
            document_status=document_status,
            taxbureau_sending_status=0,
            taxbureau_validation_status=validation,
        ),
    )
    return row["id"]


def report(koywe_id, document_status, sending, validation, comments):
    return DocumentFacts(
        koywe_id,
        document_status=document_status,
        taxbureau_sending_status=sending,
        taxbureau_validation_status=validation,
        taxbureau_validation_comments=comments,
    )


def test_accepted_then_replayed_and_late_message_change_nothing(ledger):
    pk = issued(ledger, "R1", "1000")
    final = report("1000", 1, 1, 3, "")
    first = apply_status_reports(ledger, [final])
    assert (first.matched, first.changed, first.accepted) == (1, 1, 1)
    replay = apply_status_reports(ledger, [final])
    assert (replay.changed, replay.unchanged) == (0, 1)
    late = apply_status_reports(ledger, [report("1000", 1, 0, 1, None)])
    assert late.changed == 0
    row = ledger.get(pk)
    assert (row["state"], row["taxbureau_sending_status"], row["taxbureau_validation_status"]) == (
        "issued",
        1,
        3,
    )


def test_rejected_by_the_tax_bureau_becomes_rejected_with_comments(ledger):
    pk = issued(ledger, "R2", "1001")
    counts = apply_status_reports(ledger, [report("1001", 1, 1, 5, "RUT receptor no autorizado")])
    assert counts.rejected == 1
    row = ledger.get(pk)
    assert row["state"] == "rejected"
    assert row["last_error_class"] == "taxbureau_rejected"
    assert "RUT receptor no autorizado" in row["last_error"]
    assert row["taxbureau_validation_comments"] == "RUT receptor no autorizado"
    assert [r["id"] for r in ledger.failures()] == [pk]  # the report lists it
    assert [r["koywe_document_id"] for r in taxbureau_rejections(ledger)] == ["1001"]
    # an "accepted" arriving after the final rejection does not resurrect it
    assert apply_status_reports(ledger, [report("1001", 1, 1, 3, "")]).changed == 0
    assert ledger.get(pk)["state"] == "rejected"


def test_draft_issued_then_never_back_to_draft(ledger):
    pk = issued(ledger, "R3", "1002", document_status=0, validation=None)
    assert ledger.get(pk)["state"] == "draft"
    counts = apply_status_reports(ledger, [report("1002", 1, 0, 1, None)])
    assert counts.drafts_issued == 1
    assert ledger.get(pk)["state"] == "issued"
    assert apply_status_reports(ledger, [report("1002", 0, None, None, None)]).changed == 0
    assert (ledger.get(pk)["state"], ledger.get(pk)["document_status"]) == ("issued", 1)


def test_awaiting_window_and_unknown_documents(ledger):
    issued(ledger, "A", "2000", date="2026-11-18")
    issued(ledger, "B", "2001", date="2026-11-21")
    issued(ledger, "C", "2002", validation=3, date="2026-11-01")
    awaiting = awaiting_taxbureau(ledger)
    assert (awaiting.count, awaiting.issue_date_from, awaiting.issue_date_to) == (
        2,
        "2026-11-18",
        "2026-11-21",
    )
    assert apply_status_reports(ledger, [report("99999", 1, 1, 3, "")]).unmatched == 1
