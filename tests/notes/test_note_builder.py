"""The note builder: the country's note type, ``references[]`` to the original, reason codes, Decimal totals
at the currency's rounding, and refusals before anything is recorded."""

from __future__ import annotations

import copy
from datetime import date
from decimal import Decimal

import pytest

from koywe_provider import catalogue
from koywe_provider.models.documents import arithmetic_errors
from koywe_provider.models.notes import (
    REASON_CODES,
    LineSelection,
    NoteRefused,
    OriginalDocument,
    build_note,
    choose_reason_code,
    note_reference,
    parse_amount,
    parse_lines,
    payload_total,
)
from koywe_test_support import chile_factura, sample_document

DAY = date(2026, 11, 21)


def original(payload: dict, *, koywe_id: str | None = "1234", folio: str | None = "77") -> OriginalDocument:
    return OriginalDocument("INV-1", payload, koywe_document_id=koywe_id, folio=folio)


def note(payload: dict, kind: str = "credit_note", **kwargs):
    kwargs.setdefault("remaining", payload_total(payload))
    return build_note(original(payload), kind, issue_date=DAY, **kwargs)


# (country, original type) -> (credit note type, debit note type, full code, partial code, lines code)
CASES = {
    ("CL", 2): (16, 17, 1, 3, 3),
    ("CL", 37): (16, 17, 1, 3, 3),
    ("PE", 96): (98, 99, "01", "09", "07"),
    ("PE", 97): (98, 99, "01", "09", "07"),
    ("CO", 82): (83, 84, 2, 3, 1),
    ("MX", 76): (77, None, "01", "01", "01"),
}


@pytest.mark.parametrize(("country", "type_id"), list(CASES))
def test_full_partial_and_line_notes_per_country(country, type_id):
    payload = sample_document(country, document_type_id=type_id, issue_date="2026-11-20", seed=3)
    credit_type, debit_type, full_code, partial_code, lines_code = CASES[(country, type_id)]
    total = payload_total(payload)
    places = catalogue.currency_places(payload["header"]["currency_id"])
    unit = Decimal(1).scaleb(-places)

    full = note(payload)
    assert (full.case, full.document_type_id, full.total) == ("full", credit_type, total)
    assert full.payload["details"] == payload["details"] and full.payload["totals"] == payload["totals"]
    (reference,) = full.payload["references"]
    assert reference == {
        "document_type_id": type_id,
        "reference_document_id": 1234,
        "reference_code": full_code,
        "description": full.reason_code.description,
        "reference_date": "2026-11-20",
    }
    header = full.payload["header"]
    assert header["document_type_id"] == credit_type and header["issue_date"] == "2026-11-21"
    assert header["receiver_tax_id_code"] == payload["header"].get("receiver_tax_id_code")
    assert "document_number" not in header

    amount = (total / 3).quantize(unit)
    part = note(payload, amount=amount, reason="Descuento acordado")
    assert (part.case, part.total, part.payload["totals"]["total_amount"]) == (
        "amount",
        amount,
        float(amount) if places else int(amount),
    )
    assert part.payload["references"][0]["reference_code"] == partial_code
    assert part.payload["references"][0]["description"] == "Descuento acordado"
    assert arithmetic_errors(part.payload) == []
    totals = part.payload["totals"]
    assert Decimal(str(totals["net_amount"])) + Decimal(str(totals["taxes_amount"])) == amount

    first_line = note(payload, lines=[LineSelection(1)])
    assert first_line.case == "lines" and first_line.payload["details"] == payload["details"][:1]
    assert first_line.payload["references"][0]["reference_code"] == lines_code

    if debit_type is None:
        with pytest.raises(NoteRefused, match="Mexico has no debit note.*CFDI de ingreso"):
            note(payload, "debit_note", amount=Decimal(100))
    else:
        debit = note(payload, "debit_note", amount=Decimal(100), remaining=Decimal(0))
        assert (debit.document_type_id, debit.total, len(debit.payload["details"])) == (debit_type, 100, 1)
        assert arithmetic_errors(debit.payload) == []


