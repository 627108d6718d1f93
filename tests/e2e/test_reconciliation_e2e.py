"""End to end: ``airflow dags test`` of the daily issuance (the legal archive written on create), then of
``koywe_reconciliation`` through the sandbox: a clean day passes, planted differences fail the run in one
line with each difference counted once, the Asset event carries the counts, ``adopt`` adopts the document a
crash lost and its missing files are fetched once."""

from __future__ import annotations

import copy
import json
import math
import sqlite3
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from koywe_demo.env import airflow, airflow_env, setup
from koywe_provider.ledger import IngestItem, Ledger
from koywe_provider.ledger.archive import archive_files_for, archive_summary
from koywe_provider.models.references import merge_internal_reference
from koywe_test_support import PROJECT_DIR, airflow_haystacks, chile_factura, dags_test, leaks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INBOX = PROJECT_DIR / "include" / "samples" / "inbox"
DAG_ID = "koywe_reconciliation"


class Deployment:
    def __init__(self, tmp_path_factory):
        from koywe_sandbox.testing import run_sandbox

        self.home = tmp_path_factory.mktemp("airflow_home")
        self.ledger_url = f"sqlite:///{self.home / 'ledger.db'}"
        self._sandbox_cm = run_sandbox(seed=5)
        self.sandbox = self._sandbox_cm.__enter__()
        self.env = airflow_env(
            airflow_home=self.home,
            koywe_base_url=self.sandbox.base_url,
            credentials=self.sandbox.credentials,
            ledger_url=self.ledger_url,
            requests_per_second=50,
        )
        setup(self.env)
        self.outputs: list[str] = []
        self.ledger = Ledger(self.ledger_url)

    def reconcile(self, conf: dict, *, ok: bool) -> str:
        if ok:
            return dags_test(self.env, DAG_ID, conf, self.outputs)
        proc = airflow(self.env, "dags", "test", DAG_ID, "-c", json.dumps(conf), check=False, capture=True)
        output = proc.stdout + proc.stderr
        self.outputs.append(output)
        assert proc.returncode != 0, output[-5000:]
        return output

    def last_run(self) -> tuple[str, dict[str, str], dict]:
        """State, task states and the Asset event's extra of the newest reconciliation run."""
        db = sqlite3.connect(self.home / "airflow.db")
        try:
            run_id, state = db.execute(
                "select run_id, state from dag_run where dag_id = ? order by id desc limit 1", (DAG_ID,)
            ).fetchone()
            tasks = dict(
                db.execute(
                    "select task_id, state from task_instance where dag_id = ? and run_id = ?",
                    (DAG_ID, run_id),
                )
            )
            row = db.execute(
                "select e.extra from asset_event e join asset a on a.id = e.asset_id"
                " where a.name = 'koywe_reconciliation' order by e.id desc limit 1"
            ).fetchone()
        finally:
            db.close()
        extra = json.loads(row[0]) if row else {}
        return state, tasks, extra if extra.get("run_id") == run_id else {}

    def close(self):
        self.ledger.dispose()
        self._sandbox_cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    d = Deployment(tmp_path_factory)
    try:
        dags_test(d.env, "koywe_daily_issuance", {"inbox": str(INBOX)}, d.outputs)
        d.issued = d.ledger.counts_by_state()["issued"]
        d.day = d.ledger.get(1)["payload"]["header"]["issue_date"]
        yield d
    finally:
        d.close()


def test_the_daily_run_writes_the_archive_on_create(deployment):
    d = deployment
    assert d.issued >= 40
    assert archive_summary(d.ledger)["documents"] == d.issued
    assert archive_summary(d.ledger)["files"] == 2 * d.issued
    with d.ledger.engine.connect() as conn:
        rows = conn.execute(
            sa.text("select id, account_id from koywe_documents where state = 'issued'")
        ).all()
    for pk, account in rows[:10]:
        for record in archive_files_for(d.ledger, pk):
            path = record["path"].removeprefix("file://")
            assert path.startswith(f"{d.home}/koywe_archive/{account}/")
            assert f"/{d.day}/" in path
            import hashlib
            from pathlib import Path

            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == record["sha256"]
    assert d.sandbox.stats()["document_reads"] == 0  # every file came with the POST answers


def test_a_clean_day_passes_and_publishes_its_counts(deployment):
    d = deployment
    before = d.sandbox.stats()
    output = d.reconcile({"issue_date_from": d.day, "issue_date_to": d.day}, ok=True)

    stats = d.sandbox.stats()
    assert stats["list_calls"] - before["list_calls"] == math.ceil(d.issued / 100)
    assert stats["document_reads"] == before["document_reads"]  # nothing lacked files, no per-document get
    assert stats["documents_created"] == before["documents_created"]
    state, tasks, extra = d.last_run()
    assert state == "success" and set(tasks.values()) == {"success"}
    assert extra["differences"] == 0 and extra["listed"] == d.issued and extra["list_calls"] == 1
    assert extra["issue_date_from"] == extra["issue_date_to"] == d.day
    assert "Koywe and the ledger agree" in output
    reports = sorted((d.home / "koywe_reports" / DAG_ID).glob("*.md"))
    assert reports and "Koywe and the ledger agree" in reports[-1].read_text()


