"""Documents: creation shape, folios, statuses, validation, GET by id, PUT transitions, duplicates."""

from __future__ import annotations

import base64
from datetime import date, timedelta

import pytest


def test_create_returns_201_koywe_document(api, sandbox, make_doc):
    body = make_doc(ref="tx-1")
    response = api.post(f"{api.base}/documents", json=body)
    assert response.status_code == 201
    doc = response.json()
    assert doc["document_id"] == 1000
    header = doc["header"]
    for key, value in body["header"].items():
        assert header[key] == value
    assert header["document_number"] == 1
    assert header["document_type_taxbureau"] == "33"
    assert doc["document_status"] == 1  # the document's life: issued
    assert header["document_status"] == 1  # the counterparty's view: issued, not yet sent to it
    assert header["received_issued_flag"] == 1
    # Chile validation is asynchronous: sending 0, validation 1 (in process)
    assert (header["taxbureau_sending_status"], header["taxbureau_validation_status"]) == (0, 1)
    assert doc["details"] == body["details"]
    assert doc["references"] == body["references"]
    assert doc["totals"] == body["totals"]
    assert doc["result"] == {"status": 0, "error_message": ""}
    assert base64.b64decode(doc["electronic_document"]["document_xml"]).startswith(b"<?xml")
    assert base64.b64decode(doc["electronic_document"]["document_pdf"]).startswith(b"%PDF")
    assert "stamp_img" not in doc["electronic_document"]
    assert api.get(f"{api.base}/documents/1000").json() == doc
    assert sandbox.documents() == [doc]
    assert sandbox.stats()["documents_created"] == 1


def test_generate_stamp_adds_stamp_image(api, make_doc):
    response = api.post(f"{api.base}/documents", params={"generate_stamp": 1}, json=make_doc())
    assert response.status_code == 201
    assert response.json()["electronic_document"]["stamp_img"]


def test_folio_sequences_per_account_and_type(api, make_doc):
    def folio(**kwargs):
        response = api.post(f"{api.base}/documents", json=make_doc(**kwargs))
        assert response.status_code == 201, response.text
        return response.json()["header"]["document_number"]

    assert [folio(type_id=2) for _ in range(3)] == [1, 2, 3]
    assert folio(type_id=37) == 1
    assert folio(type_id="2", account_id=999) == 1
    assert folio(type_id=2) == 4
    ids = [
        d["document_id"]
        for d in api.get(f"{api.base}/documents", params={"per_page": 100}).json()["_embedded"]["documents"]
    ]
    assert ids == list(range(1000, 1006))


#: Note type -> (the type of the original it is created against, a reason code of its country).
NOTE_OF = {98: (96, "01"), 99: (96, "02"), 83: (82, 2), 84: (82, 3), 77: (76, "01"), 16: (2, 1), 17: (2, 3)}


