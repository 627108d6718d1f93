"""Document outcomes: 2xx without document_id, result.status 2, tax-bureau rejection, planted documents."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
import requests
from sandbox_support import get_token, session_for, subscribe

PERU_FACTURA = {"type_id": 96, "currency_id": 7}
COLOMBIA_FACTURA = {"type_id": 82, "currency_id": 28}
MEXICO_INGRESO = {"type_id": 76, "currency_id": 31}


def _lookup(api, reference):
    body = api.get(
        f"{api.base}/documents", params={"reference_code": 5, "reference_number": reference}
    ).json()
    return body["_embedded"]["documents"]


# --------------------------------------------------------------------------- no document_id


def test_no_document_id_error_shape_creates_nothing(api, sandbox, make_doc):
    faults = sandbox.set_faults(no_document_id_rate=1)
    assert (faults["no_document_id_rate"], faults["no_document_id_body"]) == (1.0, "error")  # default shape
    response = api.post(f"{api.base}/documents", json=make_doc(ref="nid-1"))
    assert response.status_code == 200
    assert response.json() == {"error": "Internal processing error"}
    assert sandbox.documents() == []
    assert _lookup(api, "nid-1") == []
    stats = sandbox.stats()
    assert (stats["no_document_id_responses"], stats["documents_created"]) == (1, 0)


def test_no_document_id_empty_shape(api, sandbox, make_doc):
    sandbox.set_faults(no_document_id_rate=1, no_document_id_body="empty")
    response = api.post(f"{api.base}/documents", json=make_doc(ref="nid-2"))
    assert response.status_code == 201
    assert response.json() == {}
    assert sandbox.documents() == []
    assert sandbox.stats()["no_document_id_responses"] == 1


def test_no_document_id_keeps_validation_errors(api, sandbox, make_doc):
    sandbox.set_faults(no_document_id_rate=1)
    body = make_doc()
    del body["header"]["currency_id"]
    response = api.post(f"{api.base}/documents", json=body)
    assert response.status_code == 400  # an invalid body is refused before the fault is rolled
    assert "header.currency_id" in response.json()["error"]
    assert sandbox.stats()["no_document_id_responses"] == 0


def test_no_document_id_partial_rate_is_seeded_and_consistent(api, sandbox, make_doc):
    def run():
        outcomes = []
        for i in range(20):
            response = api.post(f"{api.base}/documents", json=make_doc(ref=f"p-{i}"))
            outcomes.append("document_id" in response.json())
        return outcomes

    sandbox.set_faults(seed=11, no_document_id_rate=0.5)
    first = run()
    assert True in first and False in first
    stats = sandbox.stats()
    assert stats["no_document_id_responses"] == first.count(False)
    assert stats["documents_created"] == len(sandbox.documents()) == first.count(True)
    sandbox.reset()  # re-seeds, but also puts no_document_id_rate back to its start-up value (0)
    assert sandbox.faults()["no_document_id_rate"] == 0
    sandbox.set_faults(no_document_id_rate=0.5)
    api.headers["Authorization"] = f"Bearer {get_token(sandbox)}"  # reset revoked the old token
    assert run() == first


@pytest.mark.parametrize(
    "payload",
    [
        {"no_document_id_rate": 1.5},
        {"no_document_id_body": "html"},
        {"result_status_2_rate": -0.1},
        {"result_status_2_rate": "x"},
        {"list_shape": "xml"},
        {"list_items": "summary"},
        {"cancel_pending_acceptance": "yes"},
    ],
)
def test_invalid_outcome_faults_are_400_and_change_nothing(sandbox, payload):
    before = sandbox.faults()
    response = httpx.post(
        f"{sandbox.url}/_sandbox/faults", json={"no_document_id_rate": 0.5, **payload}, trust_env=False
    )
    assert response.status_code == 400
    assert "error" in response.json()
    assert sandbox.faults() == before


# --------------------------------------------------------------------------- result.status 2


@pytest.mark.parametrize("kind", [PERU_FACTURA, COLOMBIA_FACTURA, MEXICO_INGRESO, {"type_id": 2}])
def test_result_status_2_creates_the_document_not_sent(api, sandbox, make_doc, kind):
    sandbox.set_faults(result_status_2_rate=1)
    response = api.post(f"{api.base}/documents", json=make_doc(ref="r2-1", **kind))
    assert response.status_code == 201
    doc = response.json()
    assert doc["result"]["status"] == 2
    assert doc["result"]["error_message"].startswith("Error 1033: ")
    header = doc["header"]
    assert doc["document_id"] == 1000
    assert header["document_number"] in (1, "F001-00000001")
    assert (header["taxbureau_sending_status"], header["taxbureau_validation_status"]) == (0, 0)
    assert doc["document_status"] == 1
    assert api.get(f"{api.base}/documents/1000").json() == doc
    assert [d["document_id"] for d in _lookup(api, "r2-1")] == [1000]
    assert sandbox.validation()["in_process"] == [1000]
    stats = sandbox.stats()
    assert (stats["documents_created"], stats["result_status_2_documents"]) == (1, 1)


def test_result_status_2_completes_through_validate_with_callback(api, sandbox, make_doc, callbacks):
    subscribe(api, callbacks)
    sandbox.set_faults(result_status_2_rate=1)
    doc = api.post(f"{api.base}/documents", json=make_doc(ref="r2-2", **PERU_FACTURA)).json()
    answer = sandbox.validate()
    assert answer == {"validated": [doc["document_id"]], "callbacks": {"sent": 1, "failed": 0}}
    stored = api.get(f"{api.base}/documents/{doc['document_id']}").json()
    header = stored["header"]
    assert (header["taxbureau_sending_status"], header["taxbureau_validation_status"]) == (1, 3)
    assert stored["result"] == doc["result"]  # the creation answer is kept
    (callback,) = callbacks.received
    assert callback["body"]["taxbureau_validation_status"] == 3
    assert callback["body"]["taxbureau_send_status"] == 1
    assert callback["auth"] == ("hook", "pw")
    assert sandbox.validate()["validated"] == []  # nothing left in process


def test_result_status_2_follows_the_outcome_mix(api, sandbox, make_doc):
    sandbox.set_faults(result_status_2_rate=1)
    sandbox.set_validation(outcomes={"4": 1})
    doc = api.post(f"{api.base}/documents", json=make_doc(**COLOMBIA_FACTURA)).json()
    sandbox.validate()
    header = api.get(f"{api.base}/documents/{doc['document_id']}").json()["header"]
    assert (header["taxbureau_sending_status"], header["taxbureau_validation_status"]) == (1, 4)
    assert header["taxbureau_validation_comments"]


def test_result_status_2_completes_on_the_validation_schedule(manual_sandbox, make_doc, callbacks):
    api = session_for(manual_sandbox)
    subscribe(api, callbacks)
    manual_sandbox.set_faults(result_status_2_rate=1)
    manual_sandbox.set_validation(delay_seconds=30)
    doc = api.post(f"{api.base}/documents", json=make_doc(**MEXICO_INGRESO)).json()
    assert manual_sandbox.advance_clock(29.5)["validated"] == []
    assert (
        api.get(f"{api.base}/documents/{doc['document_id']}").json()["header"]["taxbureau_validation_status"]
        == 0
    )
    answer = manual_sandbox.advance_clock(0.5)
    assert (answer["validated"], answer["callbacks"]) == ([doc["document_id"]], {"sent": 1, "failed": 0})
    header = api.get(f"{api.base}/documents/{doc['document_id']}").json()["header"]
    assert (header["taxbureau_sending_status"], header["taxbureau_validation_status"]) == (1, 3)
    assert callbacks.received[0]["body"]["document_id"] == doc["document_id"]


def test_result_status_2_spares_drafts(api, sandbox, make_doc):
    sandbox.set_faults(result_status_2_rate=1)
    doc = api.post(f"{api.base}/documents", json=make_doc(draft=True)).json()
    assert doc["result"] == {"status": 0, "error_message": ""}
    assert sandbox.stats()["result_status_2_documents"] == 0


def test_result_status_2_is_reset(api, sandbox, make_doc):
    sandbox.set_faults(result_status_2_rate=1)
    sandbox.reset()
    assert sandbox.faults()["result_status_2_rate"] == 0
    api = session_for(sandbox)
    assert api.post(f"{api.base}/documents", json=make_doc()).json()["result"]["status"] == 0


# --------------------------------------------------------------------------- tax-bureau rejection


@pytest.mark.parametrize("kind", [PERU_FACTURA, COLOMBIA_FACTURA, MEXICO_INGRESO])
def test_rejected_reference_is_rejected_synchronously(api, sandbox, make_doc, kind):
    view = sandbox.reject_references("bad-1", "bad-2")
    assert view["reject_references"] == ["bad-1", "bad-2"]
    bad = api.post(f"{api.base}/documents", json=make_doc(ref="bad-2", **kind)).json()
    good = api.post(f"{api.base}/documents", json=make_doc(ref="good-1", **kind)).json()
    header = bad["header"]
    assert (header["taxbureau_sending_status"], header["taxbureau_validation_status"]) == (1, 5)
    assert "Rechazado" in header["taxbureau_validation_comments"]
    assert bad["result"] == {"status": 0, "error_message": ""}  # created fine; the bureau rejected it
    assert good["header"]["taxbureau_validation_status"] == 3
    assert "taxbureau_validation_comments" not in good["header"]
    assert sandbox.validation()["in_process"] == []
    listed = api.get(f"{api.base}/documents", params={"taxbureau_validation_status": 5}).json()
    assert [d["document_id"] for d in listed["_embedded"]["documents"]] == [bad["document_id"]]


def test_rejected_reference_is_rejected_asynchronously_in_chile(api, sandbox, make_doc, callbacks):
    subscribe(api, callbacks)
    sandbox.set_validation(reject_references=["cl-bad"])
    bad = api.post(f"{api.base}/documents", json=make_doc(ref="cl-bad")).json()
    good = api.post(f"{api.base}/documents", json=make_doc(ref="cl-good")).json()
    assert (bad["header"]["taxbureau_sending_status"], bad["header"]["taxbureau_validation_status"]) == (0, 1)
    assert sandbox.validate()["validated"] == [bad["document_id"], good["document_id"]]
    header = api.get(f"{api.base}/documents/{bad['document_id']}").json()["header"]
    assert (header["taxbureau_sending_status"], header["taxbureau_validation_status"]) == (1, 5)
    assert "Rechazado" in header["taxbureau_validation_comments"]
    assert (
        api.get(f"{api.base}/documents/{good['document_id']}").json()["header"]["taxbureau_validation_status"]
        == 3
    )
    by_id = {c["body"]["document_id"]: c["body"] for c in callbacks.received}
    assert by_id[bad["document_id"]]["taxbureau_validation_status"] == 5
    assert (
        by_id[bad["document_id"]]["taxbureau_validation_comments"] == header["taxbureau_validation_comments"]
    )
    assert by_id[good["document_id"]]["taxbureau_validation_status"] == 3


def test_rejection_on_the_chile_validation_schedule(manual_sandbox, make_doc):
    api = session_for(manual_sandbox)
    manual_sandbox.set_validation(delay_seconds=120, reject_references=["late-bad"])
    doc = api.post(f"{api.base}/documents", json=make_doc(ref="late-bad")).json()
    assert manual_sandbox.advance_clock(121)["validated"] == [doc["document_id"]]
    assert (
        api.get(f"{api.base}/documents/{doc['document_id']}").json()["header"]["taxbureau_validation_status"]
        == 5
    )


def test_rejection_applies_to_result_status_2_and_issued_drafts(api, sandbox, make_doc):
    sandbox.reject_references("x-1", "x-2")
    sandbox.set_faults(result_status_2_rate=1)
    peru = api.post(f"{api.base}/documents", json=make_doc(ref="x-1", **PERU_FACTURA)).json()
    assert peru["header"]["taxbureau_validation_status"] == 0  # not sent yet: rejected when it is
    sandbox.set_faults(result_status_2_rate=0)
    draft = api.post(f"{api.base}/documents", json=make_doc(ref="x-2", draft=True)).json()
    api.put(f"{api.base}/documents/{draft['document_id']}", json={"document_status": "1"})
    assert sandbox.validate()["validated"] == [peru["document_id"], draft["document_id"]]
    for doc in (peru, draft):
        assert (
            api.get(f"{api.base}/documents/{doc['document_id']}").json()["header"][
                "taxbureau_validation_status"
            ]
            == 5
        )


def test_explicit_validate_outcome_wins_over_rejection(api, sandbox, make_doc):
    sandbox.reject_references("forced")
    doc = api.post(f"{api.base}/documents", json=make_doc(ref="forced")).json()
    sandbox.validate(outcome=4)
    assert (
        api.get(f"{api.base}/documents/{doc['document_id']}").json()["header"]["taxbureau_validation_status"]
        == 4
    )


def test_reject_references_replace_reset_and_validation(api, sandbox, make_doc):
    sandbox.reject_references("a")
    assert sandbox.set_validation(reject_references=[42])["reject_references"] == ["42"]
    doc = api.post(f"{api.base}/documents", json=make_doc(ref="a", **PERU_FACTURA)).json()
    assert doc["header"]["taxbureau_validation_status"] == 3  # "a" is no longer in the list
    for bad in ("a", [True], [""], [None], {"a": 1}):
        response = httpx.post(
            f"{sandbox.url}/_sandbox/validation", json={"reject_references": bad}, trust_env=False
        )
        assert response.status_code == 400
    assert sandbox.validation()["reject_references"] == ["42"]
    assert sandbox.reject_references()["reject_references"] == []
    sandbox.reject_references("b")
    sandbox.reset()
    assert sandbox.validation()["reject_references"] == []


# --------------------------------------------------------------------------- planted documents


def test_plant_document_bypasses_the_api_and_its_stats(api, sandbox, make_doc):
    planted = sandbox.plant_document(make_doc(ref="oob-1", receiver_tax_id_code="11111111-1"))
    assert planted["document_id"] == 1000
    assert planted["header"]["document_number"] == 1
    assert planted["header"]["receiver_tax_id_code"] == "11111111-1"
    assert planted["references"][0]["reference_number"] == "oob-1"
    assert sandbox.documents() == [planted]
    stats = sandbox.stats()
    assert (stats["documents_planted"], stats["documents_created"], stats["duplicate_references"]) == (
        1,
        0,
        0,
    )
    assert stats["auth_calls"] == 1 and stats["requests_total"] == 1  # only the api fixture's /auth
    assert _lookup(api, "oob-1") == [planted]
    assert api.get(f"{api.base}/documents/1000").json() == planted


def test_plant_a_changed_document_under_a_known_reference(api, sandbox, make_doc):
    ours = api.post(f"{api.base}/documents", json=make_doc(ref="tx-7")).json()
    changed = make_doc(ref="tx-7", receiver_tax_id_code="22222222-2")
    changed["totals"] = {"net_amount": 2000, "taxes_amount": 380, "total_amount": 2380}
    theirs = sandbox.plant_document(changed)
    assert [d["document_id"] for d in _lookup(api, "tx-7")] == [ours["document_id"], theirs["document_id"]]
    assert theirs["header"]["document_number"] == 2  # folios are shared with the API's documents
    assert api.post(f"{api.base}/documents", json=make_doc()).json()["header"]["document_number"] == 3
    stats = sandbox.stats()
    assert (stats["documents_created"], stats["documents_planted"], stats["duplicate_references"]) == (
        2,
        1,
        0,
    )
    api.post(f"{api.base}/documents", json=make_doc(ref="tx-7"))  # the client's own duplicate still counts
    assert sandbox.stats()["duplicate_references"] == 1


def test_plant_ignores_faults_auth_and_rate_limit(api, sandbox, make_doc):
    sandbox.set_faults(
        error_5xx_rate=1,
        no_document_id_rate=1,
        result_status_2_rate=1,
        lost_response_rate=1,
        revoke_after_documents=1,
        rate_limit=0.001,
    )
    docs = [sandbox.plant_document(make_doc(ref=f"f-{i}", **PERU_FACTURA)) for i in range(3)]
    assert [d["document_id"] for d in docs] == [1000, 1001, 1002]
    assert all(d["result"] == {"status": 0, "error_message": ""} for d in docs)
    stats = sandbox.stats()
    assert (stats["revocations"], stats["injected_5xx"], stats["rate_limited"]) == (0, 0, 0)


def test_plant_keeps_the_statuses_it_is_given(api, sandbox, make_doc):
    body = make_doc(ref="mx-old", **MEXICO_INGRESO)
    body["header"].update(document_number=777, taxbureau_sending_status=1, taxbureau_validation_status=3)
    body["document_status"] = 2
    body["result"] = {"status": 0, "error_message": "imported"}
    planted = sandbox.plant_document(body, stamp=True)
    assert planted["header"]["document_number"] == 777
    assert planted["document_status"] == 2
    assert planted["result"] == {"status": 0, "error_message": "imported"}
    assert planted["electronic_document"]["stamp_img"]
    assert sandbox.validation()["in_process"] == []
    found = api.get(f"{api.base}/documents", params={"document_number": 777}).json()["_embedded"]["documents"]
    assert [d["document_id"] for d in found] == [planted["document_id"]]


def test_planted_chile_document_is_validated_like_any_other(api, sandbox, make_doc):
    sandbox.reject_references("cl-oob")
    planted = sandbox.plant_document(make_doc(ref="cl-oob"))
    assert sandbox.validation()["in_process"] == [planted["document_id"]]
    sandbox.validate()
    assert (
        api.get(f"{api.base}/documents/{planted['document_id']}").json()["header"][
            "taxbureau_validation_status"
        ]
        == 5
    )


def test_plant_validates_the_body_but_not_the_boleta_date(sandbox, make_doc):
    old_boleta = make_doc(type_id=97, currency_id=7, issue_date="2020-01-01")
    assert sandbox.plant_document(old_boleta)["header"]["issue_date"] == "2020-01-01"
    body = make_doc()
    del body["totals"]
    response = httpx.post(f"{sandbox.url}/_sandbox/documents", json=body, trust_env=False)
    assert response.status_code == 400
    assert response.json() == {"error": "totals is required"}
    assert len(sandbox.documents()) == 1
    assert sandbox.stats()["documents_planted"] == 1


def test_planting_needs_no_token(sandbox, make_doc):
    sandbox.plant_document(make_doc(issue_date=date.today().isoformat()))
    assert requests.get(f"{sandbox.base_url}/documents").status_code == 401  # the API itself still needs one
    assert sandbox.stats()["requests_total"] == 1
