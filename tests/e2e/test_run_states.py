"""Run states tell the truth: a missing inbox fails ``ingest`` at once and the run, with no Asset event."""

from __future__ import annotations

import json
import sqlite3

import pytest

from koywe_demo.env import airflow, airflow_env, setup

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAG_ID = "koywe_daily_issuance"


def test_missing_inbox_fails_ingest_at_once_and_the_run(tmp_path_factory):
    from koywe_sandbox.testing import run_sandbox

    home = tmp_path_factory.mktemp("airflow_home")
    missing = home / "no-such-inbox"
    with run_sandbox(seed=3) as sb:
        env = airflow_env(
            airflow_home=home,
            koywe_base_url=sb.base_url,
            credentials=sb.credentials,
            ledger_url=f"sqlite:///{home / 'ledger.db'}",
        )
        setup(env)
        proc = airflow(
            env, "dags", "test", DAG_ID, "-c", json.dumps({"inbox": str(missing)}), check=False, capture=True
        )
        assert sb.stats()["documents_created"] == 0
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-5000:]

    db = sqlite3.connect(home / "airflow.db")
    try:
        states = {
            task: (state, tries)
            for task, state, tries in db.execute(
                "select task_id, state, try_number from task_instance where dag_id = ?", (DAG_ID,)
            )
        }
        assert db.execute("select count(*) from asset_event").fetchone()[0] == 0
        (run_state,) = db.execute("select state from dag_run where dag_id = ?", (DAG_ID,)).fetchone()
    finally:
        db.close()
    assert run_state == "failed"
    assert states["ingest"] == ("failed", 1), states  # permanent: no retry
    assert states["report"][0] == "success"  # the report is still written
    assert states["publish"][0] == "skipped"  # nothing issued: no Asset event
    assert states["check_run"][0] == "failed"
    assert "does not exist" in output  # the retry policy's reason for failing at once
    check_lines = [line for line in output.splitlines() if "Koywe run failed: task" in line]
    assert check_lines, output[-5000:]
    assert "task ingest failed" in check_lines[0] and "report:" in check_lines[0]
    assert list((home / "koywe_reports" / DAG_ID).glob("*.json"))
