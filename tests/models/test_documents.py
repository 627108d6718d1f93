"""Document model rules on hand-written payloads."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from koywe_provider.exceptions import DocumentValidationError
from koywe_provider.models import (
    KoyweDocument,
    arithmetic_errors,
    currency_places,
    internal_reference,
    internal_reference_number,
    is_internal_reference,
    payload_hash,
    validate_document,
)

#: The day the hand-written payloads below are sent (their issue_date), mid-day in the Americas.
NOW = datetime(2026, 3, 2, 17, tzinfo=UTC)


def validate(payload, **kwargs):
    return validate_document(payload, now=NOW, **kwargs)


def _peru() -> dict:
    """Peru factura, PEN 2 dp: 2 × 125.50 - 10 % = 225.90 net, IGV 18 % 40.66; 1 × 80 net, 14.40."""
    return {
        "options": {"send_email": 0, "rounding_type": "net"},
        "header": {
            "account_id": 16268,
            "document_type_id": 96,
            "document_sequence_code": "F001",
            "issue_date": "2026-03-02",
            "issuer_tax_id_type": "PE-RUC",
            "issuer_tax_id_code": "20610383727",
            "issuer_legal_name": "Ferretería Los Olivos S.A.C.",
            "receiver_tax_id_type": "PE-RUC",
            "receiver_tax_id_code": "20473731828",
            "receiver_legal_name": "Constructora Miraflores S.A.",
            "currency_id": 7,
            "payment_conditions": "0,30",
            "additional": {"pe_header": {"operation_type": "0101"}},
        },
        "details": [
            {
                "quantity": 2,
                "line_description": "Taladro percutor 800 W",
                "unit_measure": "NIU",
                "unit_price": 125.5,
                "modifier_percentage": -10,
                "total_taxes": 40.66,
                "total_amount_line": 266.56,
                "taxes": [{"tax_type_id": 413, "tax_percentage": 18, "tax_amount": 40.66}],
            },
            {
                "quantity": 1,
                "line_description": "Juego de brocas para concreto",
                "unit_measure": "NIU",
                "unit_price": 90,
                "modifier_amount": -10,
                "total_taxes": 14.4,
                "total_amount_line": 94.4,
                "taxes": [{"tax_type_id": 413, "tax_percentage": 18, "tax_amount": 14.4}],
            },
        ],
        "totals": {"net_amount": 305.9, "taxes_amount": 55.06, "total_amount": 360.96},
    }


def _chile() -> dict:
    """Chile factura, CLP whole pesos: 3 × 12.990 = 38.970 net, IVA 19 % 7.404."""
    return {
        "header": {
            "document_type_id": "2",
            "issue_date": "2026-03-02",
            "issuer_tax_id_type": "CL-RUT",
            "issuer_tax_id_code": "76.399.932-7",
            "receiver_tax_id_type": "CL-RUT",
            "receiver_tax_id_code": "11.111.111-1",
            "receiver_legal_name": "Comercial Los Andes SpA",
            "currency_id": "39",
        },
        "details": [
            {
                "quantity": "3",
                "line_description": "Resma papel carta",
                "unit_measure": "UN",
                "unit_price": "12990",
                "total_taxes": "7404",
                "total_amount_line": "46374",
                "taxes": [{"tax_type_id": "387", "tax_percentage": "19", "tax_amount": "7404"}],
            }
        ],
        "totals": {"net_amount": "38970", "taxes_amount": "7404", "total_amount": "46374"},
    }


def _errors(payload: dict) -> list[tuple[str, str]]:
    with pytest.raises(DocumentValidationError) as info:
        validate(payload, reference="T-1")
    return info.value.errors


def test_valid_payloads() -> None:
    peru = validate(_peru())
    assert peru.details[0].unit_price == Decimal("125.5")
    assert peru.header.issue_date == date(2026, 3, 2)
    chile = validate(_chile())
    assert chile.header.issuer_tax_id_code == "76399932-7"  # dots removed
    assert chile.header.document_type_id == 2
    assert chile.totals.total_amount == Decimal(46374)


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (
            lambda d: d["details"][0]["taxes"][0].update(tax_amount=45.18),
            "details.0.taxes.0.tax_amount",
            "45.18 != net 225.9 × 18% = 40.66",
        ),
        (
            lambda d: d["details"][0].update(total_taxes=41.66),
            "details.0.total_taxes",
            "41.66 != sum of taxes[].tax_amount 40.66",
        ),
        (
            lambda d: d["details"][1].update(total_amount_line=104.4),
            "details.1.total_amount_line",
            "104.4 != net 80 + taxes 14.4 = 94.4",
        ),
        (
            lambda d: d["totals"].update(net_amount=315.9),
            "totals.net_amount",
            "315.9 != sum of line nets 225.9 + 80 = 305.9",
        ),
        (
            lambda d: d["totals"].update(taxes_amount=56.06),
            "totals.taxes_amount",
            "56.06 != sum of details[].total_taxes 55.06",
        ),
        (
            lambda d: d["totals"].update(total_amount=361.96),
            "totals.total_amount",
            "361.96 != net_amount 305.9 + taxes_amount 55.06 = 360.96",
        ),
    ],
)
def test_each_arithmetic_rule(mutate, field: str, message: str) -> None:
    payload = _peru()
    mutate(payload)
    errors = _errors(payload)
    assert (field, message) in errors, errors


def test_no_tolerance_two_decimals() -> None:
    """One cent off is an error: the currency's rounding is the only slack."""
    payload = _peru()
    payload["details"][0]["taxes"][0]["tax_amount"] = 40.67  # 225.90 × 18 % = 40.662 -> 40.66
    payload["details"][0]["total_taxes"] = 40.67
    payload["details"][0]["total_amount_line"] = 266.57
    payload["totals"].update(taxes_amount=55.07, total_amount=360.97)
    assert _errors(payload) == [("details.0.taxes.0.tax_amount", "40.67 != net 225.9 × 18% = 40.66")]
    payload = _peru()
    payload["totals"]["total_amount"] = 360.97  # 0.01 off a single comparison
    assert _errors(payload) == [
        ("totals.total_amount", "360.97 != net_amount 305.9 + taxes_amount 55.06 = 360.96")
    ]


