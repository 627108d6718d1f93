"""Status changes and batch tax-bureau polling against the sandbox over HTTP."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_provider.ledger import IngestItem, Ledger
from koywe_provider.operators.document_status import KoyweUpdateDocumentStatusOperator
from koywe_provider.services.issuance import Issuer
from koywe_provider.services.status_changes import DocumentStatusPreconditionError
from koywe_provider.services.taxbureau import TaxBureauPoller
from koywe_test_support import PROJECT_DIR, chile_factura

CONN = "koywe_status_test"


def mexico_invoice() -> dict:
    line = (PROJECT_DIR / "include" / "samples" / "inbox" / "documents-mx.jsonl").read_text().splitlines()[0]
    document = json.loads(line)["document"]
    document["header"]["issue_date"] = "2026-11-20"  # the inbox files leave it to ingestion
    return document


@pytest.fixture
def env(koywe_conn, tmp_path, monkeypatch):
    koywe_conn(CONN)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOYWE_LEDGER", json.dumps({"conn_type": "sqlite", "extra": {"sqlalchemy_url": url}})
    )
    ledger = Ledger(url)
    ledger.migrate()
    hook = KoyweHook(CONN, token_store=MemoryTokenStore())
    hook.get_token()  # primes the process cache: operators below reuse it instead of the Variable store
    yield SimpleNamespace(ledger=ledger, hook=hook)
    ledger.dispose()


def issue(env, documents: dict[str, dict]) -> dict[str, str]:
    """Ingest and issue ``{reference: payload}`` through the Issuer; returns ``{reference: koywe id}``."""
    items = [
        IngestItem(ref, str(p["header"]["account_id"]), p, None, "t.jsonl", i)
        for i, (ref, p) in enumerate(documents.items())
    ]
    env.ledger.ingest_many(items)
    Issuer(env.hook, env.ledger, owner="test").issue_range(1, 10**9)
    rows = {
        ref: env.ledger.get_by_reference(str(p["header"]["account_id"]), ref) for ref, p in documents.items()
    }
    return {ref: row["koywe_document_id"] for ref, row in rows.items()}


def run(op) -> dict:
    return op.execute({"ti": SimpleNamespace(task_id=op.task_id), "run_id": "manual__test"})


def update(**kwargs) -> KoyweUpdateDocumentStatusOperator:
    return KoyweUpdateDocumentStatusOperator(task_id="update_status", koywe_conn_id=CONN, **kwargs)


def test_issue_chile_draft_by_reference(env, clean_sandbox):
    draft = {**chile_factura(), "options": {"draft_only": True}}
    ids = issue(env, {"CL-DRAFT-1": draft})
    row = env.ledger.get_by_reference("4201", "CL-DRAFT-1")
    assert (row["state"], row["document_status"]) == ("draft", 0)

    result = run(update(reference="CL-DRAFT-1", action="issue_draft", reason="approved by finance"))

    assert result == {
        "document_id": ids["CL-DRAFT-1"],
        "action": "issue_draft",
        "document_status": 1,
        "changed": True,
        "ledger_id": row["id"],
    }
    assert clean_sandbox.documents()[0]["header"]["document_status"] == 1
    row = env.ledger.get(row["id"])
    assert (row["state"], row["document_status"]) == ("issued", 1)
    attempt = env.ledger.attempts_for(row["id"])[-1]
    assert (attempt["kind"], attempt["outcome"], attempt["http_status"]) == ("status_update", "issued", 200)
    assert attempt["error"] == "reason: approved by finance"

    before = clean_sandbox.stats()["requests_total"]
    again = run(update(document_id=ids["CL-DRAFT-1"], action="issue_draft"))
    assert again["changed"] is False  # already applied: success, and no PUT
    assert clean_sandbox.stats()["requests_total"] == before + 1  # only the GET of the document
    assert env.ledger.attempts_for(row["id"])[-1]["outcome"] == "already_applied"


def test_cancel_mexico_invoice_then_idempotent(env, clean_sandbox):
    ids = issue(env, {"MX-1": mexico_invoice()})
    result = run(update(document_id=ids["MX-1"], action="cancel", reason="customer returned goods"))
    assert (result["document_status"], result["changed"]) == (2, True)
    assert clean_sandbox.documents()[0]["document_status"] == 2  # the top-level status, not the header's
    row = env.ledger.get_by_reference(str(mexico_invoice()["header"]["account_id"]), "MX-1")
    assert (row["state"], row["document_status"]) == ("issued", 2)
    assert run(update(reference="MX-1", action="cancel"))["changed"] is False


@pytest.mark.parametrize(
    ("which", "action", "message"),
    [
        ("CL", "cancel", "is from Chile, not Mexico"),
        ("MX", "issue_draft", "is from Mexico, not Chile"),
        ("CL-ISSUED", "issue_draft", None),  # already issued: success, not an error
        ("UNKNOWN", "cancel", "matches 0 Koywe document"),
        ("CL", "delete", "Unknown action"),
    ],
)
def test_preconditions_refused_before_any_put(env, clean_sandbox, which, action, message):
    issue(
        env,
        {
            "CL": {**chile_factura(), "options": {"draft_only": True}},
            "CL-ISSUED": chile_factura(net=5000),
            "MX": mexico_invoice(),
        },
    )
    before = clean_sandbox.documents()
    op = update(reference=which, action=action)
    if message is None:
        assert run(op)["changed"] is False
    else:
        with pytest.raises(DocumentStatusPreconditionError, match=message):
            run(op)
    assert clean_sandbox.documents() == before


def test_batch_polling_makes_one_list_call_per_hundred_documents(env, clean_sandbox):
    n = 150
    clean_sandbox.set_validation(delay_seconds=None, outcomes={"3": 1})
    issue(env, {f"CL-{i:03d}": chile_factura(net=1000 + i) for i in range(n)})
    validated = clean_sandbox.validate(outcome=3)["validated"]
    assert len(validated) == n
    before = clean_sandbox.stats()["list_calls"]

    outcome = TaxBureauPoller(env.hook, env.ledger).poll()

    calls = clean_sandbox.stats()["list_calls"] - before
    assert calls == outcome.list_calls <= math.ceil(n / 100)
    assert (outcome.awaiting, outcome.accepted, outcome.rejected) == (n, n, 0)
    assert env.ledger.counts_by_state()["issued"] == n
    again = TaxBureauPoller(env.hook, env.ledger).poll()
    assert (again.awaiting, again.list_calls) == (0, 0)  # nothing waiting: no call at all


def test_polling_marks_tax_bureau_rejections(env, clean_sandbox):
    ids = issue(env, {"OK": chile_factura(), "BAD": chile_factura(net=2000)})
    clean_sandbox.validate(document_ids=[int(ids["OK"])], outcome=4)
    clean_sandbox.validate(document_ids=[int(ids["BAD"])], outcome=5)
    outcome = TaxBureauPoller(env.hook, env.ledger).poll()
    assert (outcome.accepted, outcome.rejected, outcome.list_calls) == (1, 1, 1)
    bad = env.ledger.get_by_reference("4201", "BAD")
    assert bad["state"] == "rejected" and "Rechazado" in bad["last_error"]
    assert env.ledger.get_by_reference("4201", "OK")["taxbureau_validation_status"] == 4
    assert [f["reference"] for f in env.ledger.failures()] == ["BAD"]
