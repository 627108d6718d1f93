"""The DOCUMENT.STATUSUPDATE receiver: auth, payload validation, idempotency, and the sandbox calling back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
import uvicorn

from koywe_provider.callbacks import create_app
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_provider.ledger import DocumentFacts, IngestItem, Ledger
from koywe_provider.services.issuance import Issuer
from koywe_sandbox.testing import free_port
from koywe_test_support import chile_factura

USER, PASSWORD = "koywe-callbacks", "callback-s3cret"


@pytest.fixture
def receiver(tmp_path) -> Iterator[SimpleNamespace]:
    """The callback app on a real uvicorn server (own thread, free port) with a SQLite ledger."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    events: list[dict] = []
    app = create_app(
        credentials=lambda: (USER, PASSWORD), ledger=lambda: ledger, emit=lambda e: events.append(e) or True
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    with httpx.Client(trust_env=False, timeout=5) as probe:
        while not server.started:
            if not thread.is_alive():
                pytest.fail("the callback server did not start")
            threading.Event().wait(0.02)
        yield SimpleNamespace(
            url=f"http://127.0.0.1:{port}/document-status", ledger=ledger, events=events, client=probe
        )
    server.should_exit = True
    thread.join(10)
    ledger.dispose()


def issued_row(ledger: Ledger, reference: str, koywe_id: str) -> int:
    ledger.ingest_many([IngestItem(reference, "4201", chile_factura(), None, "t.jsonl", 1)])
    pk = ledger.get_by_reference("4201", reference)["id"]
    ledger.mark_issued(
        pk,
        facts=DocumentFacts(
            koywe_document_id=koywe_id,
            document_number="7",
            document_status=1,
            taxbureau_sending_status=0,
            taxbureau_validation_status=1,
        ),
    )
    return pk


def payload(document_id="1000", validation=3, comments=""):
    return {
        "document_id": document_id,
        "account_id": 4201,
        "document_status": 1,
        "taxbureau_send_status": 1,
        "taxbureau_send_id": "9001000",
        "taxbureau_send_date": "2026-11-20 10:00:00",
        "taxbureau_validation_status": validation,
        "taxbureau_validation_comments": comments,
    }


@pytest.mark.parametrize("auth", [None, (USER, "wrong"), ("someone", PASSWORD)])
def test_bad_credentials_are_refused(receiver, auth):
    pk = issued_row(receiver.ledger, "R", "1000")
    response = receiver.client.post(receiver.url, json=payload(), auth=auth)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Basic"
    assert receiver.ledger.get(pk)["taxbureau_validation_status"] == 1
    assert receiver.events == []


@pytest.mark.parametrize(
    "body",
    [
        {"taxbureau_validation_status": 3},  # no document_id
        payload(validation=9),  # not a Koywe validation status
        payload(validation="accepted"),
        {**payload(), "document_status": 7},
        ["not", "an", "object"],
    ],
)
def test_bad_payloads_are_refused(receiver, body):
    pk = issued_row(receiver.ledger, "R", "1000")
    response = receiver.client.post(receiver.url, json=body, auth=(USER, PASSWORD))
    assert response.status_code == 422
    assert receiver.ledger.get(pk)["taxbureau_validation_status"] == 1


def test_replay_and_out_of_order_have_no_side_effects(receiver):
    pk = issued_row(receiver.ledger, "R", "1000")
    first = receiver.client.post(
        receiver.url, json=payload(validation=4, comments="reparos"), auth=(USER, PASSWORD)
    )
    assert first.json() == {"document_id": "1000", "matched": True, "changed": True, "asset_event": True}
    row = receiver.ledger.get(pk)
    for body in (
        payload(validation=4, comments="reparos"),
        payload(validation=1),
        payload(validation=5, comments="x"),
    ):
        again = receiver.client.post(receiver.url, json=body, auth=(USER, PASSWORD))
        assert again.status_code == 200 and again.json()["changed"] is False
    # Nothing changes but the time of the last callback (the reconciliation's "a callback did come").
    after = receiver.ledger.get(pk)
    assert after.pop("last_callback_at") >= row.pop("last_callback_at") is not None
    assert after == row
    assert len(receiver.events) == 1 and receiver.events[0]["source"] == "callback"
    unknown = receiver.client.post(receiver.url, json=payload(document_id="424242"), auth=(USER, PASSWORD))
    assert unknown.json()["matched"] is False


def test_sandbox_calls_back_and_the_ledger_follows(receiver, koywe_conn, clean_sandbox):
    hook = KoyweHook(koywe_conn("koywe_cb_test"), token_store=MemoryTokenStore())
    subscription = hook.create_webhook_subscription(4201, receiver.url, USER, PASSWORD)
    assert "callback_password" not in subscription
    ledger = receiver.ledger
    ledger.ingest_many(
        [IngestItem(f"CB-{i}", "4201", chile_factura(net=1000 + i), None, "t.jsonl", i) for i in range(3)]
    )
    Issuer(hook, ledger, owner="test").issue_range(1, 10**9)
    rows = [ledger.get_by_reference("4201", f"CB-{i}") for i in range(3)]
    ids = [int(r["koywe_document_id"]) for r in rows]

    assert clean_sandbox.validate(document_ids=ids[:2], outcome=3)["callbacks"] == {"sent": 2, "failed": 0}
    assert clean_sandbox.validate(document_ids=ids[2:], outcome=5)["callbacks"] == {"sent": 1, "failed": 0}

    states = [ledger.get(r["id"]) for r in rows]
    assert [(s["state"], s["taxbureau_validation_status"]) for s in states] == [
        ("issued", 3),
        ("issued", 3),
        ("rejected", 5),
    ]
    assert "Rechazado" in states[2]["taxbureau_validation_comments"]
    assert [e["document_id"] for e in receiver.events] == [str(i) for i in ids]
    assert clean_sandbox.stats()["list_calls"] == 0  # callbacks, not polling


def test_a_callback_with_document_status_3_is_the_counterparty_acceptance(receiver):
    pk = issued_row(receiver.ledger, "CP", "1000")
    response = receiver.client.post(
        receiver.url, json={**payload(validation=3), "document_status": 3}, auth=(USER, PASSWORD)
    )
    assert response.status_code == 200, response.text
    row = receiver.ledger.get(pk)
    assert (row["state"], row["document_status"], row["counterparty_status"]) == ("issued", 1, 3)
    assert row["taxbureau_validation_status"] == 3
