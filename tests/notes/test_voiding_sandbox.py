"""Voiding and correcting through the sandbox over HTTP: credit and debit notes per country, what is
refused before any call, a crash between a note's POST and its record, Mexico cancellations followed to
the end (polling and callbacks), Chile drafts issued and deleted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
import uvicorn

from koywe_provider.callbacks import create_app
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_provider.ledger import IngestItem, Ledger
from koywe_provider.models.notes import payload_total
from koywe_provider.services.issuance import Issuer
from koywe_provider.services.taxbureau import TaxBureauPoller
from koywe_provider.services.voiding import VoidRequest, apply_voids, plan_voids, summarize
from koywe_sandbox.testing import free_port, wait_for
from koywe_test_support import chile_factura, sample_document

CONN = "koywe_void_test"
TODAY = date.today()
#: country -> (document type of the originals, credit note type, debit note type or None)
COUNTRIES = {"CL": (2, 16, 17), "PE": (96, 98, 99), "CO": (82, 83, 84), "MX": (76, 77, None)}


class Clock:
    """The ledger's clock: real time plus an offset (a lease expires without sleeping)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def env(koywe_conn, tmp_path) -> Iterator[SimpleNamespace]:
    koywe_conn(CONN)
    clock = Clock()
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", clock=clock)
    ledger.migrate()
    hook = KoyweHook(CONN, token_store=MemoryTokenStore())
    hook.get_token()
    yield SimpleNamespace(ledger=ledger, hook=hook, clock=clock, runs=0)
    ledger.dispose()


def issue(env, documents: dict[str, dict]) -> dict[str, dict]:
    """Ingest and issue ``{reference: payload}``; returns the ledger rows."""
    env.ledger.ingest_many(
        IngestItem(ref, str(p["header"]["account_id"]), p, None, "t.jsonl", i)
        for i, (ref, p) in enumerate(documents.items(), start=1)
    )
    Issuer(env.hook, env.ledger, owner="issue").issue_range(1, 10**9)
    rows = {ref: env.ledger.find_by_reference(ref) for ref in documents}
    assert all(r["state"] in ("issued", "draft") for r in rows.values()), rows
    return rows


def void(env, references, action: str, *, key: str | None = None, **kwargs) -> list:
    """Plan and apply one request, as the DAG does; a new request key per call unless ``key`` is given."""
    env.runs += 1
    request = VoidRequest.parse(references=references, action=action, issue_date=TODAY, **kwargs)
    request_key = key or f"koywe_void_documents/run-{env.runs}"
    items = plan_voids(env.ledger, request, request_key=request_key, run_id=request_key)
    planned = [i.as_dict() for i in items]
    outcome = apply_voids(
        env.hook, env.ledger, planned, owner=f"void-{env.runs}", reason=kwargs.get("reason")
    )
    assert outcome.transient == []
    return outcome.items


def original(country: str, seed: int) -> dict:
    type_id = COUNTRIES[country][0]
    return sample_document(country, document_type_id=type_id, issue_date=TODAY.isoformat(), seed=seed)


def sandbox_note(sandbox, reference: str) -> dict:
    (found,) = [
        d
        for d in sandbox.documents()
        if any(
            r.get("reference_number") == reference and r.get("reference_code") == 5 for r in d["references"]
        )
    ]
    return found