def test_planted_differences_fail_the_run_then_adopt_takes_the_lost_document(deployment):
    d = deployment
    sandbox, ledger = d.sandbox, d.ledger
    with ledger.engine.connect() as conn:
        ids = conn.scalars(sa.text("select id from koywe_documents where state = 'issued' order by id")).all()
    issued = [SimpleNamespace(**ledger.get(pk)) for pk in ids]
    chile = [r for r in issued if r.account_id == "4201" and r.payload["header"]["document_type_id"] == 2]
    others = [r for r in issued if r.account_id != "4201"]
    # In the ledger only: Koywe lost one document.
    sandbox.forget_document(others[0].koywe_document_id)
    # At Koywe only: a second document under an issued reference, and one out of band.
    sandbox.plant_document(merge_internal_reference(copy.deepcopy(others[1].payload), others[1].reference))
    sandbox.plant_document(merge_internal_reference(chile_factura(d.day, net=61_000), "OUT-OF-BAND-1"))
    # A crash after the POST: the row is unknown, the document is at Koywe under its reference.
    lost = chile_factura(d.day, net=62_000)
    ledger.ingest_many([IngestItem("LOST-1", "4201", lost, None, "crash.jsonl", 1)])
    lost_pk = ledger.get_by_reference("4201", "LOST-1")["id"]
    ledger.claim(lost_pk, owner="crashed")
    ledger.mark_sent(lost_pk, owner="crashed", lease_seconds=60)
    ledger.mark_unknown(lost_pk, owner="crashed", error="worker died", error_class="Crash")
    planted = sandbox.plant_document(merge_internal_reference(copy.deepcopy(lost), "LOST-1"))
    # A Chile document waiting for the tax bureau since 7 hours.
    with ledger.engine.begin() as conn:
        conn.execute(
            sa.text("update koywe_documents set issued_at = :t where id = :pk"),
            {"t": (datetime.now(UTC) - timedelta(hours=7)).replace(tzinfo=None), "pk": chile[0].id},
        )
    before = sandbox.stats()

    output = d.reconcile({"issue_date_from": d.day, "issue_date_to": d.day}, ok=False)

    state, tasks, extra = d.last_run()
    assert state == "failed"
    assert (
        tasks["check_run"] == "failed" and tasks["reconcile"] == "success" and tasks["publish"] == "success"
    )
    counts = {k: extra[k] for k in ("missing_in_ledger", "missing_at_koywe", "duplicates", "stuck")}
    assert counts == {"missing_in_ledger": 2, "missing_at_koywe": 1, "duplicates": 1, "stuck": 1}
    assert (extra["status_differs"], extra["missed_callbacks"], extra["differences"]) == (0, 0, 5)
    lines = [line for line in output.splitlines() if "Koywe reconciliation failed:" in line]
    assert lines, output[-5000:]
    assert (
        "5 difference(s) between Koywe and the ledger (2 missing_in_ledger, 1 missing_at_koywe, 1 duplicates, "
        "1 stuck) (report: " in lines[0]
    )
    assert sandbox.stats()["document_reads"] == before["document_reads"]  # no per-document get
    markdown = sorted((d.home / "koywe_reports" / DAG_ID).glob("*.md"), key=lambda p: p.stat().st_mtime)[-1]
    assert "OUT-OF-BAND-1" in markdown.read_text() and "LOST-1" in markdown.read_text()

    d.reconcile({"issue_date_from": d.day, "issue_date_to": d.day, "adopt": True}, ok=False)

    state, tasks, extra = d.last_run()
    assert (extra["adopted"], extra["unresolved"]) == (1, 4)
    row = ledger.get(lost_pk)
    assert (row["state"], row["koywe_document_id"]) == ("issued", str(planted["document_id"]))
    # the adopted document lacked its files: fetched once, through GET /documents/{id}
    assert sandbox.stats()["document_reads"] - before["document_reads"] == 1
    assert {r["source"] for r in archive_files_for(ledger, lost_pk)} == {"fetch"}
    assert extra["archived"]["documents"] == 1 and extra["archived"]["files"] == 2
    assert sandbox.stats()["documents_created"] == before["documents_created"]  # nothing was sent


def test_no_secret_leaks(deployment):
    d = deployment
    secrets = [d.sandbox.credentials["password"], d.sandbox.credentials["client_secret"]]
    assert leaks(secrets, airflow_haystacks(d.home, d.outputs)) == []
