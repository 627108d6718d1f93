"""Koywe's own request examples (``../shared/koywe/examples/requests``) against the validator.

Every document example validates except the defective ones listed in ``EXPECTED_DEFECTS``, which
must fail with exactly those fields. The first two are Koywe's README "known defects"; the others
are further genuine defects found in the examples (see the report / include/samples/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from koywe_provider.exceptions import DocumentValidationError
from koywe_provider.models import KoyweDocument, validate_document

SHARED = Path(__file__).resolve().parents[2].parent / "shared/koywe"
REQUESTS = SHARED / "examples/requests"

_LINE_1624 = ("details.0.total_amount_line", "1624 != net 1400 + taxes 266 = 1666")
_RFC_222 = ("header.receiver_tax_id_code", "'222333444' is not a valid MX-RFC")

EXPECTED_DEFECTS: dict[str, list[tuple[str, str]]] = {
    # Koywe README known defects
    "chile__create_new_documents_invoice_factura_electr_nica.json": [_LINE_1624],
    "api_reference__create_a_new_document.json": [_LINE_1624],
    # Same 1624 line total in two further Chile examples
    "chile__create_new_documents_purchase_invoice_factura_de_compra_electr_nica.json": [_LINE_1624],
    "chile__create_new_documents_bill_of_lading_gu_a_de_despacho.json": [_LINE_1624],
    # Chile exports: receiver typed MX-RFC with a 9-digit code, which no RFC can be
    "chile__create_new_documents_exports_invoice_factura_de_exportaci_n.json": [_RFC_222],
    "chile__create_new_documents_exports_debit_note_nota_de_d_bito_de_exportaci_n.json": [_RFC_222],
    "chile__create_new_documents_exports_credit_note_nota_de_cr_dito_de_exportaci_n.json": [_RFC_222],
    # Peru boleta to a foreign customer: 8-digit "US-EIN" and a 134-char line_description
    "per__create_new_documents_receipt_issued_to_a_foreign_customer_boleta_electr_nica_nominativa_co.json": [
        ("header.receiver_tax_id_code", "'10752012' is not a valid US-EIN"),
        ("details.0.line_description", "at most 100 characters (Koywe limit), got 134"),
    ],
}


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


def _load(name: str) -> dict:
    if not REQUESTS.is_dir():
        pytest.skip(f"Koywe reference examples not found at {REQUESTS} (a fresh clone has no ../shared)")
    return json.loads((REQUESTS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module", autouse=True)
def _shared_present() -> None:
    if not REQUESTS.is_dir():
        pytest.skip(f"Koywe reference examples not found at {REQUESTS} (a fresh clone has no ../shared)")


def test_examples_are_found() -> None:
    names = _examples()
    assert len(names) >= 35
    assert set(EXPECTED_DEFECTS) <= set(names)


@pytest.mark.parametrize("name", _examples() or ["<absent>"])
def test_example(name: str) -> None:
    payload = _load(name)
    expected = EXPECTED_DEFECTS.get(name)
    if expected is None:
        document = validate_document(payload, reference=name)
        assert isinstance(document, KoyweDocument)
        # Round trip: the normalised payload validates again and hashes the same.
        again = validate_document(document.to_payload())
        assert again.to_payload() == document.to_payload()
        return
    with pytest.raises(DocumentValidationError) as info:
        validate_document(payload, reference=name)
    errors = info.value.errors
    assert [field for field, _ in errors] == [field for field, _ in expected], errors
    for (_, message), (_, wanted) in zip(errors, expected, strict=True):
        assert message.startswith(wanted), (message, wanted)
    assert name in str(info.value)


def test_string_ids_and_peru_reference_codes_are_normalised() -> None:
    document = validate_document(
        _load(
            "per__credit_note_for_invoice_with_reference_number_nota_de_cr_dito_electr_nica_para_factura.json"
        )
    )
    assert document.header.document_type_id == 98
    assert document.header.issuer_country_id == 80
    assert document.references[0].reference_code == "01"
    assert document.references[0].document_type_id == 96
    payload = document.to_payload()
    assert payload["header"]["document_type_id"] == 98
    assert payload["details"][0]["taxes"][0]["tax_type_id"] == 413
    assert payload["header"]["additional"]["pe_header"] == {"signature_id": "ASDFG", "operation_type": "0101"}


def test_unknown_blocks_are_sent_back() -> None:
    payload = _load(
        "m_xico__create_new_documents_invoice_t_with_bill_of_lading_complement_factura_t_con_complemento_de.json"
    )
    out = validate_document(payload).to_payload()
    assert out["header"]["additional"]["mx_shipping"] == payload["header"]["additional"]["mx_shipping"]
