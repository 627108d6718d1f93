"""Status changes after creation: validation schedule, Mexico cancellations pending acceptance, the
counterparty's view (``header.document_status``) and the DOCUMENT.STATUSUPDATE callbacks they send."""

from __future__ import annotations

import httpx
import pytest
from sandbox_support import session_for, subscribe

from koywe_sandbox.testing import run_sandbox, wait_for

#: The documented DOCUMENT.STATUSUPDATE fields (API_NOTES "Documents"): a callback carries exactly these.
CALLBACK_FIELDS = {
    "document_id",
    "account_id",
    "document_status",
    "taxbureau_send_status",
    "taxbureau_send_id",
    "taxbureau_send_date",
    "taxbureau_validation_status",
    "taxbureau_validation_comments",
}
MEXICO = {"type_id": 76, "currency_id": 31}


def _admin(sb, path, payload):
    return httpx.post(f"{sb.url}/_sandbox/{path}", json=payload, trust_env=False)


# --------------------------------------------------------------------------- validation schedule


def test_scheduled_validation_on_the_real_clock_sends_the_callback(api, sandbox, make_doc, callbacks):
    subscribe(api, callbacks)
    sandbox.set_validation(delay_seconds=0)
    doc = api.post(f"{api.base}/documents", json=make_doc(ref="cl-1")).json()
    (callback,) = callbacks.wait(1)
    assert set(callback["body"]) == CALLBACK_FIELDS
    assert callback["body"]["document_id"] == doc["document_id"]
    assert callback["body"]["taxbureau_validation_status"] == 3
    assert callback["body"]["document_status"] == 1
    assert callback["auth"] == ("hook", "pw")
    assert callback["path"] == "/koywe"
    wait_for(lambda: sandbox.stats()["callbacks_sent"] == 1, message="callbacks_sent counted")
    assert sandbox.validation()["in_process"] == []


def test_scheduled_validation_follows_the_sandbox_clock(manual_sandbox, make_doc, callbacks):
    api = session_for(manual_sandbox)
    subscribe(api, callbacks)
    manual_sandbox.set_validation(delay_seconds=60)
    first = api.post(f"{api.base}/documents", json=make_doc()).json()["document_id"]
    manual_sandbox.advance_clock(30)
    second = api.post(f"{api.base}/documents", json=make_doc()).json()["document_id"]
    assert manual_sandbox.advance_clock(29.9)["validated"] == []
    answer = manual_sandbox.advance_clock(0.1)
    assert (answer["validated"], answer["callbacks"]) == ([first], {"sent": 1, "failed": 0})
    assert manual_sandbox.validation()["in_process"] == [second]
    assert manual_sandbox.advance_clock(30)["validated"] == [second]
    assert [c["body"]["document_id"] for c in callbacks.received] == [first, second]
    clock = manual_sandbox.clock()
    assert clock["manual"] is True and clock["offset_seconds"] == pytest.approx(90)


def test_validate_now_before_the_schedule_wins(manual_sandbox, make_doc):
    api = session_for(manual_sandbox)
    manual_sandbox.set_validation(delay_seconds=10)
    doc = api.post(f"{api.base}/documents", json=make_doc()).json()
    assert manual_sandbox.validate(outcome=4)["validated"] == [doc["document_id"]]
    assert manual_sandbox.advance_clock(10)["validated"] == []  # already final: no second completion
    assert manual_sandbox.stats()["validations_completed"] == 1


@pytest.mark.parametrize("payload", [{}, {"advance_seconds": -1}, {"advance_seconds": "1"}, {"seconds": 1}])
def test_bad_clock_advance_is_400(sandbox, payload):
    before = sandbox.clock()["offset_seconds"]
    response = _admin(sandbox, "clock", payload)
    assert response.status_code == 400
    assert "advance_seconds" in response.json()["error"]
    assert sandbox.clock()["offset_seconds"] == before


# --------------------------------------------------------------------------- Mexico cancellation


def _mexico_invoice(api, make_doc, **header):
    return api.post(f"{api.base}/documents", json=make_doc(**MEXICO, **header)).json()