def test_peru_notes_take_the_series_of_what_they_modify():
    factura = sample_document("PE", document_type_id=96)
    boleta = sample_document("PE", document_type_id=97)
    series = {
        (kind, t): note(p, kind, amount=Decimal(1)).payload["header"]["document_sequence_code"]
        for kind in ("credit_note", "debit_note")
        for t, p in ((96, factura), (97, boleta))
    }
    assert series == {
        ("credit_note", 96): "FC01",
        ("credit_note", 97): "BC01",
        ("debit_note", 96): "FD01",
        ("debit_note", 97): "BD01",
    }


def test_mexico_egreso_is_for_returns_discounts_and_bonuses():
    egreso = note(sample_document("MX", document_type_id=76))
    assert egreso.payload["header"]["additional"]["mx_header"]["receiver_cfdi_usage"] == "G02"


def test_an_original_issued_elsewhere_is_referenced_by_folio():
    payload = chile_factura()
    draft = build_note(
        original(payload, koywe_id=None, folio="4711"),
        "credit_note",
        remaining=Decimal(11_900),
        issue_date=DAY,
    )
    assert draft.referenced_by == "folio"
    assert draft.payload["references"][0]["reference_number"] == "4711"
    assert "reference_document_id" not in draft.payload["references"][0]


def test_partial_amount_is_shared_between_tax_rates_with_the_currency_rounding():
    payload = chile_factura(net=10_000)  # 10,000 + 1,900 IVA
    exempt = copy.deepcopy(payload["details"][0])
    exempt.update(line_description="Exento", unit_price=5000, total_taxes=0, total_amount_line=5000, taxes=[])
    payload["details"].append(exempt)
    payload["totals"] = {"net_amount": 15_000, "taxes_amount": 1_900, "total_amount": 16_900}
    part = note(payload, amount=Decimal(1000))
    taxed, untaxed = part.payload["details"]
    assert taxed["total_amount_line"] + untaxed["total_amount_line"] == 1000
    assert untaxed["taxes"] == [] and untaxed["total_taxes"] == 0
    assert taxed["total_amount_line"] == 704  # 1000 x 11900 / 16900, CLP whole pesos
    assert (taxed["unit_price"], taxed["total_taxes"]) == (592, 112)  # 704 / 1.19 = 591.6 -> 592
    assert arithmetic_errors(part.payload) == []


def test_a_smaller_quantity_scales_the_line_and_its_fixed_discount():
    payload = chile_factura(net=10_000)
    line = payload["details"][0]
    line.update(quantity=4, unit_price=2500, modifier_amount=-400, total_taxes=1824, total_amount_line=11424)
    line["taxes"][0]["tax_amount"] = 1824
    payload["totals"] = {"net_amount": 9600, "taxes_amount": 1824, "total_amount": 11424}
    part = note(payload, lines=[LineSelection(1, Decimal(1))])
    (credited,) = part.payload["details"]
    assert (credited["quantity"], credited["modifier_amount"]) == (1, -100)
    assert (credited["total_taxes"], credited["total_amount_line"]) == (456, 2856)  # 2400 + 19 %
    assert part.total == 2856 and arithmetic_errors(part.payload) == []


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"amount": Decimal(20_000)}, "amount", "exceeds what is left to credit on INV-1: 11900 CLP"),
        ({"amount": Decimal("100.5")}, "amount", "more decimals than CLP amounts"),
        ({"amount": Decimal(1), "lines": [LineSelection(1)]}, "amount", "not both"),
        ({"lines": [LineSelection(2)]}, "lines", "line 2 does not exist"),
        ({"lines": [LineSelection(1), LineSelection(1)]}, "lines", "named twice"),
        ({"lines": [LineSelection(1, Decimal(2))]}, "lines", "quantity 1"),
        ({"remaining": Decimal(0)}, "amount", "nothing is left to credit"),
        ({"amount": Decimal(5000), "reason_code": "1"}, "reason_code", "is for the whole document"),
        ({"reason_code": "7"}, "reason_code", "not one the project sends"),
    ],
)
def test_refusals_name_the_field(kwargs, field, message):
    with pytest.raises(NoteRefused, match=message) as caught:
        note(chile_factura(), **kwargs)
    assert caught.value.field == field


