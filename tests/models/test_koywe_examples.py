"""Koywe's own request examples (``../shared/koywe/examples/requests``) against the validator.

Classified as the folder's README says: every document example the README lists among Koywe's known
defects is flagged, with exactly the fields the README describes; every other example validates, except
the further genuine defects listed in ``FURTHER_DEFECTS`` (the same line-total error in two more Chile
examples, a line description over Koywe's 100 characters). Koywe's Chile export examples, whose foreign
receiver carries a Mexican tax id that no RFC rule accepts, are accepted: a foreign receiver's id is not
checked with a domestic rule. Each example is judged on the day it is dated (its ``issue_date``, at noon
in the Americas): the date limits are relative to the day a document is sent.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest

from koywe_provider.exceptions import DocumentValidationError
from koywe_provider.models import KoyweDocument, validate_document

SHARED = Path(__file__).resolve().parents[2].parent / "shared/koywe"
REQUESTS = SHARED / "examples/requests"
README = SHARED / "README.md"

_LINE_1624 = ("details.0.total_amount_line", "1624 != net 1400 + taxes 266 = 1666")

#: What the README's "Known defects" say of the document examples it names (read from the README below).
README_DEFECTS = {r"total_amount_line\W{0,3}1624": [_LINE_1624]}

FURTHER_DEFECTS: dict[str, list[tuple[str, str]]] = {
    # The same 1624 line total in two further Chile examples
    "chile__create_new_documents_purchase_invoice_factura_de_compra_electr_nica.json": [_LINE_1624],
    "chile__create_new_documents_bill_of_lading_gu_a_de_despacho.json": [_LINE_1624],
    # Peru boleta to a foreign customer: a 134-character line_description (Koywe: at most 100). Its
    # receiver's "US-EIN" of 8 digits is a foreign id: not checked.
    "per__create_new_documents_receipt_issued_to_a_foreign_customer_boleta_electr_nica_nominativa_co.json": [
        ("details.0.line_description", "at most 100 characters (Koywe limit), got 134"),
    ],
}

CHILE_EXPORTS = (
    "chile__create_new_documents_exports_invoice_factura_de_exportaci_n.json",
    "chile__create_new_documents_exports_debit_note_nota_de_d_bito_de_exportaci_n.json",
    "chile__create_new_documents_exports_credit_note_nota_de_cr_dito_de_exportaci_n.json",
)


def _is_document_example(name: str) -> bool:
    return (
        "create_new_documents" in name
        or "create_a_new_document" in name
        or name.startswith(("per__credit_note", "per__debit_note", "per__retention_receipt"))
    )


def _examples() -> list[str]:
    if not REQUESTS.is_dir():
        return []
    return sorted(p.name for p in REQUESTS.glob("*.json") if _is_document_example(p.name))


def _readme_defects() -> dict[str, list[tuple[str, str]]]:
    """Document examples the README lists as known defects, with what it says is wrong."""
    section = README.read_text(encoding="utf-8").split("Known defects", 1)[1]
    found: dict[str, list[tuple[str, str]]] = {}
    for item in re.split(r"\n- ", section):
        names = [n for n in re.findall(r"`([^`]+\.json)`", item) if _is_document_example(n)]
        for phrase, defects in README_DEFECTS.items():
            if re.search(phrase, item):
                found.update({n: defects for n in names})
    return found


def _load(name: str) -> dict:
    return json.loads((REQUESTS / name).read_text(encoding="utf-8"))


def _sent_on(payload: dict) -> datetime:
    """Noon in the Americas (17:00 UTC) of the example's own issue date."""
    return datetime.combine(date.fromisoformat(payload["header"]["issue_date"]), time(17), tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def _shared_present() -> None:
    if not REQUESTS.is_dir() or not README.is_file():
        pytest.skip(f"Koywe reference examples not found at {REQUESTS} (a fresh clone has no ../shared)")


def test_examples_and_the_readme_are_found() -> None:
    names = _examples()
    assert len(names) >= 35
    readme = _readme_defects()
    assert set(readme) == {
        "chile__create_new_documents_invoice_factura_electr_nica.json",
        "api_reference__create_a_new_document.json",
    }
    assert set(readme) | set(FURTHER_DEFECTS) | set(CHILE_EXPORTS) <= set(names)


@pytest.mark.parametrize("name", _examples() or ["<absent>"])
def test_example(name: str) -> None:
    payload = _load(name)
    expected = {**_readme_defects(), **FURTHER_DEFECTS}.get(name)
    now = _sent_on(payload)
    if expected is None:
        document = validate_document(payload, reference=name, now=now)
        assert isinstance(document, KoyweDocument)
        # Round trip: the normalised payload validates again and hashes the same.
        again = validate_document(document.to_payload(), now=now)
        assert again.to_payload() == document.to_payload()
        return
    with pytest.raises(DocumentValidationError) as info:
        validate_document(payload, reference=name, now=now)
    errors = info.value.errors
    assert [field for field, _ in errors] == [field for field, _ in expected], errors
    for (_, message), (_, wanted) in zip(errors, expected, strict=True):
        assert message.startswith(wanted), (message, wanted)
    assert name in str(info.value)


@pytest.mark.parametrize("name", CHILE_EXPORTS)
def test_chile_exports_accept_the_foreign_receivers_id_as_given(name: str) -> None:
    payload = _load(name)
    document = validate_document(payload, now=_sent_on(payload))
    assert (document.header.receiver_tax_id_type, document.header.receiver_tax_id_code) == (
        "MX-RFC",
        "222333444",
    )
    assert document.header.currency_id == 5  # USD


def test_peru_examples_issuer_country_80_is_accepted_and_kept() -> None:
    """Koywe's Peru examples send ``issuer_country_id`` 80 (Mexico) for a Peruvian issuer: the issuer's
    country is the document type's (and the account's); the field is kept as sent, never judged."""
    payload = _load("per__create_new_documents_receipt_boleta_electr_nica.json")
    assert payload["header"]["issuer_country_id"] in (80, "80")
    document = validate_document(payload, now=_sent_on(payload))
    assert document.header.issuer_country_id == 80 and document.header.issuer_tax_id_type == "PE-RUC"


def test_examples_are_refused_once_their_date_is_past_the_bureau_limit() -> None:
    payload = _load("per__create_new_documents_receipt_boleta_electr_nica.json")  # a boleta: today only
    later = _sent_on(payload).replace(day=_sent_on(payload).day + 1)
    with pytest.raises(DocumentValidationError) as info:
        validate_document(payload, now=later)
    assert [f for f, _ in info.value.errors] == ["header.issue_date"]


def test_string_ids_and_peru_reference_codes_are_normalised() -> None:
    payload = _load(
        "per__credit_note_for_invoice_with_reference_number_nota_de_cr_dito_electr_nica_para_factura.json"
    )
    document = validate_document(payload, now=_sent_on(payload))
    assert document.header.document_type_id == 98
    assert document.header.issuer_country_id == 80
    assert document.references[0].reference_code == "01"
    assert document.references[0].document_type_id == 96
    out = document.to_payload()
    assert out["header"]["document_type_id"] == 98
    assert out["details"][0]["taxes"][0]["tax_type_id"] == 413
    assert out["header"]["additional"]["pe_header"] == {"signature_id": "ASDFG", "operation_type": "0101"}


def test_unknown_blocks_are_sent_back() -> None:
    payload = _load(
        "m_xico__create_new_documents_invoice_t_with_bill_of_lading_complement_factura_t_con_complemento_de.json"
    )
    out = validate_document(payload, now=_sent_on(payload)).to_payload()
    assert out["header"]["additional"]["mx_shipping"] == payload["header"]["additional"]["mx_shipping"]


def test_every_request_example_is_classified() -> None:
    """Every body of ``examples/requests`` is judged somewhere: documents here, accounts in
    ``tests/accounts/test_account_validation.py``; the auth and ``PUT`` bodies are not documents."""
    not_documents = {
        "api_reference__authenticate_and_receive_a_bearer_token.json",  # POST /auth
        "api_reference__update_a_specific_document.json",  # PUT /documents/{id}
        "docs__mexico_cancel_invoice_PUT_body.json",  # PUT /documents/{id}
    }
    unclassified = [
        p.name
        for p in REQUESTS.glob("*.json")
        if not _is_document_example(p.name)
        and "create_a_new_account" not in p.name
        and p.name not in not_documents
    ]
    assert unclassified == []
