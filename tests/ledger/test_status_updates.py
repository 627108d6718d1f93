"""Koywe's status news in the ledger: forwards only, states of existing documents, generations."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from koywe_provider.ledger import (
    AttemptRecord,
    DocumentFacts,
    DocumentState,
    Ledger,
    apply_status_reports,
    record_status_change,
)
from koywe_provider.ledger.status_updates import (
    awaiting_taxbureau,
    find_by_koywe_document_id,
    taxbureau_rejections,
)
from koywe_provider.models.statuses import TaxBureauValidationStatus


@pytest.fixture
def issue(ledger: Ledger, seed: Callable[..., list[int]]) -> Callable[..., int]:
    """``issue(koywe_id, **facts)``: a new row issued as Koywe document ``koywe_id``."""
    count = iter(range(1000))

    def make(koywe_id: str, **facts) -> int:
        (pk,) = seed(1, prefix=f"d{next(count)}")
        ledger.claim(pk, owner="w")
        ledger.mark_sent(pk, owner="w", lease_seconds=60)
        facts.setdefault("document_status", 1)
        facts.setdefault("result_status", 0)
        ledger.mark_issued(pk, owner="w", facts=DocumentFacts(koywe_id, facts.pop("number", "1"), **facts))
        return pk

    return make


def test_document_facts_normalise_what_koywe_sends() -> None:
    facts = DocumentFacts(123, 45, "1", TaxBureauValidationStatus.ACCEPTED, taxbureau_validation_status="3")
    assert facts.koywe_document_id == "123" and facts.document_number == "45"
    assert facts.document_status == 1 and type(facts.counterparty_status) is int
    assert facts.taxbureau_validation_status == 3
    assert DocumentFacts().as_dict() == dict.fromkeys(DocumentFacts().as_dict())
    assert not DocumentFacts("None").has_document_id and not DocumentFacts(" ").has_document_id
    callback = DocumentFacts.from_mapping(
        {"document_id": 9, "document_status": 1, "taxbureau_send_status": 1, "taxbureau_validation_status": 4}
    )
    assert (callback.koywe_document_id, callback.taxbureau_sending_status) == ("9", 1)
    with pytest.raises(AttributeError):
        facts.document_status = 2  # type: ignore[misc]


def test_accepted_then_replayed_and_late_message_change_nothing(ledger: Ledger, issue) -> None:
    pk = issue("1000", taxbureau_sending_status=0, taxbureau_validation_status=1)
    final = DocumentFacts(
        "1000", document_status=1, taxbureau_sending_status=1, taxbureau_validation_status=3
    )
    first = apply_status_reports(ledger, [final])
    assert (first.matched, first.changed, first.accepted) == (1, 1, 1)
    replay = apply_status_reports(ledger, [final])
    assert (replay.changed, replay.unchanged) == (0, 1)
    late = DocumentFacts("1000", document_status=1, taxbureau_sending_status=0, taxbureau_validation_status=1)
    assert apply_status_reports(ledger, [late]).changed == 0
    row = ledger.get(pk)
    assert (row["state"], row["taxbureau_sending_status"], row["taxbureau_validation_status"]) == (
        "issued",
        1,
        3,
    )
    (generation,) = ledger.generations_for(pk)  # the record follows the row
    assert (generation["taxbureau_sending_status"], generation["taxbureau_validation_status"]) == (1, 3)


def test_reports_for_one_document_merge_in_any_order(ledger: Ledger, issue) -> None:
    pk = issue("1001", taxbureau_validation_status=0)
    counts = apply_status_reports(
        ledger,
        [
            DocumentFacts("1001", taxbureau_validation_status=4, taxbureau_validation_comments="warning"),
            DocumentFacts("1001", taxbureau_validation_status=1, counterparty_status=2),
        ],
    )
    assert (counts.matched, counts.changed, counts.accepted) == (1, 1, 1)
    row = ledger.get(pk)
    assert (row["taxbureau_validation_status"], row["counterparty_status"]) == (4, 2)
    assert row["taxbureau_validation_comments"] == "warning"


def test_counterparty_status_only_moves_forwards(ledger: Ledger, issue) -> None:
    pk = issue("1002", counterparty_status=1)
    for value, expected in ((2, 2), (1, 2), (3, 3), (0, 3), (2, 3)):
        apply_status_reports(ledger, [DocumentFacts("1002", counterparty_status=value)])
        assert ledger.get(pk)["counterparty_status"] == expected
    assert ledger.get(pk)["document_status"] == 1  # the two document_status fields are never mixed


def test_rejected_by_the_tax_bureau_becomes_rejected_with_comments(ledger: Ledger, issue) -> None:
    pk = issue("1003", taxbureau_validation_status=1)
    report = DocumentFacts(
        "1003", taxbureau_validation_status=5, taxbureau_validation_comments="RUT no autorizado"
    )
    counts = apply_status_reports(ledger, [report])
    assert counts.rejected == 1
    row = ledger.get(pk)
    assert row["state"] == "rejected" and row["last_error_class"] == "taxbureau_rejected"
    assert "RUT no autorizado" in row["last_error"]
    assert [r["id"] for r in ledger.failures()] == [pk]
    assert [r["koywe_document_id"] for r in taxbureau_rejections(ledger)] == ["1003"]
    (generation,) = ledger.generations_for(pk)
    assert generation["outcome"] == "taxbureau_rejected" and generation["ended_at"] is not None
    # an "accepted" arriving after the final rejection does not resurrect it
    assert apply_status_reports(ledger, [DocumentFacts("1003", taxbureau_validation_status=3)]).changed == 0
    assert ledger.get(pk)["state"] == "rejected"


@pytest.mark.parametrize(
    ("news", "state"),
    [
        (DocumentFacts("2000", taxbureau_sending_status=1), "issued"),
        (DocumentFacts("2000", taxbureau_validation_status=3), "issued"),
        (DocumentFacts("2000", taxbureau_validation_status=4), "issued"),
        (DocumentFacts("2000", taxbureau_validation_status=2), "rejected"),
        (DocumentFacts("2000", taxbureau_validation_status=5), "rejected"),
        (DocumentFacts("2000", taxbureau_sending_status=101), "not_sent"),
        (DocumentFacts("2000", counterparty_status=1), "not_sent"),
    ],
)
def test_a_not_sent_document_is_followed_to_the_bureau_s_answer(
    ledger: Ledger, issue, news: DocumentFacts, state: str
) -> None:
    pk = issue("2000", result_status=2, result_error_message="Error 1033")
    assert ledger.get(pk)["state"] == DocumentState.NOT_SENT
    assert awaiting_taxbureau(ledger).koywe_document_ids == ("2000",)
    counts = apply_status_reports(ledger, [news])
    row = ledger.get(pk)
    assert row["state"] == state
    assert counts.not_sent_issued == (state == "issued")
    assert counts.rejected == (state == "rejected")
    if state == "rejected":
        assert row["last_error_class"] == "taxbureau_rejected"
    (generation,) = ledger.generations_for(pk)
    assert (
        generation["outcome"]
        == {"issued": "issued", "rejected": "taxbureau_rejected", "not_sent": "not_sent"}[state]
    )
    assert row["result_status"] == 2 and row["result_error_message"] == "Error 1033"


def test_draft_issued_then_never_back_to_draft(ledger: Ledger, issue) -> None:
    pk = issue("3000", document_status=0)
    assert ledger.get(pk)["state"] == "draft"
    counts = apply_status_reports(
        ledger, [DocumentFacts("3000", document_status=1, taxbureau_validation_status=1)]
    )
    assert counts.drafts_issued == 1 and ledger.get(pk)["state"] == "issued"
    assert apply_status_reports(ledger, [DocumentFacts("3000", document_status=0)]).changed == 0
    assert (ledger.get(pk)["state"], ledger.get(pk)["document_status"]) == ("issued", 1)
    assert [g["outcome"] for g in ledger.generations_for(pk)] == ["issued"]


def test_a_cancellation_is_recorded_and_the_row_stays_issued(ledger: Ledger, issue) -> None:
    pk = issue("3001", taxbureau_validation_status=3)
    counts = apply_status_reports(ledger, [DocumentFacts("3001", document_status=2)])
    assert counts.changed == 1
    row = ledger.get(pk)
    assert (row["state"], row["document_status"]) == ("issued", 2)
    assert apply_status_reports(ledger, [DocumentFacts("3001", document_status=1)]).changed == 0
    assert ledger.generations_for(pk)[0]["document_status"] == 2


def test_news_of_an_earlier_generation_updates_only_its_record(ledger: Ledger, issue) -> None:
    pk = issue("4000", taxbureau_validation_status=1, counterparty_status=1)
    apply_status_reports(ledger, [DocumentFacts("4000", taxbureau_validation_status=5)])
    assert ledger.requeue(states=("rejected",)) == 1
    ledger.claim(pk, owner="w")
    ledger.mark_sent(pk, owner="w", lease_seconds=60)
    ledger.mark_issued(pk, owner="w", facts=DocumentFacts("4001", "2", document_status=1, result_status=0))
    before = ledger.get(pk)

    late = DocumentFacts(
        "4000", counterparty_status=2, taxbureau_validation_comments="late", taxbureau_validation_status=5
    )
    counts = apply_status_reports(ledger, [late, DocumentFacts("4001", taxbureau_validation_status=3)])
    assert (counts.matched, counts.earlier_generations, counts.changed, counts.accepted) == (2, 1, 2, 1)
    after = ledger.get(pk)
    assert after["state"] == "issued" and after["koywe_document_id"] == "4001"
    assert after["counterparty_status"] == before["counterparty_status"]
    first, second = ledger.generations_for(pk)
    assert (first["koywe_document_id"], first["counterparty_status"], first["outcome"]) == (
        "4000",
        2,
        "taxbureau_rejected",
    )
    assert first["taxbureau_validation_comments"] == "late"
    assert (second["koywe_document_id"], second["taxbureau_validation_status"]) == ("4001", 3)
    assert apply_status_reports(ledger, [late]).unchanged == 1
    assert find_by_koywe_document_id(ledger, "4000") is None
    assert find_by_koywe_document_id(ledger, "4000", include_earlier_generations=True)["id"] == pk


def test_unknown_documents_and_missing_ids_are_unmatched(ledger: Ledger, issue) -> None:
    issue("5000")
    counts = apply_status_reports(
        ledger, [DocumentFacts("99999", taxbureau_validation_status=3), DocumentFacts()]
    )
    assert (counts.matched, counts.unmatched, counts.changed) == (0, 2, 0)


def test_record_status_change_keeps_what_koywe_answered(ledger: Ledger, issue) -> None:
    pk = issue("6000", document_status=0)
    answer = DocumentFacts("6000", document_status=1, counterparty_status=1, taxbureau_validation_status=1)
    counts = record_status_change(
        ledger,
        pk,
        answer,
        AttemptRecord("status_update", "issued", http_status=200, duration_ms=9, error="reason: ok"),
    )
    assert counts.drafts_issued == 1
    row = ledger.get(pk)
    assert (row["state"], row["document_status"], row["counterparty_status"]) == ("issued", 1, 1)
    (attempt,) = [a for a in ledger.attempts_for(pk) if a["kind"] == "status_update"]
    assert (attempt["outcome"], attempt["http_status"], attempt["error"], attempt["generation"]) == (
        "issued",
        200,
        "reason: ok",
        1,
    )
    # an answer that does not (yet) show the change records no change
    pk2 = issue("6001", document_status=1)
    record_status_change(
        ledger, pk2, DocumentFacts("6001", document_status=1), AttemptRecord("status_update", "cancelled")
    )
    assert ledger.get(pk2)["document_status"] == 1


def test_record_status_change_is_one_transaction(ledger: Ledger, issue, monkeypatch) -> None:
    from koywe_provider.ledger import status_updates

    pk = issue("6002", document_status=0)

    def broken(*args, **kwargs):
        raise RuntimeError("connection lost")

    monkeypatch.setattr(status_updates, "_apply", broken)
    with pytest.raises(RuntimeError):
        record_status_change(
            ledger, pk, DocumentFacts("6002", document_status=1), AttemptRecord("status_update", "issued")
        )
    assert ledger.get(pk)["document_status"] == 0
    assert [a["kind"] for a in ledger.attempts_for(pk)] == []


def test_record_status_change_on_a_row_found_by_reference(ledger: Ledger, seed, issue) -> None:
    (pk,) = seed(1, prefix="ref")
    record_status_change(
        ledger, pk, DocumentFacts("7000", document_status=2), AttemptRecord("status_update", "cancelled")
    )
    row = ledger.get(pk)
    assert (row["koywe_document_id"], row["document_status"], row["state"]) == ("7000", 2, "pending")
    # a Koywe id another row holds is not copied: the news goes to the row that holds it
    holder = issue("7001", taxbureau_validation_status=1)
    (bare,) = seed(1, prefix="bare")
    record_status_change(
        ledger, bare, DocumentFacts("7001", document_status=2), AttemptRecord("status_update", "cancelled")
    )
    assert ledger.get(bare)["koywe_document_id"] is None
    assert [a["outcome"] for a in ledger.attempts_for(bare)] == ["cancelled"]
    assert ledger.get(holder)["document_status"] == 2


def test_record_status_change_for_an_earlier_generation(ledger: Ledger, issue) -> None:
    """A PUT on generation 1's document while generation 2 is pending: only generation 1's record moves."""
    pk = issue("7100", taxbureau_validation_status=1)
    apply_status_reports(ledger, [DocumentFacts("7100", taxbureau_validation_status=2)])
    ledger.requeue(states=("rejected",))
    counts = record_status_change(
        ledger, pk, DocumentFacts("7100", document_status=2), AttemptRecord("status_update", "cancelled")
    )
    assert (counts.matched, counts.earlier_generations) == (1, 1)
    row = ledger.get(pk)
    assert (row["state"], row["generation"], row["koywe_document_id"], row["document_status"]) == (
        "pending",
        2,
        None,
        None,
    )
    assert [g["document_status"] for g in ledger.generations_for(pk)] == [2, None]
    (attempt,) = [a for a in ledger.attempts_for(pk) if a["kind"] == "status_update"]
    assert attempt["generation"] == 2