def test_no_tolerance_whole_units() -> None:
    payload = _chile()
    payload["details"][0]["taxes"][0]["tax_amount"] = 7405  # 38970 × 19 % = 7404.3 -> 7404
    payload["details"][0]["total_taxes"] = 7405
    payload["details"][0]["total_amount_line"] = 46375
    payload["totals"].update(taxes_amount=7405, total_amount=46375)
    assert _errors(payload) == [("details.0.taxes.0.tax_amount", "7405 != net 38970 × 19% = 7404")]
    payload = _chile()
    payload["details"][0]["total_amount_line"] = 46375
    assert _errors(payload) == [("details.0.total_amount_line", "46375 != net 38970 + taxes 7404 = 46374")]


def test_rounding_is_half_up_at_the_currencys_places() -> None:
    payload = _peru()  # 2 × 125.50 - 10 % = 225.90; 225.90 × 18 % = 40.662 -> 40.66 (above)
    line = payload["details"][1]  # 1 × 90 - 10 = 80; 80 × 18 % = 14.40
    line.update(unit_price=90.25, total_taxes=14.45, total_amount_line=94.7)  # 80.25 × 18 % = 14.445 -> 14.45
    line["taxes"][0]["tax_amount"] = 14.45
    payload["totals"].update(net_amount=306.15, taxes_amount=55.11, total_amount=361.26)
    validate(payload)
    line["taxes"][0]["tax_amount"] = line["total_taxes"] = 14.44  # rounded down: wrong
    line["total_amount_line"] = 94.69
    payload["totals"].update(taxes_amount=55.1, total_amount=361.25)
    assert ("details.1.taxes.0.tax_amount", "14.44 != net 80.25 × 18% = 14.45") in _errors(payload)


def test_document_level_rounding_of_taxes_is_accepted() -> None:
    """Koywe's "net" rounding: the rate applied once to the sum of the nets. Three lines of 13 CLP: IVA
    2.47 -> 2 per line (6 in all), or 39 × 19 % = 7.41 -> 7 on the document; both are exact."""
    payload = _chile()
    line = payload["details"][0]
    line.update(quantity=1, unit_price=13, total_taxes=2, total_amount_line=15)
    line["taxes"][0]["tax_amount"] = 2
    payload["details"] = [copy.deepcopy(line) for _ in range(3)]  # 3 × 13 = 39; Σ line taxes 6
    payload["totals"] = {"net_amount": 39, "taxes_amount": 7, "total_amount": 46}  # 39 × 19 % = 7.41 -> 7
    validate(payload)
    payload["totals"] = {"net_amount": 39, "taxes_amount": 6, "total_amount": 45}  # line by line
    validate(payload)
    payload["totals"] = {"net_amount": 39, "taxes_amount": 8, "total_amount": 47}
    assert _errors(payload) == [
        (
            "totals.taxes_amount",
            "8 != sum of details[].total_taxes 6 (or 7, rounded once per rate on the document's nets)",
        )
    ]