@pytest.mark.parametrize(
    ("type_id", "bureau", "series", "statuses"),
    [
        (96, "01", "F001", (1, 3)),
        (97, "03", "B001", (1, 3)),
        (98, "07", "FC01", (1, 3)),
        (99, "08", "FD01", (1, 3)),
        (82, "01", None, (1, 3)),
        (83, "91", None, (1, 3)),
        (84, "92", None, (1, 3)),
        (76, "I", None, (1, 3)),
        (77, "E", None, (1, 3)),
        (78, "T", None, (1, 3)),
        (32, "34", None, (0, 1)),
        (37, "39", None, (0, 1)),
        (41, "41", None, (0, 1)),
        (16, "61", None, (0, 1)),
        (17, "56", None, (0, 1)),
        (555, "555", None, (1, 3)),
    ],
)
def test_taxbureau_codes_series_and_statuses(api, make_doc, type_id, bureau, series, statuses):
    body = make_doc(type_id=type_id, issue_date=date.today().isoformat())

    def create() -> dict:
        if type_id in NOTE_OF:  # a note is validated against the document it modifies: give it one
            original_type, code = NOTE_OF[type_id]
            original = api.post(f"{api.base}/documents", json=make_doc(type_id=original_type)).json()
            body["references"] = [
                {
                    "document_type_id": original_type,
                    "reference_document_id": original["document_id"],
                    "reference_code": code,
                    "description": "Anulacion",
                }
            ]
        response = api.post(f"{api.base}/documents", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    first = create()
    second = create()
    header = second["header"]
    assert header["document_type_taxbureau"] == bureau
    assert (header["taxbureau_sending_status"], header["taxbureau_validation_status"]) == statuses
    if series:
        assert first["header"]["document_number"] == f"{series}-00000001"
        assert header["document_number"] == f"{series}-00000002"
    else:
        assert (first["header"]["document_number"], header["document_number"]) == (1, 2)


def test_peru_series_from_document_sequence_code(api, make_doc):
    body = make_doc(type_id="96", document_sequence_code="F007")
    assert api.post(f"{api.base}/documents", json=body).json()["header"]["document_number"] == "F007-00000001"


def _without(body, path):
    obj = body
    *parents, last = path
    for key in parents:
        obj = obj[key]
    del obj[last]
    return body


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: _without(b, ["header", "account_id"]), "header.account_id"),
        (lambda b: _without(b, ["header", "document_type_id"]), "header.document_type_id"),
        (lambda b: b["header"].update(document_type_id="factura"), "header.document_type_id"),
        (lambda b: _without(b, ["header", "issue_date"]), "header.issue_date"),
        (lambda b: b["header"].update(issue_date="15-04-2025"), "header.issue_date"),
        (lambda b: b["header"].update(issue_date="2025-02-30"), "header.issue_date"),
        (lambda b: _without(b, ["header", "currency_id"]), "header.currency_id"),
        (lambda b: _without(b, ["header"]), "header"),
        (lambda b: b.update(details=[]), "details"),
        (lambda b: _without(b, ["details", 0, "quantity"]), "details[0].quantity"),
        (lambda b: _without(b, ["details", 0, "unit_price"]), "details[0].unit_price"),
        (lambda b: b["details"][0].update(total_amount_line="abc"), "details[0].total_amount_line"),
        (lambda b: _without(b, ["totals", "net_amount"]), "totals.net_amount"),
        (lambda b: _without(b, ["totals", "total_amount"]), "totals.total_amount"),
        (lambda b: b["totals"].update(total_amount=1191), "totals.total_amount"),
        (lambda b: b["header"].update(document_type_id=97, issue_date="2020-01-01"), "header.issue_date"),
    ],
)
def test_validation_errors_are_400_naming_the_field(api, sandbox, make_doc, mutate, field):
    body = make_doc()
    mutate(body)
    response = api.post(f"{api.base}/documents", json=body)
    assert response.status_code == 400
    assert field in response.json()["error"]
    assert sandbox.documents() == []


def test_totals_tolerance_and_string_amounts(api, make_doc):
    body = make_doc()
    body["totals"] = {"net_amount": "100.00", "taxes_amount": "18.005", "total_amount": "118.01"}
    assert api.post(f"{api.base}/documents", json=body).status_code == 201


def test_peru_boleta_needs_today(api, make_doc):
    today = api.post(f"{api.base}/documents", json=make_doc(type_id=97, issue_date=date.today().isoformat()))
    assert today.status_code == 201
    old = date.today() - timedelta(days=3)
    response = api.post(f"{api.base}/documents", json=make_doc(type_id=97, issue_date=old.isoformat()))
    assert response.status_code == 400
    assert "boleta" in response.json()["error"]