@pytest.mark.parametrize("country", list(COUNTRIES))
def test_full_and_partial_credit_notes_then_one_beyond_what_is_left(env, clean_sandbox, country):
    rows = issue(env, {"FULL": original(country, 1), "PART": original(country, 2)})
    _, credit_type, _ = COUNTRIES[country]

    (full,) = void(env, ["FULL"], "credit_note", reason="Anulacion solicitada por el emisor")
    assert (full.status, full.path, full.note_reference) == ("done", "credit_note", "FULL/NC-1"), full.message
    total = payload_total(rows["FULL"]["payload"])
    assert Decimal(full.note_total) == total
    at_koywe = sandbox_note(clean_sandbox, "FULL/NC-1")  # the sandbox validated it against its original
    assert at_koywe["header"]["document_type_id"] == credit_type
    (reference,) = [r for r in at_koywe["references"] if r.get("document_type_id")]
    assert reference["reference_document_id"] == int(rows["FULL"]["koywe_document_id"])
    assert reference["description"] == "Anulacion solicitada por el emisor"
    assert env.ledger.credit_position(rows["FULL"]["id"]).status == "voided"

    part_total = payload_total(rows["PART"]["payload"])
    amount = (part_total * Decimal("0.4")).quantize(
        Decimal(1) if country in ("CL", "CO") else Decimal("0.01")
    )
    (part,) = void(env, ["PART"], "credit_note", amount=str(amount))
    assert (part.status, part.note_reference, Decimal(part.note_total)) == ("done", "PART/NC-1", amount)
    position = env.ledger.credit_position(rows["PART"]["id"])
    assert (position.status, position.credited, position.remaining) == (
        "credited_in_part",
        amount,
        part_total - amount,
    )

    before = (clean_sandbox.stats(), len(env.ledger.notes_of(rows["PART"]["id"])))
    (beyond,) = void(env, ["PART"], "credit_note", amount=str(part_total - amount + 1))
    assert beyond.status == "refused" and "exceeds what is left to credit" in beyond.message
    assert "[amount]" in beyond.message and "nothing was sent" in beyond.message
    after = clean_sandbox.stats()
    assert after["requests_total"] == before[0]["requests_total"]  # refused before any call
    assert len(env.ledger.notes_of(rows["PART"]["id"])) == before[1]  # and nothing recorded

    (rest,) = void(env, ["PART"], "cancel" if country != "MX" else "credit_note")
    assert (rest.status, rest.note_reference, Decimal(rest.note_total)) == (
        "done",
        "PART/NC-2",
        part_total - amount,
    )
    assert env.ledger.credit_position(rows["PART"]["id"]).status == "voided"
    assert clean_sandbox.stats()["notes_refused"] == 0


@pytest.mark.parametrize("country", ["CL", "PE", "CO"])
def test_debit_notes(env, clean_sandbox, country):
    rows = issue(env, {"INV": original(country, 4)})
    (debit,) = void(env, ["INV"], "debit_note", amount="1000", reason="Intereses")
    assert (debit.status, debit.note_reference, debit.note_total) == ("done", "INV/ND-1", "1000"), (
        debit.message
    )
    assert sandbox_note(clean_sandbox, "INV/ND-1")["header"]["document_type_id"] == COUNTRIES[country][2]
    position = env.ledger.credit_position(rows["INV"]["id"])
    assert (position.status, position.debited) == ("issued", 1000)


def test_what_no_country_allows_is_refused_before_any_call(env, clean_sandbox):
    issue(
        env,
        {
            "MX": original("MX", 5),
            "PE": original("PE", 5),
            "CL-DRAFT": {**chile_factura(), "options": {"draft_only": True}},
            "CL": chile_factura(net=2000),
        },
    )
    before = clean_sandbox.stats()["requests_total"]
    cases = {
        ("MX", "debit_note", "1"): "Mexico has no debit note",
        ("PE", "delete_draft", None): "only Chile issues drafts",
        ("PE", "issue_draft", None): "only Chile issues drafts",
        ("CL", "delete_draft", None): "not a draft at Koywe",
        ("CL-DRAFT", "credit_note", None): "is a draft, not a legal document yet",
        ("CL-DRAFT", "cancel", None): "delete it (delete_draft)",
        ("CL", "cancel", "100"): "for part of it use credit_note",
        ("NOPE", "cancel", None): "not in the ledger",
    }
    for (reference, action, amount), message in cases.items():
        (item,) = plan_voids(
            env.ledger,
            VoidRequest.parse(references=[reference], action=action, issue_date=TODAY, amount=amount),
            request_key="k",
        )
        assert item.status == "refused" and message in item.message, (reference, action, item.message)
    assert clean_sandbox.stats()["requests_total"] == before
    assert env.ledger.counts_by_state()["pending"] == 0


def test_a_crash_between_the_post_and_its_record_leaves_one_note(env, clean_sandbox, monkeypatch):
    rows = issue(env, {"INV": chile_factura()})
    request = VoidRequest.parse(references=["INV"], action="credit_note", issue_date=TODAY, amount="5000")
    items = [i.as_dict() for i in plan_voids(env.ledger, request, request_key="void/run-1")]

    class Crash(BaseException):
        """The worker dies: nothing after the POST's answer is recorded."""

    def crash(*args, **kwargs):
        raise Crash

    monkeypatch.setattr(env.ledger, "mark_issued", crash)
    with pytest.raises(Crash):
        apply_voids(env.hook, env.ledger, items, owner="void/run-1/try1")
    monkeypatch.undo()
    note = env.ledger.find_by_reference("INV/NC-1")
    assert (note["state"], note["generation_sends"]) == ("in_flight", 1)
    assert len([d for d in clean_sandbox.documents() if d["header"]["document_type_id"] == 16]) == 1

    # The task is retried once the lease is gone: the same request finds its note, looks it up, adopts it.
    env.clock.offset = timedelta(hours=1)
    replanned = [i.as_dict() for i in plan_voids(env.ledger, request, request_key="void/run-1")]
    assert replanned[0]["note_id"] == note["id"]
    (item,) = apply_voids(env.hook, env.ledger, replanned, owner="void/run-1/try2").items
    assert item.status == "done", item.message
    notes = [d for d in clean_sandbox.documents() if d["header"]["document_type_id"] == 16]
    assert len(notes) == 1 and clean_sandbox.stats()["duplicate_references"] == 0
    row = env.ledger.get(note["id"])
    assert (row["state"], row["koywe_document_id"]) == ("issued", str(notes[0]["document_id"]))
    assert [(a["kind"], a["outcome"]) for a in env.ledger.attempts_for(note["id"])] == [("lookup", "adopted")]
    assert env.ledger.credit_position(rows["INV"]["id"]).credited == 5000


