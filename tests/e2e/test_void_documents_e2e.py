"""End to end: ``airflow dags test koywe_void_documents`` against the sandbox on real Airflow.

Originals are issued first (through the issuing engine, into the run's ledger); then one run credits two
of them in part, one run mixes a refused document with a good one (the good one is done, the run fails
in one line), and one run cancels a Mexico invoice that waits for the receiver's acceptance."""

from __future__ import annotations

import sqlite3
from datetime import date
from decimal import Decimal

import pytest

from koywe_demo.env import airflow_env, setup
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_provider.ledger import IngestItem, Ledger
from koywe_provider.models.notes import payload_total
from koywe_provider.services.issuance import Issuer
from koywe_test_support import airflow_haystacks, leaks, sample_document

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAG_ID = "koywe_void_documents"
TODAY = date.today().isoformat()
ORIGINALS = {
    "E2E-CL": ("CL", 2),
    "E2E-PE": ("PE", 96),
    "E2E-CO": ("CO", 82),
    "E2E-MX": ("MX", 76),
    "E2E-MX-2": ("MX", 76),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from koywe_sandbox.testing import run_sandbox

    home = tmp_path_factory.mktemp("airflow_home")
    ledger_url = f"sqlite:///{home / 'ledger.db'}"
    with run_sandbox(seed=5) as sandbox:
        env = airflow_env(
            airflow_home=home,
            koywe_base_url=sandbox.base_url,
            credentials=sandbox.credentials,
            ledger_url=ledger_url,
            requests_per_second=50,
        )
        setup(env)
        ledger = Ledger(ledger_url)
        payloads = {
            ref: sample_document(country, document_type_id=type_id, issue_date=TODAY, seed=n)
            for n, (ref, (country, type_id)) in enumerate(ORIGINALS.items())
        }
        ledger.ingest_many(
            IngestItem(ref, str(p["header"]["account_id"]), p, None, "e2e.jsonl", n)
            for n, (ref, p) in enumerate(payloads.items(), start=1)
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIRFLOW_CONN_KOYWE_E2E", env["AIRFLOW_CONN_KOYWE_DEFAULT"])
            hook = KoyweHook("koywe_e2e", token_store=MemoryTokenStore(), shared_state_url="memory://")
            Issuer(hook, ledger, owner="e2e-setup").issue_range(1, 10**9)
        assert ledger.counts_by_state()["issued"] == len(ORIGINALS)
        yield type(
            "Run", (), {"home": home, "env": env, "sandbox": sandbox, "ledger": ledger, "outputs": []}
        )()
        ledger.dispose()


def dags_test(run, conf: dict) -> tuple[int, str]:
    import json

    from koywe_demo.env import airflow

    proc = airflow(run.env, "dags", "test", DAG_ID, "-c", json.dumps(conf), check=False, capture=True)
    output = proc.stdout + proc.stderr
    run.outputs.append(output)
    return proc.returncode, output


def task_states(run) -> dict[str, str]:
    with sqlite3.connect(run.home / "airflow.db") as db:
        (run_id,) = db.execute(
            "select run_id from dag_run where dag_id = ? order by id desc limit 1", (DAG_ID,)
        ).fetchone()
        return dict(
            db.execute(
                "select task_id, state from task_instance where dag_id = ? and run_id = ?", (DAG_ID, run_id)
            ).fetchall()
        )


def test_partial_credit_notes_for_two_countries(run):
    totals = {
        ref: payload_total(run.ledger.find_by_reference(ref)["payload"]) for ref in ("E2E-CL", "E2E-PE")
    }
    code, output = dags_test(
        run,
        {"references": ["E2E-CL", "E2E-PE"], "action": "credit_note", "amount": 100, "reason": "Descuento"},
    )
    assert code == 0, output[-5000:]
    assert task_states(run) == {"plan": "success", "apply": "success", "check_run": "success"}
    for ref in ("E2E-CL", "E2E-PE"):
        note = run.ledger.find_by_reference(f"{ref}/NC-1")
        assert note["state"] == "issued" and note["koywe_document_id"]
        position = run.ledger.credit_position(run.ledger.find_by_reference(ref)["id"])
        assert (position.status, position.credited, position.remaining) == (
            "credited_in_part",
            Decimal(100),
            totals[ref] - 100,
        )
    assert "Koywe void run OK" in output
    assert "E2E-CL: credited_in_part" in output  # where each original stands, in the log


def test_a_refused_document_fails_the_run_in_one_line_and_the_good_one_is_done(run):
    before = run.sandbox.stats()["notes_created"]
    code, output = dags_test(
        run, {"references": ["E2E-MX", "E2E-CO"], "action": "debit_note", "amount": "2500"}
    )
    assert code != 0, output[-5000:]
    states = task_states(run)
    assert (states["plan"], states["apply"], states["check_run"]) == ("success", "success", "failed")
    lines = [line for line in output.splitlines() if "Koywe void run failed" in line]
    assert lines, output[-5000:]
    assert (
        "(1 of 2 document(s))" in lines[0] and "E2E-MX" in lines[0] and "Mexico has no debit note" in lines[0]
    )
    assert run.ledger.find_by_reference("E2E-CO/ND-1")["state"] == "issued"
    assert run.sandbox.stats()["notes_created"] == before + 1


def test_mexico_cancellation_pending_acceptance_followed_to_final(run):
    from koywe_demo.env import airflow

    run.sandbox.set_validation(cancel_pending_acceptance=True)
    try:
        code, output = dags_test(
            run, {"references": ["E2E-MX-2"], "action": "cancel", "reason": "Devolucion"}
        )
    finally:
        run.sandbox.set_validation(cancel_pending_acceptance=False)
    assert code == 0, output[-5000:]
    row = run.ledger.find_by_reference("E2E-MX-2")
    assert (row["document_status"], row["cancellation_status"]) == (1, "pending_acceptance")
    assert "cancellation pending the receiver's acceptance" in output

    run.sandbox.complete_cancellation(row["koywe_document_id"], "accepted")
    followup = airflow(run.env, "dags", "test", "koywe_taxbureau_followup", check=False, capture=True)
    run.outputs.append(followup.stdout + followup.stderr)
    assert followup.returncode == 0, (followup.stdout + followup.stderr)[-5000:]
    row = run.ledger.find_by_reference("E2E-MX-2")
    assert (row["document_status"], row["cancellation_status"]) == (2, "cancelled")

    code, output = dags_test(run, {"references": ["E2E-MX-2"], "action": "cancel"})
    assert code == 0 and "cancelled already (nothing sent)" in output, output[-5000:]


def test_no_secret_reaches_a_log_an_xcom_or_a_run_conf(run):
    secrets = [run.sandbox.credentials["client_secret"], run.sandbox.credentials["password"]]
    assert leaks(secrets, airflow_haystacks(run.home, run.outputs)) == []
