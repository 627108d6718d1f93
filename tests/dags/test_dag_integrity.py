"""The DAG folder loads cleanly, every DAG follows the house rules, and parsing reads nothing external."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from koywe_test_support import PROJECT_DIR

POOLS = json.loads((PROJECT_DIR / "include" / "pools.json").read_text())

# Parses the DAG folder in a fresh interpreter where reading a Variable or a Connection, or opening a
# socket, raises: "nothing reads a Variable, Connection, file or network at DAG-parse time".
PARSE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys
    from airflow.sdk import Variable
    from airflow.sdk.bases.hook import BaseHook
    from airflow.sdk.definitions.connection import Connection

    def forbidden(*a, **k):
        raise RuntimeError("read at DAG parse time")

    Variable.get = classmethod(forbidden)
    Connection.get = classmethod(forbidden)
    BaseHook.get_connection = classmethod(forbidden)
    socket.socket.connect = forbidden

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=sys.argv[1])
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "tags": sorted(dag.tags),
            "doc_md": bool(dag.doc_md),
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "timetable": type(dag.timetable).__name__,
            "params": sorted(dag.params.keys()),
            "on_failure": [
                type(c).__name__
                for c in (
                    dag.on_failure_callback
                    if isinstance(dag.on_failure_callback, list)
                    else [dag.on_failure_callback]
                )
                if c is not None
            ],
            "tasks": {
                t.task_id: {"retries": t.retries, "pool": t.pool, "owner": t.owner}
                for t in dag.tasks
            },
        }
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    from koywe_demo.env import airflow_env

    home = tmp_path_factory.mktemp("airflow_home")
    env = airflow_env(airflow_home=home)
    env.pop("AIRFLOW_CONN_KOYWE_LEDGER")
    proc = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(PROJECT_DIR / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_no_import_errors(parsed):
    assert parsed["errors"] == {}
    assert "koywe_daily_issuance" in parsed["dags"]


def test_house_rules(parsed):
    for dag_id, dag in parsed["dags"].items():
        assert "koywe" in dag["tags"], dag_id
        assert dag["doc_md"], dag_id
        assert dag["catchup"] is False, dag_id
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 1, f"{dag_id}.{task_id} has no retries"
            assert task["owner"] != "airflow", f"{dag_id}.{task_id} has no owner"


def test_pools_exist(parsed):
    used = {t["pool"] for d in parsed["dags"].values() for t in d["tasks"].values()}
    assert {"koywe_auth", "koywe_api"} <= used
    assert used - {"default_pool"} <= set(POOLS)
    assert POOLS["koywe_auth"]["slots"] == 1


def test_daily_issuance_shape(parsed):
    dag = parsed["dags"]["koywe_daily_issuance"]
    assert dag["max_active_runs"] == 1
    assert {"inbox", "issue_date", "dry_run"} <= set(dag["params"])
    assert list(dag["tasks"]) == [
        "ingest",
        "authenticate",
        "plan_batches",
        "issue",
        "poll_taxbureau",
        "report",
        "publish",
        "check_run",
    ]
    assert dag["tasks"]["authenticate"]["pool"] == "koywe_auth"
    assert dag["tasks"]["issue"]["pool"] == "koywe_api"


def test_reconciliation_shape(parsed):
    dag = parsed["dags"]["koywe_reconciliation"]
    assert dag["max_active_runs"] == 1
    assert dag["timetable"] == "CronTriggerTimetable"
    assert {"issue_date_from", "issue_date_to", "account_id", "adopt", "archive_missing"} <= set(
        dag["params"]
    )
    assert list(dag["tasks"]) == ["authenticate", "reconcile", "archive_missing", "publish", "check_run"]
    assert dag["tasks"]["authenticate"]["pool"] == "koywe_auth"
    assert dag["tasks"]["reconcile"]["pool"] == dag["tasks"]["archive_missing"]["pool"] == "koywe_api"


def test_void_documents_shape(parsed):
    dag = parsed["dags"]["koywe_void_documents"]
    assert dag["timetable"] == "NullTimetable"  # manual only
    assert {"references", "action", "reason", "amount", "lines", "reason_code"} <= set(dag["params"])
    assert list(dag["tasks"]) == ["plan", "apply", "check_run"]
    assert dag["tasks"]["apply"]["pool"] == "koywe_api"


def test_every_koywe_dag_alerts_on_failure(parsed):
    """A failed run of any Koywe DAG (dead rows, alarms, stuck rows, reconciliation differences …) sends
    an alert: ``on_failure_callback=KoyweAlertNotifier()`` (``koywe_provider.notifications``)."""
    koywe = {dag_id: dag for dag_id, dag in parsed["dags"].items() if "koywe" in dag["tags"]}
    assert len(koywe) >= 5
    missing = sorted(dag_id for dag_id, dag in koywe.items() if "KoyweAlertNotifier" not in dag["on_failure"])
    assert missing == [], "add on_failure_callback=KoyweAlertNotifier() to these DAGs"