def test_cancellation_pending_acceptance_then_accepted(api, sandbox, make_doc, callbacks):
    subscribe(api, callbacks)
    assert sandbox.set_validation(cancel_pending_acceptance=True)["cancel_pending_acceptance"] is True
    doc = _mexico_invoice(api, make_doc)
    url = f"{api.base}/documents/{doc['document_id']}"
    answer = api.put(url, json={"document_status": "2"})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["document_status"], body["cancellation_status"]) == (1, "pending_acceptance")
    again = api.put(url, json={"document_status": 2})  # asking again while pending changes nothing
    assert (again.status_code, again.json()["cancellation_status"]) == (200, "pending_acceptance")
    assert callbacks.received == []  # no callback until the receiver answers
    done = sandbox.complete_cancellation(doc["document_id"], "accepted")
    assert done["callbacks"] == {"sent": 1, "failed": 0}
    assert (done["document"]["document_status"], done["document"]["cancellation_status"]) == (2, "cancelled")
    stored = api.get(url).json()
    assert (stored["document_status"], stored["cancellation_status"]) == (2, "cancelled")
    assert stored["header"]["document_status"] == 1  # the counterparty's view is untouched
    (callback,) = callbacks.received
    assert set(callback["body"]) == CALLBACK_FIELDS
    assert (callback["body"]["document_id"], callback["body"]["document_status"]) == (doc["document_id"], 2)
    assert callback["body"]["taxbureau_validation_status"] == 3
    assert sandbox.stats()["cancellations_completed"] == 1
    second = _admin(sandbox, f"cancellations/{doc['document_id']}", {"outcome": "accepted"})
    assert second.status_code == 400
    assert "no cancellation pending" in second.json()["error"]


def test_cancellation_refused_then_asked_again(api, sandbox, make_doc, callbacks):
    subscribe(api, callbacks)
    sandbox.set_faults(cancel_pending_acceptance=True)  # the same setting, through /_sandbox/faults
    assert sandbox.faults()["cancel_pending_acceptance"] is True
    assert sandbox.validation()["cancel_pending_acceptance"] is True
    doc = _mexico_invoice(api, make_doc)
    url = f"{api.base}/documents/{doc['document_id']}"
    api.put(url, json={"document_status": "2"})
    refused = sandbox.complete_cancellation(doc["document_id"], "refused")["document"]
    assert (refused["document_status"], refused["cancellation_status"]) == (1, "refused")
    assert callbacks.received[0]["body"]["document_status"] == 1
    pending = api.put(url, json={"document_status": "2"}).json()  # a new request waits again
    assert (pending["document_status"], pending["cancellation_status"]) == (1, "pending_acceptance")
    sandbox.complete_cancellation(doc["document_id"], "refused")
    sandbox.set_validation(cancel_pending_acceptance=False)
    immediate = api.put(url, json={"document_status": "2"}).json()
    assert (immediate["document_status"], immediate["cancellation_status"]) == (2, "cancelled")


def test_cancellation_errors(api, sandbox, make_doc):
    sandbox.set_validation(cancel_pending_acceptance=True)
    mexico = _mexico_invoice(api, make_doc)
    peru = api.post(f"{api.base}/documents", json=make_doc(type_id=96, currency_id=7)).json()
    refused = api.put(f"{api.base}/documents/{peru['document_id']}", json={"document_status": "2"})
    assert refused.status_code == 400  # only Mexico cancels with PUT, pending or not
    assert _admin(sandbox, "cancellations/9999", {"outcome": "accepted"}).status_code == 404
    no_pending = _admin(sandbox, f"cancellations/{mexico['document_id']}", {"outcome": "accepted"})
    assert no_pending.status_code == 400
    api.put(f"{api.base}/documents/{mexico['document_id']}", json={"document_status": "2"})
    bad = _admin(sandbox, f"cancellations/{mexico['document_id']}", {"outcome": "maybe"})
    assert bad.status_code == 400
    assert "accepted" in bad.json()["error"]
    assert api.get(f"{api.base}/documents/{mexico['document_id']}").json()["cancellation_status"] == (
        "pending_acceptance"
    )


