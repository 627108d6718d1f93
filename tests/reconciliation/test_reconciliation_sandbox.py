"""Reconciliation against the sandbox over HTTP: every planted difference found once, nothing on a clean
day, one list call per hundred documents and never a per-document get, adoption through the content match."""

from __future__ import annotations

import math

import httpx
import pytest

from conftest import DAY, age, ingest, issue, payloads, plant
from koywe_provider.ledger import DocumentState
from koywe_provider.models.references import merge_internal_reference
from koywe_provider.services.reconciliation import (
    KINDS,
    Reconciler,
    ReconciliationPolicy,
    build_report,
    reconciliation_problems,
    render_markdown,
)
from koywe_provider.services.taxbureau import TaxBureauPoller
from koywe_test_support import chile_factura, peru_factura


def reconcile(env, *, adopt: bool = False, callbacks_expected: bool = True, **window):
    policy = ReconciliationPolicy(stuck_after_seconds=6 * 3600, callbacks_expected=callbacks_expected)
    reconciler = Reconciler(env.hook, env.ledger, policy=policy, owner="test-recon", run_id="r", task="t")
    return reconciler.run(window.get("start", DAY), window.get("end", DAY), adopt=adopt)


def found(result) -> set[tuple[str, str | None]]:
    return {(d.kind, d.reference) for d in result.discrepancies}


def lost_by_a_crash(env, documents: dict[str, dict]) -> dict[str, int]:
    """Rows whose POST went out and whose answer was lost (``unknown``), as after a crash."""
    ids = ingest(env.ledger, documents)
    for pk in ids.values():
        env.ledger.claim(pk, owner="crashed")
        env.ledger.mark_sent(pk, owner="crashed", lease_seconds=60)
        env.ledger.mark_unknown(pk, owner="crashed", error="worker died", error_class="Crash")
    return ids


def test_a_clean_day_finds_nothing(env):
    rows = issue(env, payloads())
    assert {r["state"] for r in rows.values()} == {"issued"}
    before = env.sandbox.stats()

    result = reconcile(env)

    stats = env.sandbox.stats()
    assert result.discrepancies == []
    assert result.counts()["differences"] == 0 and result.counts()["unresolved"] == 0
    assert (result.listed, result.matched, result.expected) == (4, 4, 4)
    assert result.list_calls == stats["list_calls"] - before["list_calls"] == 1
    assert stats["document_reads"] == before["document_reads"] == 0  # never a per-document get
    assert reconciliation_problems({"reconcile": "success"}, result.counts()) == []
    assert "Koywe and the ledger agree" in render_markdown(build_report(result, dag_id="d", run_id="r"))


