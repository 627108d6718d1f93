"""The deferrable sensor on real Airflow: ``airflow dags test`` (``dag.test()``) runs its trigger inline."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest

from koywe_demo.env import airflow_env, setup
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_test_support import chile_factura, koywe_connection_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAG_FILE = textwrap.dedent(
    '''
    """Test DAG: wait for the tax bureau on given documents."""
    from datetime import datetime

    from airflow.sdk import DAG

    from koywe_provider.sensors.taxbureau import KoyweDocumentStatusSensor

    with DAG(
        dag_id="koywe_sensor_test",
        doc_md="test",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["koywe"],
        default_args={"owner": "test", "retries": 0},
    ):
        KoyweDocumentStatusSensor(
            task_id="wait_taxbureau",
            document_ids="{{ dag_run.conf['document_ids'] }}",
            poke_interval=5,
            timeout=600,
            koywe_ledger_conn_id=None,
        )
    '''
)


def test_sensor_defers_and_its_trigger_runs_in_dag_test(tmp_path, clean_sandbox, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOYWE_SENSOR_SETUP",
        koywe_connection_json(clean_sandbox.base_url, clean_sandbox.credentials),
    )
    hook = KoyweHook("koywe_sensor_setup", token_store=MemoryTokenStore())
    clean_sandbox.set_validation(delay_seconds=None)
    ids = [hook.create_document(chile_factura(net=n)).document_id for n in (1000, 2000)]
    auth_calls = clean_sandbox.stats()["auth_calls"]

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "koywe_sensor_test.py").write_text(DAG_FILE)
    env = airflow_env(
        airflow_home=tmp_path / "home",
        koywe_base_url=clean_sandbox.base_url,
        credentials=clean_sandbox.credentials,
    )
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    setup(env)

    command = [str(Path(env["PATH"].split(":")[0]) / "airflow"), "dags", "test", "koywe_sensor_test"]
    command += ["-c", json.dumps({"document_ids": ids})]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    validated = threading.Event()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "running trigger in line" in line and not validated.is_set():
            # The task has deferred: only now does the tax bureau answer (one accepted, one rejected).
            clean_sandbox.validate(document_ids=[int(ids[0])], outcome=3)
            clean_sandbox.validate(document_ids=[int(ids[1])], outcome=5)
            validated.set()
    output = "".join(lines)
    assert proc.wait(timeout=600) == 0, output[-5000:]
    assert validated.is_set(), output[-5000:]
    assert "Trigger completed" in output
    assert f"Tax bureau rejected Koywe document {ids[1]}" in output
    assert "new_state=deferred" in output  # the worker slot was given back while waiting
    assert (
        "DagRun Finished: dag_id=koywe_sensor_test" in output and "state=success, run_type=manual" in output
    )
    # one login for the whole wait: the first poke's token is reused by the trigger's polls
    assert clean_sandbox.stats()["auth_calls"] - auth_calls == 1