def test_cancel_pending_acceptance_is_reset(api, sandbox, make_doc):
    sandbox.set_validation(cancel_pending_acceptance=True)
    sandbox.reset()
    assert sandbox.validation()["cancel_pending_acceptance"] is False
    api = session_for(sandbox)
    doc = _mexico_invoice(api, make_doc)
    cancelled = api.put(f"{api.base}/documents/{doc['document_id']}", json={"document_status": "2"}).json()
    assert cancelled["document_status"] == 2


def test_cancel_pending_acceptance_from_the_command_line(make_doc):
    with run_sandbox(cancel_pending_acceptance=True) as sb:
        api = session_for(sb)
        doc = _mexico_invoice(api, make_doc)
        answer = api.put(f"{api.base}/documents/{doc['document_id']}", json={"document_status": "2"}).json()
        assert answer["cancellation_status"] == "pending_acceptance"
        sb.reset()
        assert sb.validation()["cancel_pending_acceptance"] is True  # the start-up value


# --------------------------------------------------------------------------- counterparty's view


def test_counterparty_status_is_separate_from_the_document_status(api, sandbox, make_doc, callbacks):
    subscribe(api, callbacks)
    doc = api.post(f"{api.base}/documents", json=make_doc()).json()
    assert (doc["document_status"], doc["header"]["document_status"]) == (1, 1)
    sent = sandbox.set_counterparty_status(doc["document_id"], 2)
    assert sent["callbacks"] == {"sent": 1, "failed": 0}
    assert (sent["document"]["document_status"], sent["document"]["header"]["document_status"]) == (1, 2)
    accepted = sandbox.set_counterparty_status(doc["document_id"], 3)["document"]
    assert (accepted["document_status"], accepted["header"]["document_status"]) == (1, 3)
    stored = api.get(f"{api.base}/documents/{doc['document_id']}").json()
    assert (stored["document_status"], stored["header"]["document_status"]) == (1, 3)
    assert [set(c["body"]) for c in callbacks.received] == [CALLBACK_FIELDS] * 2
    assert [c["body"]["document_status"] for c in callbacks.received] == [1, 1]  # top level, unchanged
    assert sandbox.stats()["counterparty_updates"] == 2


def test_counterparty_status_of_a_cancelled_mexico_invoice(api, sandbox, make_doc, callbacks):
    subscribe(api, callbacks)
    doc = _mexico_invoice(api, make_doc)
    api.put(f"{api.base}/documents/{doc['document_id']}", json={"document_status": "2"})
    document = sandbox.set_counterparty_status(doc["document_id"], 3)["document"]
    assert (document["document_status"], document["header"]["document_status"]) == (2, 3)
    assert callbacks.received[0]["body"]["document_status"] == 2


@pytest.mark.parametrize("status", [0, 1, 4, "3", True, None])
def test_counterparty_bad_status_is_400(api, sandbox, make_doc, status):
    doc = api.post(f"{api.base}/documents", json=make_doc()).json()
    response = _admin(sandbox, f"counterparty/{doc['document_id']}", {"status": status})
    assert response.status_code == 400
    assert "status must be 2" in response.json()["error"]
    assert sandbox.documents()[0]["header"]["document_status"] == 1


def test_counterparty_refuses_drafts_and_unknown_documents(api, sandbox, make_doc):
    draft = api.post(f"{api.base}/documents", json=make_doc(draft=True)).json()
    response = _admin(sandbox, f"counterparty/{draft['document_id']}", {"status": 2})
    assert response.status_code == 400
    assert "draft" in response.json()["error"]
    assert _admin(sandbox, "counterparty/9999", {"status": 2}).status_code == 404
    assert _admin(sandbox, "counterparty/abc", {"status": 2}).status_code == 404


def test_callbacks_go_only_to_the_documents_account(api, sandbox, make_doc, callbacks):
    subscribe(api, callbacks, account_id=999)
    doc = api.post(f"{api.base}/documents", json=make_doc()).json()  # account 423
    assert sandbox.set_counterparty_status(doc["document_id"], 2)["callbacks"] == {"sent": 0, "failed": 0}
    assert callbacks.received == []