def test_a_lost_answer_to_a_note_is_looked_up_before_anything_is_sent_again(env, clean_sandbox):
    issue(env, {"INV": original("PE", 6)})
    clean_sandbox.set_faults(lost_response_rate=1.0)
    (item,) = void(env, ["INV"], "cancel", key="void/lost")
    assert item.status == "in_progress" and "koywe_retry_failed_documents" in item.message
    assert env.ledger.find_by_reference("INV/NC-1")["state"] == "unknown"
    clean_sandbox.set_faults(lost_response_rate=0)
    (item,) = void(env, ["INV"], "cancel", key="void/lost")  # the same request, applied again
    assert item.status == "done", item.message
    assert clean_sandbox.stats()["notes_created"] == 1


def test_a_folio_issued_elsewhere_is_credited_by_folio(env, clean_sandbox):
    external = {"reference": "OLD-1", "account_id": "4201", "folio": "4711", "document": chile_factura()}
    (item,) = void(env, [], "credit_note", amount="1190", external_originals=[external])
    assert (item.status, item.note_reference) == ("done", "OLD-1/NC-1"), item.message
    (reference,) = [
        r for r in sandbox_note(clean_sandbox, "OLD-1/NC-1")["references"] if r.get("document_type_id")
    ]
    assert (reference["reference_number"], reference["document_type_id"]) == ("4711", 2)
    assert "reference_document_id" not in reference


# --------------------------------------------------------------------------- Mexico cancellations


@pytest.mark.parametrize("outcome", ["accepted", "refused"])
def test_mexico_cancellation_pending_acceptance_followed_to_final_by_polling(env, clean_sandbox, outcome):
    rows = issue(env, {"MX": original("MX", 7)})
    clean_sandbox.set_validation(cancel_pending_acceptance=True)
    (item,) = void(env, ["MX"], "cancel", reason="Cliente devolvio la mercancia")
    assert (item.status, item.path, item.cancellation_status) == (
        "in_progress",
        "cancel",
        "pending_acceptance",
    )
    row = env.ledger.get(rows["MX"]["id"])
    assert (row["document_status"], row["cancellation_status"]) == (1, "pending_acceptance")
    assert env.ledger.credit_position(row["id"]).status == "cancellation_pending"
    (again,) = void(env, ["MX"], "cancel")  # asked again while pending: nothing sent
    assert again.status == "in_progress"

    koywe_id = rows["MX"]["koywe_document_id"]
    poller = TaxBureauPoller(env.hook, env.ledger)
    assert poller.poll().awaiting == 1  # still pending: followed
    clean_sandbox.complete_cancellation(koywe_id, outcome)
    polled = poller.poll()
    row = env.ledger.get(row["id"])
    if outcome == "accepted":
        assert (polled.changed, row["document_status"], row["cancellation_status"]) == (1, 2, "cancelled")
        assert (polled.cancelled, polled.cancellation_refused) == (1, 0)
        assert env.ledger.credit_position(row["id"]).status == "voided"
    else:
        assert (row["document_status"], row["cancellation_status"]) == (1, "refused")
        assert (polled.cancelled, polled.cancellation_refused) == (0, 1)
        assert env.ledger.credit_position(row["id"]).status == "issued"
    assert poller.poll().awaiting == 0  # final: no longer followed
    attempts = [(a["kind"], a["outcome"], a["error"]) for a in env.ledger.attempts_for(row["id"])]
    assert ("status_update", "pending", "reason: Cliente devolvio la mercancia") in attempts


@pytest.fixture
def receiver(env) -> Iterator[SimpleNamespace]:
    """The callback receiver app on a real uvicorn server writing into the test's ledger."""
    app = create_app(
        credentials=lambda: ("koywe-callbacks", "s3cret"), ledger=lambda: env.ledger, emit=lambda e: True
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, message="callback server started")
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}/document-status")
    server.should_exit = True
    thread.join(10)