def test_invalid_json_is_400(api):
    response = api.post(
        f"{api.base}/documents", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "error" in response.json()


def test_get_unknown_document_is_404(api):
    for doc_id in ("4242", "abc"):
        response = api.get(f"{api.base}/documents/{doc_id}")
        assert response.status_code == 404
        assert response.json() == {"error": "Document not found"}


def test_put_issues_a_chile_draft(api, sandbox, make_doc):
    doc = api.post(f"{api.base}/documents", json=make_doc(draft=True)).json()
    assert (doc["document_status"], doc["header"]["document_status"]) == (0, 0)
    assert sandbox.validation()["in_process"] == []  # a draft is not sent to the tax bureau
    url = f"{api.base}/documents/{doc['document_id']}"
    response = api.put(url, json={"document_status": "1"})
    assert response.status_code == 200
    assert (response.json()["document_status"], response.json()["header"]["document_status"]) == (1, 1)
    assert sandbox.validation()["in_process"] == [doc["document_id"]]  # now it is
    assert api.put(url, json={"document_status": 1}).status_code == 200  # idempotent
    refused = api.put(url, json={"document_status": "2"})  # Chile cannot be cancelled
    assert refused.status_code == 400
    assert refused.json() == {"error": "Cannot update a signed document"}
    assert api.get(url).json()["document_status"] == 1


def test_put_cancels_a_mexico_invoice(api, make_doc):
    doc = api.post(f"{api.base}/documents", json=make_doc(type_id=76, currency_id=31)).json()
    url = f"{api.base}/documents/{doc['document_id']}"
    cancelled = api.put(url, json={"document_status": "2"})
    assert cancelled.status_code == 200
    assert cancelled.json()["document_status"] == 2  # top level: the document's life
    assert cancelled.json()["header"]["document_status"] == 1  # the counterparty's view is another field
    assert "cancellation_status" not in cancelled.json()  # immediate cancellation: no pending state
    again = api.put(url, json={"document_status": 2})
    assert again.status_code == 200
    assert again.json()["document_status"] == 2
    assert api.get(url).json()["document_status"] == 2
    assert api.put(url, json={"document_status": "1"}).status_code == 400  # no way back


@pytest.mark.parametrize(
    ("type_id", "draft", "target"), [(96, False, "2"), (82, False, "2"), (96, True, "1"), (76, True, "2")]
)
def test_put_refused_transitions(api, make_doc, type_id, draft, target):
    doc = api.post(f"{api.base}/documents", json=make_doc(type_id=type_id, draft=draft)).json()
    response = api.put(f"{api.base}/documents/{doc['document_id']}", json={"document_status": target})
    assert response.status_code == 400
    assert response.json() == {"error": "Cannot update a signed document"}


def test_put_bad_value_and_unknown_document(api, make_doc):
    doc = api.post(f"{api.base}/documents", json=make_doc()).json()
    bad = api.put(f"{api.base}/documents/{doc['document_id']}", json={"document_status": "7"})
    assert bad.status_code == 400
    assert "document_status" in bad.json()["error"]
    assert api.put(f"{api.base}/documents/9999", json={"document_status": "1"}).status_code == 404


def test_duplicate_references_counting(api, sandbox, make_doc):
    api.post(f"{api.base}/documents", json=make_doc(ref="tx-1"))
    api.post(f"{api.base}/documents", json=make_doc(ref="tx-2"))
    assert sandbox.stats()["duplicate_references"] == 0
    api.post(f"{api.base}/documents", json=make_doc(ref="tx-1"))
    assert sandbox.stats()["duplicate_references"] == 1
    api.post(f"{api.base}/documents", json=make_doc(ref="tx-1"))  # third copy: still one duplicated reference
    same_ref_other_account = make_doc(ref="tx-2", account_id=77)
    api.post(f"{api.base}/documents", json=same_ref_other_account)
    assert sandbox.stats()["duplicate_references"] == 1
    string_code = make_doc()
    string_code["references"] = [{"reference_code": "05", "reference_number": "tx-2"}]
    api.post(f"{api.base}/documents", json=string_code)
    other_code = make_doc()
    other_code["references"] = [{"reference_code": 801, "reference_number": "tx-1"}]
    api.post(f"{api.base}/documents", json=other_code)
    assert sandbox.stats()["duplicate_references"] == 2