def test_every_error_is_listed() -> None:
    payload = _chile()
    payload["header"]["receiver_tax_id_code"] = "11.111.111-2"  # DV is 1
    payload["header"]["issue_date"] = "02/03/2026"
    payload["details"][0]["line_description"] = "x" * 101
    payload["totals"]["total_amount"] = "46000"
    errors = dict(_errors(payload))
    assert set(errors) == {
        "header.issue_date",
        "header.receiver_tax_id_code",
        "details.0.line_description",
        "totals.total_amount",
    }
    assert "YYYY-MM-DD" in errors["header.issue_date"]
    assert "check digit" in errors["header.receiver_tax_id_code"]
    assert errors["totals.total_amount"] == "46000 != net_amount 38970 + taxes_amount 7404 = 46374"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("header", "issue_date"), "2026-02-30", "header.issue_date"),
        (("header", "issue_date"), "2026-03-02T10:00:00", "header.issue_date"),
        (("header", "document_type_id"), "F96", "header.document_type_id"),
        (("header", "payment_conditions"), "contado", "header.payment_conditions"),
        (("details", 0, "quantity"), "abc", "details.0.quantity"),
        (("details", 0, "quantity"), 0, "details.0.quantity"),
        (("details", 0, "unit_price"), -1, "details.0.unit_price"),
        (("details", 0, "line_description"), "  ", "details.0.line_description"),
        (("details", 0, "taxes", 0, "tax_type_id"), True, "details.0.taxes.0.tax_type_id"),
        (("totals", "total_amount"), "NaN", "totals.total_amount"),
    ],
)
def test_field_errors(path: tuple, value: object, field: str) -> None:
    payload = _chile()
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert field in [f for f, _ in _errors(payload)]


@pytest.mark.parametrize(
    "missing",
    [
        "header.issue_date",
        "header.document_type_id",
        "totals.total_amount",
        "details.0.unit_price",
        "details.0.line_description",
    ],
)
def test_required_fields(missing: str) -> None:
    payload = _chile()
    *parents, leaf = missing.split(".")
    target = payload
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    del target[leaf]
    assert (missing, "required field is missing") in _errors(payload)


def test_document_level_shapes() -> None:
    assert _errors([]) == [("document", "expected a JSON object, got a JSON array")]  # type: ignore[arg-type]
    payload = _chile()
    payload["details"] = []
    assert [f for f, _ in _errors(payload)] == ["details"]


def test_string_and_float_numbers_are_equivalent() -> None:
    as_strings = _chile()
    as_numbers = copy.deepcopy(as_strings)
    as_numbers["header"].update(document_type_id=2, currency_id=39)
    line = as_numbers["details"][0]
    line.update(quantity=3.0, unit_price=12990, total_taxes=7404.0, total_amount_line=46374)
    line["taxes"][0].update(tax_type_id=387, tax_percentage=19.0, tax_amount=7404)
    as_numbers["totals"] = {"net_amount": 38970.0, "taxes_amount": 7404, "total_amount": 46374.00}
    assert validate(as_strings).to_payload() == validate(as_numbers).to_payload()
    assert payload_hash(as_strings) == payload_hash(as_numbers)
    assert payload_hash(validate(as_numbers)) == payload_hash(as_numbers)
    changed = copy.deepcopy(as_numbers)
    changed["header"]["receiver_legal_name"] = "Otra Empresa SpA"
    assert payload_hash(changed) != payload_hash(as_numbers)
    assert len(payload_hash(as_numbers)) == 64


def test_to_payload_shape_and_extras() -> None:
    payload = _peru()
    payload["header"]["seller_id"] = 7
    payload["header"]["additional"]["pe_header"]["signature_id"] = "SIGN01"
    payload["header"]["additional"]["pe_retention_header"] = {"pe_sunat_retention_percent": "3.00"}
    payload["details"][0]["sku"] = 12345
    payload["details"][0]["discount_note"] = {"campaign": "verano"}
    payload["payment_link"] = {"payment_url": "https://pagos.example/abc"}
    out = validate(payload).to_payload()
    assert out["header"]["seller_id"] == 7
    assert out["header"]["issue_date"] == "2026-03-02"
    assert out["header"]["additional"]["pe_header"] == {"operation_type": "0101", "signature_id": "SIGN01"}
    assert out["header"]["additional"]["pe_retention_header"] == {"pe_sunat_retention_percent": "3.00"}
    assert out["details"][0]["sku"] == "12345"
    assert out["details"][0]["discount_note"] == {"campaign": "verano"}
    assert out["details"][0]["unit_price"] == 125.5 and out["details"][1]["unit_price"] == 90
    assert isinstance(out["details"][1]["unit_price"], int)
    assert out["payment_link"] == {"payment_url": "https://pagos.example/abc"}
    assert out["options"] == {"send_email": 0, "rounding_type": "net"}
    assert "receiver_address" not in out["header"]  # None dropped


