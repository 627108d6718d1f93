"""Typed Koywe answers: every shape Koywe sends is read, nothing it sends is lost."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from koywe_provider.models.answers import (
    AccountAnswer,
    AuthAnswer,
    DocumentAnswer,
    DocumentContent,
    DocumentPage,
    ErrorBody,
    StatusUpdateEvent,
)
from koywe_provider.models.references import koywe_reference, split_koywe_reference
from koywe_provider.models.statuses import (
    CounterpartyStatus,
    DocumentStatus,
    ResultStatus,
    TaxBureauSendingStatus,
    TaxBureauValidationStatus,
)

RESPONSES = Path(__file__).resolve().parents[2].parent / "shared" / "koywe" / "examples" / "responses"


def koywe_example(name: str):
    path = RESPONSES / name
    if not path.exists():
        pytest.skip(
            f"Koywe's example answers are not here ({path}); they live in the steering repo's shared/"
        )
    return json.loads(path.read_text(encoding="utf-8"))


FULL = {
    "document_id": 377,
    "document_status": "1",
    "header": {
        "account_id": 14540,
        "document_type_id": "82",
        "document_number": 1040447,
        "document_status": 3,
        "taxbureau_validation_status": "4",
        "taxbureau_sending_status": 104,
        "issue_date": "2025-04-15",
        "issuer_tax_id_code": "860.517.022-2",
        "receiver_tax_id_code": "1097491385-1",
        "custom_header_field": "kept",
    },
    "totals": {"net_amount": 3660, "taxes_amount": 695.4, "total_amount": "4355.40"},
    "references": [{"reference_code": "5", "reference_number": "CO-1~2"}, {"reference_code": 801}],
    "result": {"status": 0, "error_message": ""},
    "payment_link": {"payment_url": "https://pay.example/377"},
}


def test_a_full_document_is_read_with_both_document_statuses_apart():
    doc = DocumentAnswer.from_any(FULL)
    assert doc.document_id == "377" and doc.document_number == "1040447"
    assert doc.document_status is DocumentStatus.ISSUED
    assert doc.counterparty_status is CounterpartyStatus.ACCEPTED
    assert doc.taxbureau_validation_status is TaxBureauValidationStatus.ACCEPTED_WITH_WARNINGS
    assert doc.taxbureau_sending_status.is_retrying
    assert doc.result_status is ResultStatus.OK
    assert doc.totals.total_amount == Decimal("4355.40")
    assert doc.owner_account_id == "14540"
    assert doc.internal_references == ["CO-1~2"]
    assert doc.bureau_final
    # unknown fields are kept, at the top and inside the header
    assert doc.model_extra["payment_link"] == {"payment_url": "https://pay.example/377"}
    assert doc.header.model_extra["custom_header_field"] == "kept"


def test_a_flat_list_item_keeps_folio_statuses_and_every_field():
    item = {
        "document_id": "9",
        "document_number": "77",
        "document_type_id": "2",
        "document_status": "2",
        "taxbureau_sending_status": "1",
        "taxbureau_validation_status": "3",
        "issue_date": "2026-08-27",
        "issuer_tax_id_code": "76086428-5",
        "receiver_tax_id_code": "96.892.710-8",
        "total_amount": "3404824",
        "account_id": 4201,
        "something_new": [1, 2],
    }
    doc = DocumentAnswer.from_any(item)
    assert doc.shape == "flat"
    assert doc.document_number == "77"
    assert doc.document_status is DocumentStatus.CANCELLED  # a flat item's status is the top-level one
    assert doc.counterparty_status is None
    assert doc.taxbureau_sending_status is TaxBureauSendingStatus.RECEIVED
    assert doc.taxbureau_validation_status is TaxBureauValidationStatus.ACCEPTED
    assert doc.header.receiver_tax_id_code == "96.892.710-8"
    assert doc.totals.total_amount == Decimal("3404824")
    assert doc.owner_account_id == "4201"
    assert doc.model_extra["something_new"] == [1, 2]


def test_sending_status_zero_is_not_lost():
    doc = DocumentAnswer.from_any({"document_id": 1, "header": {"taxbureau_sending_status": 0}})
    assert doc.taxbureau_sending_status is TaxBureauSendingStatus.SENDING


def test_a_two_xx_without_document_id_has_no_id():
    assert DocumentAnswer.from_any({"error": "Internal processing error"}).document_id is None
    assert DocumentAnswer.from_any({}).document_id is None
    assert ErrorBody.of({"error": "Internal processing error"}).text == "Internal processing error"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"error": "bad"}, "bad"),
        ({"message": "m"}, "m"),
        ({"error_message": "e"}, "e"),
        ({"error_description": "d"}, "d"),
        ({"result": {"status": 1, "error_message": "r"}}, "r"),
        ({}, ""),
        (None, ""),
        ("text", ""),
    ],
)
def test_error_bodies(body, text):
    assert ErrorBody.of(body).text == text


def test_content_compares_tax_ids_totals_type_and_date():
    ours = DocumentContent.of_payload(
        {
            "header": {
                "issuer_tax_id_code": "860517022-2",
                "receiver_tax_id_code": "1097491385-1",
                "document_type_id": 82,
                "issue_date": "2025-04-15",
            },
            "totals": {"total_amount": 4355.4},
        }
    )
    assert ours.differences(DocumentAnswer.from_any(FULL).content()) == []
    other = json.loads(json.dumps(FULL))
    other["header"]["receiver_tax_id_code"] = "900123456-1"
    other["totals"]["total_amount"] = "4355.41"
    diffs = ours.differences(DocumentAnswer.from_any(other).content())
    assert diffs == [
        "receiver_tax_id: ours 10974913851, Koywe's 9001234561",
        "total_amount: ours 4355.4, Koywe's 4355.41",
    ]
    # a field Koywe does not report cannot be compared; one we did not send but Koywe has can
    assert ours.differences(DocumentContent(None, None, None, None, None)) == []
    no_receiver = DocumentContent.of_payload({"header": {"document_type_id": 82}})
    assert no_receiver.differences(DocumentContent(None, 82, "X1", None, None)) == [
        "receiver_tax_id: ours (none), Koywe's X1"
    ]


@pytest.mark.parametrize(
    "name", ["crm_test__list_documents_flat_legacy.json", "crm_test__list_documents_hal.json"]
)
def test_koywes_list_examples(name):
    page = DocumentPage.parse(koywe_example(name), 1)
    (doc,) = page.documents
    assert doc.document_number == "1552"
    assert doc.header.receiver_tax_id_code == "96.892.710-8"
    assert doc.totals.total_amount == Decimal("3404824")
    assert doc.header.document_type_taxbureau == "33"
    assert page.next_page is None and page.total_items == 1


def test_koywes_create_answer_example():
    doc = DocumentAnswer.from_any(
        koywe_example("postman__post_documents_response_sample_colombia_account.json")
    )
    assert doc.document_id == "377" and doc.document_number == "1040447"
    assert doc.totals.total_amount == Decimal("4355.40")
    assert doc.references == []  # Koywe sends null
    assert doc.electronic_document is not None and doc.electronic_document.document_xml
    assert "PD94" not in repr(doc)  # the base64 files stay out of reprs and logs


def test_koywes_result_status_two_examples():
    for body in koywe_example("docs__peru_result_status2_examples.json"):
        doc = DocumentAnswer.from_any(body)
        assert doc.result_status is ResultStatus.NOT_SENT
        assert "could not be sent" in doc.result.error_message


def test_koywes_auth_and_webhook_examples():
    auth = AuthAnswer.model_validate(koywe_example("docs__auth_response_example.json"))
    assert auth.expires_in == 3600 and auth.token_type == "Bearer"
    assert "eyJ" not in repr(auth) and "eyJ" not in str(auth.model_dump())
    event = StatusUpdateEvent.model_validate(koywe_example("docs__webhook_document_statusupdate.json"))
    assert event.document_id == "123" and event.lifecycle_status is DocumentStatus.ISSUED
    assert event.taxbureau_validation_status is TaxBureauValidationStatus.CONTENT_REJECTED


def test_auth_answer_without_token_is_refused():
    with pytest.raises(ValueError):
        AuthAnswer.model_validate({"token_type": "Bearer"})
    with pytest.raises(ValueError):
        AuthAnswer.model_validate({"access_token": "  "})


def test_webhook_document_status_three_is_the_counterparty_acceptance():
    event = StatusUpdateEvent.model_validate({"document_id": "5", "document_status": 3})
    assert event.lifecycle_status is None and event.counterparty_status is CounterpartyStatus.ACCEPTED
    with pytest.raises(ValueError):
        StatusUpdateEvent.model_validate({"document_id": "5", "document_status": 4})
    with pytest.raises(ValueError):
        StatusUpdateEvent.model_validate({"document_id": True})


def test_account_answer_id_as_text():
    assert AccountAnswer.model_validate({"account_id": 638}).account_id == "638"
    assert AccountAnswer.model_validate({"account_id": ""}).account_id is None


def test_generations_round_trip():
    assert koywe_reference("INV-1") == "INV-1" and koywe_reference("INV-1", 2) == "INV-1~2"
    assert split_koywe_reference("INV-1~12") == ("INV-1", 12)
    assert split_koywe_reference("INV-1") == ("INV-1", 1)
    assert split_koywe_reference("A~B~3") == ("A~B", 3)
    assert split_koywe_reference("INV~1") == ("INV~1", 1)  # generation 1 never carries a suffix
    with pytest.raises(ValueError):
        koywe_reference("INV-1", 0)


def test_account_answer_reads_both_account_shapes():
    nested = AccountAnswer.model_validate(
        {
            "account_id": "638",
            "account_created": {"country_id": "253", "registration_tax_id_code": "76086428-5"},
        }
    )
    flat = AccountAnswer.model_validate(
        {
            "account_id": 638,
            "country_id": 253,
            "registration_tax_id_code": "76086428-5",
            "certification_status": 1,
        }
    )
    for answer in (nested, flat):
        assert (answer.account_id, answer.country_id, answer.registration_tax_id_code) == (
            "638",
            253,
            "76086428-5",
        )
    assert flat.certification_status == "1" and nested.certification_status is None
