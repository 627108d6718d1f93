"""Credit and debit notes validated against their original, and ``DELETE`` of drafts, over HTTP."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

PERU_FACTURA: dict[str, Any] = {
    "header": {
        "account_id": 16268,
        "document_type_id": 96,
        "document_sequence_code": "F001",
        "issue_date": "2026-11-20",
        "currency_id": 7,
        "receiver_tax_id_code": "20473731828",
    },
    "details": [{"quantity": 1, "line_description": "Servicio", "unit_price": 100, "total_amount_line": 118}],
    "totals": {"net_amount": 100, "taxes_amount": 18, "total_amount": 118},
}


def peru(
    type_id: int = 96, *, series: str | None = None, total: float = 118, **header: Any
) -> dict[str, Any]:
    body = copy.deepcopy(PERU_FACTURA)
    body["header"].update(document_type_id=type_id, **header)
    if series is not None:
        body["header"]["document_sequence_code"] = series
    net = round(total / 1.18, 2)
    body["totals"] = {"net_amount": net, "taxes_amount": round(total - net, 2), "total_amount": total}
    body["details"][0].update(unit_price=net, total_amount_line=total)
    return body


def note_of(
    original: dict, *, type_id: int = 98, total: float = 118, code: Any = "01", by: str = "id", **extra
):
    body = peru(type_id, series="FC01" if type_id == 98 else "FD01", total=total)
    entry: dict[str, Any] = {
        "document_type_id": original["header"]["document_type_id"],
        "reference_code": code,
        "description": "Anulacion de la operacion",
        "reference_date": "2026-11-20",
    }
    if by == "id":
        entry["reference_document_id"] = original["document_id"]
    else:
        entry["reference_number"] = original["header"]["document_number"]
    entry.update(extra)
    body["references"] = [entry, {"reference_code": 5, "reference_number": "INV-1/NC-1", "description": "x"}]
    return body


def post(api, body):
    return api.post(f"{api.base}/documents", json=body)


def created(api, body) -> dict:
    response = post(api, body)
    assert response.status_code == 201, response.text
    return response.json()


def test_partial_credit_notes_up_to_the_total_then_refused(api, sandbox):
    original = created(api, peru(total=118))
    created(api, note_of(original, total=50))
    created(api, note_of(original, total=60, by="folio"))  # by folio: the same original, counted too
    refused = post(api, note_of(original, total=8.01))
    assert refused.status_code == 400
    assert "exceed" in refused.json()["error"] and "110" in refused.json()["error"]
    created(api, note_of(original, total=8))  # exactly what is left
    created(api, note_of(original, type_id=99, total=500, code="02"))  # a debit note has no ceiling
    stats = sandbox.stats()
    assert (stats["notes_created"], stats["notes_refused"], stats["documents_created"]) == (4, 1, 5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda note, original: note.update(references=note["references"][1:]), "must reference"),
        (lambda note, original: note["references"][0].update(reference_number="F001-1"), "never both"),
        (lambda note, original: note["references"][0].update(reference_document_id=999_999), "not found"),
        (lambda note, original: note["references"][0].update(reference_code="05X"), "reason"),
        (lambda note, original: note["references"][0].update(reference_code="14"), "reason"),
        (lambda note, original: note["references"][0].update(document_type_id=97), "does not match"),
        (lambda note, original: note["header"].update(document_sequence_code="BC01"), "takes a F series"),
        (lambda note, original: note["header"].update(receiver_tax_id_code="20100070970"), "receiver"),
        (lambda note, original: note["header"].update(currency_id=5), "currency"),
    ],
)
def test_notes_that_do_not_fit_their_original_are_refused(api, sandbox, change, message):
    original = created(api, peru())
    note = note_of(original)
    change(note, original)
    response = post(api, note)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert sandbox.stats()["documents_created"] == 1


def test_a_note_cannot_modify_a_document_of_another_kind(api, make_doc):
    chile = created(api, make_doc(type_id=2))
    note = note_of(chile, code="01")
    note["references"][0]["document_type_id"] = 2
    note["header"].update(account_id=chile["header"]["account_id"], currency_id=39)
    response = post(api, note)
    assert response.status_code == 400 and "cannot be modified by type 98" in response.json()["error"]


def test_boleta_notes_take_the_b_series(api):
    boleta = created(api, peru(97, series="B001", issue_date=date.today().isoformat()))  # boletas: today
    assert post(api, note_of(boleta)).status_code == 400  # FC01 for a boleta
    note = note_of(boleta)
    note["header"]["document_sequence_code"] = "BC01"
    assert created(api, note)["header"]["document_number"] == "BC01-00000001"


def test_a_folio_issued_elsewhere_is_accepted_on_its_reference_alone(api):
    elsewhere = {"header": {"document_type_id": 96, "document_number": "F009-00000042"}}
    note = note_of(elsewhere, by="folio", total=5000)  # no amount to compare with
    assert created(api, note)["references"][0]["reference_number"] == "F009-00000042"


def test_notes_of_drafts_and_cancelled_documents_are_refused(api, sandbox, make_doc):
    draft = created(api, make_doc(type_id=2, draft=True))
    note = make_doc(type_id=16)
    note["references"] = [
        {
            "document_type_id": 2,
            "reference_document_id": draft["document_id"],
            "reference_code": 1,
            "description": "x",
        }
    ]
    response = post(api, note)
    assert response.status_code == 400 and "draft" in response.json()["error"]

    mexico = make_doc(type_id=76, account_id=11857, currency_id=31)
    invoice = created(api, mexico)
    assert api.put(f"{api.base}/documents/{invoice['document_id']}", json={"document_status": "2"}).ok
    egreso = make_doc(type_id=77, account_id=11857, currency_id=31)
    egreso["references"] = [
        {
            "document_type_id": 76,
            "reference_document_id": invoice["document_id"],
            "reference_code": "01",
            "description": "x",
        }
    ]
    response = post(api, egreso)
    assert response.status_code == 400 and "cancelled" in response.json()["error"]


def test_delete_removes_drafts_only(api, sandbox, make_doc):
    draft = created(api, make_doc(draft=True))
    issued = created(api, make_doc())
    refused = api.delete(f"{api.base}/documents/{issued['document_id']}")
    assert (refused.status_code, refused.json()) == (400, {"error": "Only draft documents can be deleted"})
    deleted = api.delete(f"{api.base}/documents/{draft['document_id']}")
    assert (deleted.status_code, deleted.json()) == (
        200,
        {"document_id": draft["document_id"], "deleted": True},
    )
    assert api.get(f"{api.base}/documents/{draft['document_id']}").status_code == 404
    assert api.delete(f"{api.base}/documents/{draft['document_id']}").status_code == 404
    listed = api.get(f"{api.base}/documents", params={"per_page": 100}).json()["_embedded"]["documents"]
    assert [d["document_id"] for d in listed] == [issued["document_id"]]
    assert sandbox.stats()["documents_deleted"] == 1
    assert (
        api.delete(f"{api.base}/documents/{issued['document_id']}", headers={"Authorization": ""}).status_code
        == 401
    )