def test_references() -> None:
    payload = _chile()
    payload["references"] = [
        internal_reference("TXN-42"),
        {
            "reference_code": "01",
            "reference_number": "F001-00000087",
            "description": "Anulación",
            "document_type_id": "96",
            "reference_date": "2026-03-01",
        },
        {"reference_code": 3, "reference_document_id": "991", "description": "Corrige monto"},
    ]
    document = validate(payload)
    codes = [r.reference_code for r in document.references]
    assert codes == ["5", "01", "3"]
    assert [is_internal_reference(r) for r in document.references] == [True, False, False]
    assert is_internal_reference({"reference_code": "05"}) and not is_internal_reference(
        {"reference_code": "x"}
    )
    assert internal_reference_number(document) == "TXN-42" == document.internal_reference_number
    assert internal_reference_number(payload) == "TXN-42"
    assert document.to_payload()["references"][1]["reference_date"] == "2026-03-01"
    payload["references"][2]["reference_number"] = "F001-1"
    assert _errors(payload) == [
        ("references.2.reference_document_id", "use reference_number or reference_document_id, never both")
    ]


def test_exempt_lines_and_missing_line_totals() -> None:
    payload = {
        "header": {"document_type_id": 97, "issue_date": "2026-03-02", "currency_id": 7},
        "details": [
            {"quantity": 1, "line_description": "Libro escolar", "unit_measure": "NIU", "unit_price": 45},
            {
                "quantity": 2,
                "line_description": "Cuaderno",
                "unit_measure": "NIU",
                "unit_price": 5.5,
                "taxes": [{"tax_type_id": 413, "tax_percentage": 18, "tax_amount": 1.98}],
            },
        ],
        "totals": {"net_amount": 56, "taxes_amount": 1.98, "total_amount": 57.98},
    }
    document = validate(payload)
    exempt, taxed = document.details
    assert exempt.taxes == [] and exempt.total_taxes is None and exempt.total_amount_line is None
    assert taxed.total_taxes is None and taxed.total_amount_line is None
    assert arithmetic_errors(payload) == []

    # The exempt line counts in the net (45 + 11) and adds no tax; a line without total_taxes counts
    # the sum of its taxes[], which are still checked against its net.
    wrong_net = copy.deepcopy(payload)
    wrong_net["totals"].update(net_amount=57, total_amount=58.98)
    assert _errors(wrong_net) == [("totals.net_amount", "57 != sum of line nets 45 + 11 = 56")]
    wrong_taxes = copy.deepcopy(payload)
    wrong_taxes["totals"].update(taxes_amount=2.98, total_amount=58.98)
    assert _errors(wrong_taxes) == [("totals.taxes_amount", "2.98 != sum of details[].total_taxes 1.98")]
    wrong_line_tax = copy.deepcopy(payload)
    wrong_line_tax["details"][1]["taxes"][0]["tax_amount"] = 2.98
    assert ("details.1.taxes.0.tax_amount", "2.98 != net 11 × 18% = 1.98") in _errors(wrong_line_tax)


def test_global_discount_and_gross_values() -> None:
    payload = _chile()
    payload["globals_discounts_surcharges"] = [
        {"discount_surcharge_code": "DA", "discount_surcharge_value": 10, "discount_surcharge_type": "%"}
    ]
    payload["totals"] = {"net_amount": 35073, "taxes_amount": 6664, "total_amount": 41737}
    validate(payload)
    payload["totals"]["net_amount"] = 38970
    payload["totals"]["total_amount"] = 45634
    assert [f for f, _ in _errors(payload)] == ["totals.net_amount"]

    gross = _chile()
    gross["header"]["document_type_id"] = 37  # a boleta: prices VAT included
    gross["options"] = {"gross_values": 1}
    line = gross["details"][0]
    line.update(unit_price=15458, total_amount_line=46374)
    gross["totals"] = {"total_amount": 46374}
    validate(gross)
    gross["totals"]["total_amount"] = 46500
    assert [f for f, _ in _errors(gross)] == ["totals.total_amount"]


def test_currency_is_required() -> None:
    assert currency_places(None, 2) == 0 and currency_places(None, 96) == 2  # raw payloads only
    payload = _chile()
    del payload["header"]["currency_id"]
    assert _errors(payload) == [("header.currency_id", "required field is missing")]


def test_model_validate_raises_pydantic_error_and_arithmetic_on_raw_payload() -> None:
    payload = _peru()
    payload["totals"]["total_amount"] = 1
    with pytest.raises(ValidationError, match="totals.total_amount: 1 != net_amount"):
        KoyweDocument.model_validate(payload)
    assert arithmetic_errors(payload) == [
        ("totals.total_amount", "1 != net_amount 305.9 + taxes_amount 55.06 = 360.96")
    ]
    assert arithmetic_errors({"details": "nonsense"}) == []