def test_every_planted_difference_is_found_exactly_once(env):
    sandbox = env.sandbox
    rows = issue(
        env,
        {
            "CL-1": chile_factura(DAY),
            "CL-2": chile_factura(DAY, net=20_000),
            "CL-3": chile_factura(DAY, net=30_000),
            **{k: v for k, v in payloads().items() if k in ("PE-1", "MX-1")},
        },
    )
    sandbox.set_faults(result_status_2_rate=1.0)
    rows.update(issue(env, {"NS-1": peru_factura(issue_date=DAY)}))
    sandbox.set_faults(result_status_2_rate=0.0)
    assert rows["NS-1"]["state"] == "not_sent"
    lost = chile_factura(DAY, net=40_000)
    ids = lost_by_a_crash(env, {"LOST-1": lost, "STUCK-U": chile_factura(DAY, net=50_000)})

    # CL-2: the bureau accepts it, no callback comes, polling finds the news (hours ago).
    sandbox.validate([int(rows["CL-2"]["koywe_document_id"])], outcome=3)
    polled = TaxBureauPoller(env.hook, env.ledger).poll()
    assert polled.changed == 1
    age(env.ledger, rows["CL-2"]["id"], column="last_polled_news_at")
    # CL-1: accepted at Koywe after the last polling: the ledger still says "in process".
    sandbox.validate([int(rows["CL-1"]["koywe_document_id"])], outcome=3)
    # CL-3 waits for the bureau, NS-1 was never sent to it, STUCK-U has no answer: all for 7 hours.
    age(env.ledger, rows["CL-3"]["id"])
    age(env.ledger, rows["NS-1"]["id"])
    age(env.ledger, ids["STUCK-U"], column="created_at")
    # At Koywe only: a second document under PE-1, the crashed LOST-1, one out of band, one that is
    # not ours (no internal reference) and one of another day.
    plant(sandbox, payloads()["PE-1"], "PE-1")
    lost_document = plant(sandbox, lost, "LOST-1")
    plant(sandbox, chile_factura(DAY, net=60_000), "OOB-1")
    plant(sandbox, chile_factura(DAY, net=70_000), None)
    plant(sandbox, chile_factura("2026-11-19", net=80_000), "OOB-2")
    # In the ledger only: Koywe lost MX-1.
    sandbox.forget_document(rows["MX-1"]["koywe_document_id"])
    before = sandbox.stats()

    result = reconcile(env)

    assert found(result) == {
        ("missing_in_ledger", "OOB-1"),
        ("missing_in_ledger", "LOST-1"),
        ("missing_at_koywe", "MX-1"),
        ("duplicates", "PE-1"),
        ("status_differs", "CL-1"),
        ("stuck", "CL-3"),
        ("stuck", "NS-1"),
        ("stuck", "STUCK-U"),
        ("missed_callbacks", "CL-2"),
    }
    counts = result.counts()
    assert len(result.discrepancies) == counts["differences"] == 9  # each exactly once
    assert {k: counts[k] for k in KINDS} == {
        "missing_in_ledger": 2,
        "missing_at_koywe": 1,
        "duplicates": 1,
        "status_differs": 1,
        "stuck": 3,
        "missed_callbacks": 1,
    }
    by_reference = {d.reference: d for d in result.discrepancies}
    assert by_reference["LOST-1"].adoptable and by_reference["LOST-1"].ledger_id == ids["LOST-1"]
    assert not by_reference["OOB-1"].adoptable and by_reference["OOB-1"].ledger_id is None
    assert {d.detail.split(":")[0] for d in result.discrepancies if d.kind == "stuck"} == {
        "bureau_pending",
        "not_sent",
        "unknown",
    }
    assert "taxbureau_validation_status: ledger 1, Koywe 3" in by_reference["CL-1"].detail
    assert by_reference["CL-1"].resolution == "applied"
    assert env.ledger.get(rows["CL-1"]["id"])["taxbureau_validation_status"] == 3  # written forwards
    assert len(by_reference["PE-1"].koywe_document_ids) == 2
    assert result.unidentified == 1 and result.listed == 9  # 5 issued (MX-1 lost) + 4 planted
    stats = sandbox.stats()
    assert result.list_calls == stats["list_calls"] - before["list_calls"] == 1
    assert stats["document_reads"] == before["document_reads"]  # no per-document get
    problems = reconciliation_problems({"reconcile": "success"}, counts)
    assert problems == [
        "9 difference(s) between Koywe and the ledger (2 missing_in_ledger, 1 missing_at_koywe, "
        "1 duplicates, 1 status_differs, 3 stuck, 1 missed_callbacks)"
    ]
    markdown = render_markdown(build_report(result, dag_id="d", run_id="r"))
    assert "**9 difference(s) need attention.**" in markdown and "LOST-1" in markdown

    # Without callbacks expected, polling's news is no missed callback.
    assert "missed_callbacks" not in {d.kind for d in reconcile(env, callbacks_expected=False).discrepancies}

    # adopt: the crashed row takes the document Koywe holds under its reference (same content).
    adopted = reconcile(env, adopt=True)
    lost_row = env.ledger.get(ids["LOST-1"])
    assert (lost_row["state"], lost_row["koywe_document_id"]) == ("issued", str(lost_document["document_id"]))
    assert [d.resolution for d in adopted.discrepancies if d.reference == "LOST-1"] == ["adopted"]
    assert [d.resolution for d in adopted.discrepancies if d.reference == "OOB-1"] == [
        "not adopted: no ledger row has this reference (out of band)"
    ]
    assert ("status_differs", "CL-1") not in found(adopted)  # applied by the first run
    assert adopted.counts()["adopted"] == 1
    assert adopted.counts()["unresolved"] == adopted.counts()["differences"] - 1
    assert [a["outcome"] for a in env.ledger.attempts_for(ids["LOST-1"])][-1] == "adopted"

    after = reconcile(env)
    assert ("missing_in_ledger", "LOST-1") not in found(after)
    assert sandbox.stats()["documents_created"] == before["documents_created"]  # nothing was sent


def test_adoption_refuses_other_content_and_holds_the_row(env):
    ids = lost_by_a_crash(env, {"LOST-2": chile_factura(DAY, net=10_000)})
    plant(env.sandbox, chile_factura(DAY, net=99_000), "LOST-2")  # another total under our reference

    result = reconcile(env, adopt=True)

    (discrepancy,) = result.discrepancies
    assert (discrepancy.kind, discrepancy.resolution) == ("missing_in_ledger", "held: ContentMismatchAlarm")
    row = env.ledger.get(ids["LOST-2"])
    assert (row["state"], row["last_error_class"], row["koywe_document_id"]) == (
        DocumentState.DEAD.value,
        "ContentMismatchAlarm",
        None,
    )
    assert "total_amount" in row["last_error"]


@pytest.mark.parametrize(
    ("shape", "items"), [("hal", "full"), ("flat", "flat"), ("data", "full"), ("hal", "flat")]
)
def test_one_list_call_per_hundred_documents(env, shape, items):
    sandbox = env.sandbox
    n = 201  # two full pages and one of a single document
    with httpx.Client(trust_env=False, timeout=30) as client:  # one connection for the planting
        for day, count, prefix in ((DAY, n, "BULK"), ("2026-11-21", 7, "NEXT")):  # NEXT: outside the window
            for i in range(count):
                body = merge_internal_reference(chile_factura(day, net=1000 + i), f"{prefix}-{i}")
                client.post(f"{sandbox.url}/_sandbox/documents", json=body).raise_for_status()
    sandbox.set_faults(list_shape=shape, list_items=items)
    before = sandbox.stats()

    result = reconcile(env)

    stats = sandbox.stats()
    assert result.listed == n
    assert result.list_calls == stats["list_calls"] - before["list_calls"] == math.ceil(n / 100)
    assert stats["document_reads"] == before["document_reads"]
    assert result.counts()["missing_in_ledger"] == n  # out of band, each once


def test_a_list_without_references_reports_unidentified_documents_only(env):
    issue(env, payloads())
    plant(env.sandbox, chile_factura(DAY, net=12_345), "OOB-9")
    # Koywe's SimplifiedDocument carries no references: emulate a list that shows none.
    real = env.hook.list_documents

    def without_references(**filters):
        for document in real(**filters):
            yield document.model_copy(update={"references": []})

    env.hook.list_documents = without_references
    result = reconcile(env)

    assert result.discrepancies == []  # matched by Koywe id; the unknown one cannot be called ours
    assert (result.matched, result.unidentified) == (4, 1)
