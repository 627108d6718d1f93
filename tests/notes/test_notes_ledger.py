"""Notes in the ledger, on SQLite and PostgreSQL: rows tied to their original, what is left to credit
(checked under the original's lock), where a document stands, Mexico cancellations, deleted drafts and
originals issued elsewhere."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from koywe_provider.ledger import (
    AttemptRecord,
    DocumentFacts,
    InvalidTransitionError,
    Ledger,
    NoteExceedsRemainingError,
)
from koywe_provider.ledger.status_updates import apply_status_reports
from koywe_test_support import chile_factura

TOTAL = 11_900  # chile_factura(): 10,000 + 19 % IVA


def credit(amount: int) -> dict:
    """A note payload whose total is ``amount`` (the ledger only reads ``totals.total_amount``)."""
    return {"header": {"document_type_id": 16}, "details": [], "totals": {"total_amount": amount}}


def issued(ledger: Ledger, ingest, reference: str = "INV-1", *, koywe_id: str = "500", **facts) -> int:
    pk = ingest(ledger, {reference: chile_factura()})[reference]
    ledger.claim(pk, owner="t")
    ledger.mark_sent(pk, owner="t", lease_seconds=60)
    ledger.mark_issued(
        pk,
        owner="t",
        facts=DocumentFacts(koywe_document_id=koywe_id, document_number="77", document_status=1, **facts),
    )
    return pk


def test_notes_are_rows_of_their_own_with_derived_references(ledger_on_each_backend, ingest):
    ledger = ledger_on_each_backend
    pk = issued(ledger, ingest)
    first, created = ledger.create_note(
        pk, kind="credit_note", payload=credit(1000), request_key="run-a", run_id="r"
    )
    assert created and (first["reference"], first["state"], first["original_pk"]) == (
        "INV-1/NC-1",
        "pending",
        pk,
    )
    assert (first["account_id"], first["note_kind"], first["source"]) == ("4201", "credit_note", "note:run-a")
    again, created = ledger.create_note(pk, kind="credit_note", payload=credit(1000), request_key="run-a")
    assert not created and again["id"] == first["id"]  # a retried request finds its note
    assert ledger.note_for_request(pk, kind="credit_note", request_key="run-a")["id"] == first["id"]
    second, _ = ledger.create_note(pk, kind="credit_note", payload=credit(500), request_key="run-b")
    debit, _ = ledger.create_note(pk, kind="debit_note", payload=credit(99_999), request_key="run-b")
    assert (second["reference"], debit["reference"]) == ("INV-1/NC-2", "INV-1/ND-1")
    assert [n.reference for n in ledger.notes_of(pk)] == ["INV-1/NC-1", "INV-1/NC-2", "INV-1/ND-1"]


def test_what_is_left_to_credit_counts_notes_issued_or_under_way(ledger_on_each_backend, ingest):
    ledger = ledger_on_each_backend
    pk = issued(ledger, ingest)
    note, _ = ledger.create_note(pk, kind="credit_note", payload=credit(7000), request_key="a")
    position = ledger.credit_position(pk)
    assert (position.status, position.credit_in_progress, position.remaining) == (
        "credit_in_progress",
        7000,
        4900,
    )
    with pytest.raises(
        NoteExceedsRemainingError, match="exceeds what is left to credit on INV-1: 4900"
    ) as caught:
        ledger.create_note(pk, kind="credit_note", payload=credit(5000), request_key="b")
    assert (caught.value.requested, caught.value.remaining) == (Decimal(5000), Decimal(4900))
    assert len(ledger.notes_of(pk)) == 1  # nothing written

    ledger.claim(note["id"], owner="t")
    ledger.mark_sent(note["id"], owner="t", lease_seconds=60)
    ledger.mark_rejected(note["id"], owner="t", error="refused", error_class="KoyweRejectedError")
    assert ledger.credit_position(pk).remaining == TOTAL  # a refused note credits nothing

    part, _ = ledger.create_note(pk, kind="credit_note", payload=credit(4900), request_key="c")
    ledger.claim(part["id"], owner="t")
    ledger.mark_sent(part["id"], owner="t", lease_seconds=60)
    ledger.mark_issued(part["id"], owner="t", facts=DocumentFacts(koywe_document_id="501", document_status=1))
    ledger.create_note(pk, kind="debit_note", payload=credit(300), request_key="c")
    position = ledger.credit_position(pk)
    assert (position.status, position.credited, position.remaining) == ("credited_in_part", 4900, 7000)
    assert (position.debited, position.debit_in_progress) == (0, 300)
    rest, _ = ledger.create_note(pk, kind="credit_note", payload=credit(7000), request_key="d")
    ledger.claim(rest["id"], owner="t")
    ledger.mark_sent(rest["id"], owner="t", lease_seconds=60)
    ledger.mark_issued(rest["id"], owner="t", facts=DocumentFacts(koywe_document_id="502", document_status=1))
    position = ledger.credit_position(pk)
    assert (position.status, position.credited, position.remaining) == ("voided", TOTAL, 0)
    assert position.as_dict()["credited"] == "11900"


def test_two_runs_crediting_at_once_never_exceed_the_total(ledger_on_each_backend, ingest):
    pk = issued(ledger_on_each_backend, ingest)
    url = ledger_on_each_backend.engine.url.render_as_string(hide_password=False)
    ledgers = [Ledger(url) for _ in range(4)]
    barrier = threading.Barrier(len(ledgers))
    outcomes: list[str] = []

    def run(n: int, ledger: Ledger) -> None:
        barrier.wait()
        try:
            ledger.create_note(pk, kind="credit_note", payload=credit(5000), request_key=f"run-{n}")
            outcomes.append("created")
        except NoteExceedsRemainingError:
            outcomes.append("refused")

    threads = [threading.Thread(target=run, args=(n, led)) for n, led in enumerate(ledgers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for ledger in ledgers:
        ledger.dispose()
    assert sorted(outcomes) == ["created", "created", "refused", "refused"]  # 2 x 5000 <= 11,900 < 3 x 5000
    assert ledger_on_each_backend.credit_position(pk).remaining == TOTAL - 10_000
    assert sorted(n.reference for n in ledger_on_each_backend.notes_of(pk)) == ["INV-1/NC-1", "INV-1/NC-2"]


def test_notes_only_modify_issued_documents(ledger_on_each_backend, ingest):
    ledger = ledger_on_each_backend
    pending = ingest(ledger, {"PENDING": chile_factura()})["PENDING"]
    with pytest.raises(InvalidTransitionError, match="PENDING is pending, not an issued document"):
        ledger.create_note(pending, kind="credit_note", payload=credit(1), request_key="x")
    pk = issued(ledger, ingest)
    note, _ = ledger.create_note(pk, kind="credit_note", payload=credit(1), request_key="x")
    with pytest.raises(InvalidTransitionError, match="is itself a credit_note"):
        ledger.create_note(note["id"], kind="credit_note", payload=credit(1), request_key="y")
    with pytest.raises(ValueError):
        ledger.create_note(pk, kind="refund", payload=credit(1), request_key="z")


def test_mexico_cancellation_is_followed_forwards_only(ledger_on_each_backend, ingest):
    ledger = ledger_on_each_backend
    pk = issued(ledger, ingest, koywe_id="900", taxbureau_validation_status=3)
    assert ledger.awaiting_taxbureau().count == 0  # validated: nothing to poll
    assert ledger.request_cancellation(pk) is None
    row = ledger.get(pk)
    assert row["cancellation_status"] == "requested" and row["cancellation_requested_at"] is not None
    assert ledger.awaiting_taxbureau().koywe_document_ids == ("900",)  # an open cancellation is polled
    assert ledger.credit_position(pk).status == "cancellation_pending"

    counts = apply_status_reports(
        ledger, [DocumentFacts(koywe_document_id="900", cancellation_status="pending_acceptance")]
    )
    assert counts.changed == 1 and ledger.get(pk)["cancellation_status"] == "pending_acceptance"
    apply_status_reports(ledger, [DocumentFacts(koywe_document_id="900", cancellation_status="refused")])
    assert ledger.get(pk)["cancellation_status"] == "refused"
    late = apply_status_reports(
        ledger, [DocumentFacts(koywe_document_id="900", cancellation_status="pending_acceptance")]
    )
    assert late.unchanged == 1 and ledger.get(pk)["cancellation_status"] == "refused"  # never backwards
    assert ledger.awaiting_taxbureau().count == 0 and ledger.credit_position(pk).status == "issued"

    assert ledger.request_cancellation(pk) == "refused"  # asked again after a refusal
    counts = apply_status_reports(ledger, [DocumentFacts(koywe_document_id="900", document_status=2)])
    assert (counts.cancelled, ledger.get(pk)["cancellation_status"]) == (1, "cancelled")
    assert ledger.credit_position(pk).status == "voided"
    assert (
        ledger.request_cancellation(pk) == "cancelled"
        and ledger.get(pk)["cancellation_status"] == "cancelled"
    )


def test_a_cancellation_koywe_never_acted_on_is_withdrawn(ledger_on_each_backend, ingest):
    ledger = ledger_on_each_backend
    pk = issued(ledger, ingest)
    before = ledger.request_cancellation(pk)
    assert ledger.withdraw_cancellation_request(pk, before)
    assert ledger.get(pk)["cancellation_status"] is None
    assert not ledger.withdraw_cancellation_request(pk, None)  # only a row still "requested"


def test_deleted_drafts(ledger_on_each_backend, ingest):
    ledger = ledger_on_each_backend
    pk = issued(ledger, ingest)
    with pytest.raises(InvalidTransitionError, match="not a draft"):
        ledger.mark_deleted(pk)
    draft = ingest(ledger, {"DRAFT": chile_factura()})["DRAFT"]
    ledger.claim(draft, owner="t")
    ledger.mark_sent(draft, owner="t", lease_seconds=60)
    ledger.mark_issued(draft, owner="t", facts=DocumentFacts(koywe_document_id="600", document_status=0))
    assert ledger.get(draft)["state"] == "draft"
    assert ledger.mark_deleted(draft, attempt=AttemptRecord("delete", "deleted", http_status=200))
    assert not ledger.mark_deleted(draft)  # again: nothing changes
    assert ledger.get(draft)["state"] == "deleted"
    assert [g["outcome"] for g in ledger.generations_for(draft)] == ["deleted"]
    assert [(a["kind"], a["outcome"]) for a in ledger.attempts_for(draft)][-1] == ("delete", "deleted")
    assert ledger.failures() == [] and ledger.counts_by_state()["deleted"] == 1
    assert ledger.credit_position(draft).status == "deleted"


def test_originals_issued_elsewhere(ledger_on_each_backend):
    ledger = ledger_on_each_backend
    row, created = ledger.register_external(
        account_id="4201", reference="OLD-9", payload=chile_factura(), folio="4711"
    )
    assert created and (row["state"], row["document_number"], row["koywe_document_id"]) == (
        "external",
        "4711",
        None,
    )
    again, created = ledger.register_external(
        account_id="4201", reference="OLD-9", payload=chile_factura(), folio="4711"
    )
    assert not created and again["id"] == row["id"]
    with pytest.raises(InvalidTransitionError, match="already as a external document with folio 4711"):
        ledger.register_external(account_id="4201", reference="OLD-9", payload=chile_factura(), folio="4712")
    note, _ = ledger.create_note(row["id"], kind="credit_note", payload=credit(100), request_key="k")
    assert note["reference"] == "OLD-9/NC-1"
    assert ledger.credit_position(row["id"]).remaining == TOTAL - 100
    assert ledger.failures() == [] and ledger.claim_next(owner="x", limit=10)[0].reference == "OLD-9/NC-1"


def test_the_cli_shows_where_a_document_stands(ledger_on_each_backend, ingest):
    from koywe_provider.cli import show

    ledger = ledger_on_each_backend
    pk = issued(ledger, ingest)
    ledger.create_note(pk, kind="credit_note", payload=credit(900), request_key="cli")
    shown = {row["reference"]: row for row in show(ledger, ["INV-1", "INV-1/NC-1"])}
    position = shown["INV-1"]["credit_position"]
    assert (position["status"], position["credit_in_progress"], position["remaining"]) == (
        "credit_in_progress",
        "900",
        "11000",
    )
    assert [n["reference"] for n in position["notes"]] == ["INV-1/NC-1"]
    assert (shown["INV-1/NC-1"]["original_pk"], shown["INV-1/NC-1"]["note_kind"]) == (pk, "credit_note")