def test_remaining_below_the_total_credits_what_is_left_as_a_partial_note():
    draft = note(chile_factura(), remaining=Decimal(4000))
    assert (draft.case, draft.total, draft.reason_code.code) == ("amount", 4000, "3")


def test_debit_notes_need_an_amount_and_no_lines():
    with pytest.raises(NoteRefused, match="needs an amount"):
        note(chile_factura(), "debit_note")
    with pytest.raises(NoteRefused, match="not lines"):
        note(chile_factura(), "debit_note", lines=[LineSelection(1)])


def test_documents_without_notes_and_notes_of_notes_are_refused():
    guia = chile_factura()
    guia["header"]["document_type_id"] = 54
    with pytest.raises(NoteRefused, match="Chile has no credit note for a Guía"):
        note(guia)
    nc = chile_factura()
    nc["header"]["document_type_id"] = 16
    with pytest.raises(NoteRefused, match="not credited or debited by another note"):
        note(nc)
    pos = sample_document("CO", document_type_id=82)
    pos["header"]["document_type_id"] = 87
    with pytest.raises(NoteRefused, match="Colombia has no debit note"):
        note(pos, "debit_note", amount=Decimal(100))


def test_reason_codes_compare_as_numbers_and_respect_the_case():
    assert choose_reason_code(catalogue.PERU, "credit_note", "full", 1).code == "01"
    assert choose_reason_code(catalogue.PERU, "credit_note", "amount", "10").code == "10"
    with pytest.raises(NoteRefused, match="01 Anulación de la operación"):
        choose_reason_code(catalogue.PERU, "credit_note", "full", "09")
    for (country, kind), codes in REASON_CODES.items():
        assert codes and all(c.source for c in codes), (country, kind)
        assert not any(int(c.code) == 5 for c in codes if country == catalogue.PERU)  # 5 = internal reference


def test_request_parsing():
    assert parse_amount("1500.50") == Decimal("1500.50") and parse_amount(None) is None
    for bad in ("abc", 0, -3, True):
        with pytest.raises(NoteRefused):
            parse_amount(bad)
    assert parse_lines("1, 3") == [LineSelection(1), LineSelection(3)]
    assert parse_lines([{"line": 2, "quantity": "1.5"}]) == [LineSelection(2, Decimal("1.5"))]
    assert parse_lines([]) is None
    with pytest.raises(NoteRefused, match="not a line number"):
        parse_lines(["first"])
    assert note_reference("INV-1", "credit_note", 2) == "INV-1/NC-2"
    assert note_reference("INV-1", "debit_note", 1) == "INV-1/ND-1"


def test_references_are_shaped_like_koywes_own_note_examples():
    """Koywe's note examples (``../shared``): each note type is the one the catalogue gives for the type it
    references, and a note of ours referencing by folio carries the same fields as theirs."""
    import json

    from koywe_test_support import shared_koywe_or_skip

    folder = shared_koywe_or_skip() / "examples" / "requests"
    examples = [
        json.loads(path.read_text())
        for path in sorted(folder.glob("*.json"))
        if "credit_note" in path.name or "debit_note" in path.name
    ]
    assert len(examples) >= 9
    for example in examples:
        (theirs,) = example["references"]
        kind = (
            "credit_note"
            if catalogue.document_type(example["header"]["document_type_id"]).kind.endswith("credit_note")
            else "debit_note"
        )
        expected = catalogue.note_type(theirs["document_type_id"], kind)
        assert expected is not None and expected.document_type_id == int(
            example["header"]["document_type_id"]
        )
        payload = chile_factura()
        payload["header"]["document_type_id"] = int(theirs["document_type_id"])
        mine = build_note(
            original(payload, koywe_id=None, folio=theirs["reference_number"]),
            kind,
            remaining=Decimal(11_900),
            issue_date=DAY,
            amount=None if kind == "credit_note" else Decimal(100),
        ).payload["references"][0]
        assert set(mine) == set(theirs) - {"additional"}, (
            example["header"]["document_type_id"],
            mine,
            theirs,
        )
        assert mine["reference_number"] == theirs["reference_number"]
