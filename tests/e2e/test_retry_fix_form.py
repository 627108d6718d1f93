"""The retry DAG's form corrects a document without SQL, then issues it in the same run (real Airflow,
``airflow dags test``, against the sandbox); a refused correction fails the run at once naming the field."""

from __future__ import annotations

import copy
import json
import sqlite3

import pytest

from koywe_demo.env import airflow, airflow_env, setup
from koywe_provider.ledger import Ledger
from koywe_provider.services.ingestion import as_storage_path, read_inbox
from koywe_samples import generate_lines

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAG_ID = "koywe_retry_failed_documents"


def _task_states(home, run_marker: str) -> dict[str, tuple[str, int]]:
    db = sqlite3.connect(home / "airflow.db")
    try:
        (run_id,) = db.execute(
            "select run_id from dag_run where dag_id = ? and conf like ? order by id desc limit 1",
            (DAG_ID, f"%{run_marker}%"),
        ).fetchone()
        return {
            task: (state, tries)
            for task, state, tries in db.execute(
                "select task_id, state, try_number from task_instance where dag_id = ? and run_id = ?",
                (DAG_ID, run_id),
            )
        }
    finally:
        db.close()


def test_the_form_corrects_then_issues_and_a_refusal_fails_at_once(tmp_path_factory) -> None:
    from koywe_sandbox.testing import run_sandbox

    home = tmp_path_factory.mktemp("airflow_home")
    ledger_url = f"sqlite:///{home / 'ledger.db'}"
    lines = [
        copy.deepcopy(line) for line in generate_lines(2, seed=41, countries=("MX",), reference_prefix="FORM")
    ]
    broken = copy.deepcopy(lines)
    for line in broken:
        del line["document"]["header"]["currency_id"]  # invalid at ingestion: never sent
    inbox = home / "inbox.jsonl"
    inbox.write_text("".join(json.dumps(line) + "\n" for line in broken), encoding="utf-8")

    with run_sandbox(seed=5) as sb:
        env = airflow_env(
            airflow_home=home, koywe_base_url=sb.base_url, credentials=sb.credentials, ledger_url=ledger_url
        )
        setup(env)
        ledger = Ledger(ledger_url)
        ledger.migrate()
        assert ledger.ingest_many(read_inbox(as_storage_path(str(inbox)))).invalid == 2
        first, second = (line["reference"] for line in lines)
        invalid_row = ledger.get_by_reference(str(lines[0]["account_id"]), first)
        assert invalid_row["state"] == "invalid" and sb.stats()["documents_created"] == 0

        conf = {"fix_reference": first, "fix_document": lines[0]["document"]}
        ok = airflow(env, "dags", "test", DAG_ID, "-c", json.dumps(conf), check=False, capture=True)
        assert ok.returncode == 0, (ok.stdout + ok.stderr)[-5000:]
        assert sb.stats()["documents_created"] == 1

        still_wrong = copy.deepcopy(lines[1]["document"])
        still_wrong["details"][0]["taxes"][0]["tax_percentage"] = 15  # no such IVA rate in Mexico
        conf = {"fix_reference": second, "fix_document": still_wrong}
        refused = airflow(env, "dags", "test", DAG_ID, "-c", json.dumps(conf), check=False, capture=True)
        assert sb.stats()["documents_created"] == 1  # nothing more was sent

    row = ledger.get(invalid_row["id"])
    assert row["state"] == "issued" and row["koywe_document_id"]
    assert row["attempts"] == 1 and row["payload"]["header"]["currency_id"] == 31
    (history,) = ledger.payload_history_for(row["id"])
    assert history["payload_hash"] is None and history["line_no"] == 1
    assert row["source"].startswith(f"{DAG_ID}/") and row["source"].endswith(" form")
    states = _task_states(home, first)
    assert states["apply_fix"][0] == "success" and states["issue"][0] == "success", states

    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output[-5000:]
    states = _task_states(home, second)
    assert states["apply_fix"] == ("failed", 1), states  # at once: no retry
    assert states["plan_batches"][0] == "upstream_failed"
    lines_out = [x for x in output.splitlines() if f"Correction of {second} refused, nothing changed" in x]
    assert lines_out and "details.0.taxes.0.tax_percentage: 15% is not a rate of IVA" in lines_out[0], output[
        -5000:
    ]
    untouched = ledger.get_by_reference(str(lines[1]["account_id"]), second)
    assert untouched["state"] == "invalid" and untouched["error_field"] == "document.header.currency_id"
    assert ledger.payload_history_for(untouched["id"]) == []
    ledger.dispose()