def test_mexico_cancellation_followed_to_final_by_callback(env, clean_sandbox, receiver):
    rows = issue(env, {"MX": original("MX", 8)})
    account = rows["MX"]["account_id"]
    env.hook.create_webhook_subscription(account, receiver.url, "koywe-callbacks", "s3cret")
    clean_sandbox.set_validation(cancel_pending_acceptance=True)
    (item,) = void(env, ["MX"], "cancel")
    assert item.status == "in_progress"
    lists = clean_sandbox.stats()["list_calls"]
    answer = clean_sandbox.complete_cancellation(rows["MX"]["koywe_document_id"], "accepted")
    assert answer["callbacks"] == {"sent": 1, "failed": 0}
    row = env.ledger.get(rows["MX"]["id"])
    assert (row["document_status"], row["cancellation_status"]) == (2, "cancelled")
    assert clean_sandbox.stats()["list_calls"] == lists  # the callback, not polling
    assert env.ledger.awaiting_taxbureau().count == 0


def test_mexico_cancellation_applied_at_once(env, clean_sandbox):
    rows = issue(env, {"MX": original("MX", 9)})
    (item,) = void(env, ["MX"], "cancel")
    assert (item.status, item.cancellation_status) == ("done", "cancelled")
    (again,) = void(env, ["MX"], "cancel")
    assert again.status == "done" and "nothing sent" in again.message
    (note,) = void(env, ["MX"], "credit_note")
    assert note.status == "refused" and "cancelled already" in note.message
    assert env.ledger.credit_position(rows["MX"]["id"]).status == "voided"


# --------------------------------------------------------------------------- Chile drafts


def test_chile_drafts_are_issued_and_deleted(env, clean_sandbox):
    draft = {**chile_factura(), "options": {"draft_only": True}}
    rows = issue(
        env, {"D-ISSUE": draft, "D-DELETE": {**chile_factura(net=3000), "options": {"draft_only": True}}}
    )
    (issued,) = void(env, ["D-ISSUE"], "issue_draft", reason="approved")
    assert issued.status == "done" and env.ledger.get(rows["D-ISSUE"]["id"])["state"] == "issued"
    (deleted,) = void(env, ["D-DELETE"], "delete_draft", reason="duplicate draft")
    assert deleted.status == "done", deleted.message
    row = env.ledger.get(rows["D-DELETE"]["id"])
    assert row["state"] == "deleted" and clean_sandbox.stats()["documents_deleted"] == 1
    assert env.hook.find_documents_by_reference("D-DELETE") == []
    attempt = env.ledger.attempts_for(row["id"])[-1]
    assert (attempt["kind"], attempt["outcome"], attempt["http_status"], attempt["error"]) == (
        "delete",
        "deleted",
        200,
        "reason: duplicate draft",
    )
    (twice,) = void(env, ["D-DELETE"], "delete_draft")
    assert twice.status == "done" and "nothing sent" in twice.message
    (credit,) = void(env, ["D-ISSUE"], "delete_draft")
    assert credit.status == "refused" and "cancel it with a credit note" in credit.message


def test_summary_names_every_refused_or_failed_document():
    summary = summarize(
        [
            {"reference": "A", "action": "cancel", "status": "done", "message": "ok"},
            {"reference": "B", "action": "cancel", "status": "refused", "message": "B: not allowed"},
            {"reference": "C", "action": "cancel", "status": "failed", "message": "C: Koywe said no"},
        ]
    )
    assert summary == {
        "counts": {"done": 1, "refused": 1, "failed": 1},
        "problems": ["B: not allowed", "C: Koywe said no"],
    }
    assert json.dumps(summary)  # XCom-safe


def test_request_errors_name_the_field():
    from koywe_provider.services.voiding import VoidRequestError

    for kwargs, message in (
        ({"references": ["A"], "action": "refund"}, "action must be one of"),
        ({"references": [], "action": "cancel"}, "name at least one"),
        ({"references": ["A"], "action": "credit_note", "amount": "-5"}, "positive amount"),
        ({"references": ["A"], "action": "credit_note", "issue_date": "tomorrow"}, "issue_date"),
    ):
        with pytest.raises(VoidRequestError, match=message):
            VoidRequest.parse(**{"issue_date": TODAY, **kwargs})
    parsed = VoidRequest.parse(references="A, B", action="credit_note", issue_date="2026-11-20", lines="1,2")
    assert parsed.references == ("A", "B") and len(parsed.lines) == 2
