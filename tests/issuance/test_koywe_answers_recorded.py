"""Koywe's answers recorded as Koywe means them: one test per case of the "One Koywe vocabulary" issue,
each through the sandbox over HTTP with a real SQLite ledger.

| case | what must happen |
|---|---|
| a 2xx without ``document_id`` | ``unknown``: looked up before anything is sent again |
| a document adopted by a lookup (flat list items) | folio and statuses kept |
| a lookup match with other content | not adopted: an alarm naming both, the row held, nothing sent |
| a bureau-rejected document, fixed and re-queued | the fix is issued as a new generation |
| ``result.status == 2`` | its own state, followed to a final bureau status |
| a ``PUT`` answered with a status short of the target | Koywe's answer recorded, then followed |
| ``header.document_status`` 2 or 3 | the counterparty's view, never "cancelled" |
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from koywe_provider.ledger import DocumentFacts, IngestItem
from koywe_provider.ledger.status_updates import apply_status_reports
from koywe_provider.models.references import internal_reference_numbers
from koywe_provider.services.status_changes import StatusChanger
from koywe_provider.services.taxbureau import TaxBureauPoller
from koywe_test_support import mexico_ingreso, peru_factura

LATER = datetime.now(UTC) + timedelta(days=1)
RETRY = ("retryable", "unknown", "in_flight")


def created_under(sandbox, reference: str) -> list[dict]:
    return [d for d in sandbox.documents() if reference in internal_reference_numbers(d)]


def test_a_2xx_without_document_id_is_unknown_and_looked_up_before_any_resend(
    ledger, ingest, make_issuer, clean_sandbox, factura
):
    pk = ingest(ledger, {"NOID-1": factura()})["NOID-1"]
    issuer = make_issuer(ledger)
    clean_sandbox.set_faults(no_document_id_rate=1, no_document_id_body="error")
    first = issuer.issue_range(pk, pk)
    row = ledger.get(pk)
    assert (first.unknown, first.issued) == (1, 0)
    assert row["state"] == "unknown" and row["koywe_document_id"] is None
    assert "without a document_id" in row["last_error"]

    clean_sandbox.set_faults(no_document_id_rate=0)
    second = issuer.issue_range(pk, pk, states=RETRY, due_before=LATER)
    assert (second.lookups, second.issued) == (1, 1)  # looked up first, found nothing, then sent once
    row = ledger.get(pk)
    assert row["state"] == "issued" and row["koywe_document_id"] not in (None, "None")
    assert len(created_under(clean_sandbox, "NOID-1")) == 1


def test_an_adopted_document_keeps_folio_and_statuses_from_flat_list_items(
    ledger, ingest, make_issuer, clean_sandbox, factura
):
    pk = ingest(ledger, {"LOST-1": factura()})["LOST-1"]
    issuer = make_issuer(ledger)
    clean_sandbox.set_faults(lost_response_rate=1)  # created at Koywe, the answer never arrives
    assert issuer.issue_range(pk, pk).unknown == 1
    clean_sandbox.set_faults(lost_response_rate=0, list_items="flat", list_shape="flat")
    outcome = issuer.issue_range(pk, pk, states=RETRY, due_before=LATER)
    (at_koywe,) = created_under(clean_sandbox, "LOST-1")
    row = ledger.get(pk)
    assert (outcome.adopted, outcome.issued, outcome.lookups) == (1, 0, 1)
    assert row["state"] == "issued"
    assert row["koywe_document_id"] == str(at_koywe["document_id"])
    assert row["document_number"] == str(at_koywe["header"]["document_number"])
    assert row["document_status"] == 1
    assert row["taxbureau_validation_status"] == at_koywe["header"]["taxbureau_validation_status"]
    assert ledger.attempts_for(pk)[-1]["outcome"] == "adopted"


def test_a_match_with_other_content_is_not_adopted_and_nothing_is_sent(
    ledger, ingest, make_issuer, clean_sandbox, factura
):
    pk = ingest(ledger, {"MISMATCH-1": factura()})["MISMATCH-1"]
    issuer = make_issuer(ledger)
    clean_sandbox.set_faults(no_document_id_rate=1)
    assert issuer.issue_range(pk, pk).unknown == 1
    clean_sandbox.set_faults(no_document_id_rate=0)
    # Someone else's document under our reference: another receiver and another total.
    other = copy.deepcopy(factura(net=20_000))
    other["header"]["receiver_tax_id_code"] = "77123456-K"
    other["references"] = [{"reference_code": 5, "reference_number": "MISMATCH-1"}]
    planted = clean_sandbox.plant_document(other)
    created_before = clean_sandbox.stats()["documents_created"]

    outcome = issuer.issue_range(pk, pk, states=RETRY, due_before=LATER)
    row = ledger.get(pk)
    assert (outcome.mismatch_alarms, outcome.adopted, outcome.issued) == (1, 0, 0)
    assert row["state"] == "dead" and row["last_error_class"] == "ContentMismatchAlarm"
    assert row["koywe_document_id"] is None
    message = row["last_error"]
    assert f"Koywe document {planted['document_id']}" in message and "'MISMATCH-1'" in message
    assert "receiver_tax_id: ours 967902403, Koywe's 77123456K" in message
    assert "total_amount: ours 11900, Koywe's 23800" in message
    assert clean_sandbox.stats()["documents_created"] == created_before  # nothing was sent
    # a later retry run does not pick a held row
    assert issuer.issue_range(pk, pk, states=RETRY, due_before=LATER).lookups == 0


def test_a_bureau_rejected_document_fixed_is_issued_as_a_new_generation(
    ledger, ingest, make_issuer, clean_sandbox
):
    bad = peru_factura()
    pk = ingest(ledger, {"PE-GEN-1": bad}, account_id=str(bad["header"]["account_id"]))["PE-GEN-1"]
    issuer = make_issuer(ledger)
    clean_sandbox.reject_references("PE-GEN-1")  # Peru validates synchronously: rejected at once
    first = issuer.issue_range(pk, pk)
    row = ledger.get(pk)
    assert first.rejected == 1
    assert (row["state"], row["last_error_class"], row["taxbureau_validation_status"]) == (
        "rejected",
        "taxbureau_rejected",
        5,
    )
    rejected_id = row["koywe_document_id"]

    # The fix arrives as a corrected inbox line: a new payload under the same ledger reference.
    fixed = copy.deepcopy(bad)
    fixed["details"][0]["line_description"] = "Servicio corregido"
    counts = ledger.ingest_many(
        [IngestItem("PE-GEN-1", str(bad["header"]["account_id"]), fixed, None, "fix.jsonl", 1)]
    )
    assert counts.replaced == 1
    row = ledger.get(pk)
    assert (row["state"], row["generation"], row["koywe_document_id"]) == ("pending", 2, None)

    second = issuer.issue_range(pk, pk)
    row = ledger.get(pk)
    assert (second.issued, second.adopted, second.lookups) == (1, 0, 0)
    assert row["state"] == "issued" and row["koywe_document_id"] != rejected_id
    assert len(created_under(clean_sandbox, "PE-GEN-1")) == 1  # the rejected generation, never adopted back
    (new,) = created_under(clean_sandbox, "PE-GEN-1~2")
    assert str(new["document_id"]) == row["koywe_document_id"]
    assert "Servicio corregido" in new["details"][0]["line_description"]
    generations = ledger.generations_for(pk)
    assert [(g["generation"], g["koywe_reference"], g["koywe_document_id"]) for g in generations] == [
        (1, "PE-GEN-1", rejected_id),
        (2, "PE-GEN-1~2", row["koywe_document_id"]),
    ]
    assert generations[0]["taxbureau_validation_status"] == 5


def test_a_requeued_rejection_is_a_new_generation_whose_lookup_ignores_the_old_one(
    ledger, ingest, make_issuer, clean_sandbox
):
    document = peru_factura()
    account = str(document["header"]["account_id"])
    pk = ingest(ledger, {"PE-RQ-1": document}, account_id=account)["PE-RQ-1"]
    issuer = make_issuer(ledger)
    clean_sandbox.reject_references("PE-RQ-1")
    issuer.issue_range(pk, pk)
    assert ledger.requeue(["PE-RQ-1"], states=("rejected",)) == 1
    # the new generation is lost once in transit, so the retry must look up: it finds only "PE-RQ-1~2"
    clean_sandbox.set_faults(lost_response_rate=1)
    assert issuer.issue_range(pk, pk).unknown == 1
    clean_sandbox.set_faults(lost_response_rate=0)
    outcome = issuer.issue_range(pk, pk, states=RETRY, due_before=LATER)
    row = ledger.get(pk)
    (second,) = created_under(clean_sandbox, "PE-RQ-1~2")
    assert (outcome.adopted, row["state"], row["koywe_document_id"]) == (
        1,
        "issued",
        str(second["document_id"]),
    )


def test_result_status_2_is_not_sent_then_followed_to_the_bureau_answer(
    ledger, ingest, make_issuer, clean_sandbox, factura
):
    pk = ingest(ledger, {"RS2-1": factura()})["RS2-1"]
    issuer = make_issuer(ledger)
    clean_sandbox.set_faults(result_status_2_rate=1)
    outcome = issuer.issue_range(pk, pk)
    row = ledger.get(pk)
    assert (outcome.not_sent, outcome.issued, outcome.rejected) == (1, 0, 0)
    assert (row["state"], row["result_status"]) == ("not_sent", 2)
    assert row["koywe_document_id"] and row["document_number"]
    assert "1033" in row["result_error_message"]
    # never sent again under the same reference
    assert issuer.issue_range(pk, pk, states=RETRY, due_before=LATER).lookups == 0

    poller = TaxBureauPoller(issuer.hook, ledger)
    assert poller.poll().awaiting == 1  # followed: nothing final yet
    clean_sandbox.validate([int(row["koywe_document_id"])])
    polled = poller.poll()
    row = ledger.get(pk)
    assert polled.not_sent_issued == 1
    assert (row["state"], row["taxbureau_validation_status"]) == ("issued", 3)
    assert len(created_under(clean_sandbox, "RS2-1")) == 1


def test_a_put_answer_is_recorded_as_koywe_gives_it_and_followed(ledger, ingest, make_issuer, clean_sandbox):
    document = mexico_ingreso()
    account = str(document["header"]["account_id"])
    pk = ingest(ledger, {"MX-CXL-1": document}, account_id=account)["MX-CXL-1"]
    issuer = make_issuer(ledger)
    issuer.issue_range(pk, pk)
    clean_sandbox.set_validation(cancel_pending_acceptance=True)
    changer = StatusChanger(issuer.hook, ledger, run_id="r", task="t")
    result = changer.change("cancel", reference="MX-CXL-1", reason="duplicate sale")
    row = ledger.get(pk)
    assert result.document_status == 1 and result.changed  # Koywe: waiting for the receiver
    assert (row["state"], row["document_status"]) == ("issued", 1)
    assert ledger.attempts_for(pk)[-1]["outcome"] == "pending"

    clean_sandbox.complete_cancellation(row["koywe_document_id"], "accepted")
    counts = apply_status_reports(
        ledger, [DocumentFacts.from_answer(issuer.hook.get_document(row["koywe_document_id"]))]
    )
    assert counts.changed == 1
    assert ledger.get(pk)["document_status"] == 2


def test_header_document_status_is_the_counterparty_view_never_cancelled(
    ledger, ingest, make_issuer, clean_sandbox, factura
):
    pk = ingest(ledger, {"CP-1": factura()})["CP-1"]
    issuer = make_issuer(ledger)
    issuer.issue_range(pk, pk)
    koywe_id = ledger.get(pk)["koywe_document_id"]
    for status in (2, 3):
        clean_sandbox.set_counterparty_status(koywe_id, status)
        apply_status_reports(ledger, [DocumentFacts.from_answer(issuer.hook.get_document(koywe_id))])
        row = ledger.get(pk)
        assert (row["state"], row["document_status"], row["counterparty_status"]) == ("issued", 1, status)


def test_the_ledger_lists_every_generation_of_a_reissued_document(ledger, ingest, make_issuer, clean_sandbox):
    document = peru_factura()
    account = str(document["header"]["account_id"])
    pk = ingest(ledger, {"PE-LIST-1": document}, account_id=account)["PE-LIST-1"]
    issuer = make_issuer(ledger)
    clean_sandbox.reject_references("PE-LIST-1")
    issuer.issue_range(pk, pk)
    ledger.requeue(["PE-LIST-1"], states=("rejected",))
    issuer.issue_range(pk, pk)
    (row,) = ledger.reissued()
    assert (row["reference"], row["state"], row["generation"]) == ("PE-LIST-1", "issued", 2)
    assert [(g["koywe_reference"], g["taxbureau_validation_status"]) for g in row["generations"]] == [
        ("PE-LIST-1", 5),
        ("PE-LIST-1~2", 3),
    ]
