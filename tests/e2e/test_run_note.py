"""Run notes for real: ``check_run`` writes the counts into its DAG run's note through a running Airflow
API server (the REST API), and the note is what the API (hence the UI's run header) shows.

One ``airflow api-server`` on a throwaway Airflow home and a free port, with the ``koywe_notes`` user that
``make up`` creates (:func:`koywe_demo.up.run_note_settings`); ``airflow dags test`` runs the daily DAG
on the same metadata database, once passing (with invalid lines) and once failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from koywe_demo.env import airflow_env, setup
from koywe_demo.up import NOTES_USER, passwords_file, run_note_settings
from koywe_sandbox.testing import free_port
from koywe_test_support import chile_factura

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAG_ID = "koywe_daily_issuance"
START_TIMEOUT_S = 300.0


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/monitor/health", timeout=5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A running API server (``url``), the environment of the ``dags test`` runs and the sandbox."""
    from koywe_sandbox.testing import run_sandbox

    home = tmp_path_factory.mktemp("airflow_home")
    port = free_port()
    with run_sandbox(seed=5) as sb:
        env = airflow_env(
            airflow_home=home,
            koywe_base_url=sb.base_url,
            credentials=sb.credentials,
            ledger_url=f"sqlite:///{home / 'ledger.db'}",
            extra={
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API_AUTH__JWT_SECRET": "run-note-test-" + "x" * 64,
            },
        )
        env.update(run_note_settings(env))
        setup(env)
        log = (home / "api-server.log").open("wb")
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "api-server", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _healthy(url):
                assert server.poll() is None, (home / "api-server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the API server did not answer"
                time.sleep(1)
            yield {"url": url, "env": env, "home": home, "sandbox": sb}
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            log.close()


def _run(api, tmp_path: Path, lines: list[str], extra_env: dict[str, str] | None = None):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "day.jsonl").write_text("".join(line + "\n" for line in lines))
    env = {**api["env"], **(extra_env or {})}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", DAG_ID]
        + ["-c", json.dumps({"inbox": str(inbox), "issue_date": "2026-11-20"})],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc, proc.stdout + proc.stderr


def _latest_run(api) -> dict:
    password = json.loads(passwords_file(api["env"]).read_text())[NOTES_USER]
    token = httpx.post(
        f"{api['url']}/auth/token", json={"username": NOTES_USER, "password": password}, timeout=30
    ).json()["access_token"]
    runs = httpx.get(
        f"{api['url']}/api/v2/dags/{DAG_ID}/dagRuns",
        params={"order_by": "-run_after", "limit": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    runs.raise_for_status()
    return runs.json()["dag_runs"][0]


def _lines(prefix: str, valid: int, invalid: int) -> list[str]:
    out = []
    for n in range(valid):
        out.append(
            json.dumps({"reference": f"{prefix}-{n}", "account_id": 4201, "document": chile_factura()})
        )
    for n in range(invalid):
        document = chile_factura()
        document["header"]["receiver_tax_id_code"] = "76563161-1"  # bad check digit: invalid locally
        out.append(json.dumps({"reference": f"{prefix}-BAD-{n}", "account_id": 4201, "document": document}))
    return out


def test_a_run_with_invalid_documents_gets_a_note_with_the_counts(api, tmp_path):
    proc, output = _run(api, tmp_path, _lines("NOTE-A", valid=2, invalid=1))
    assert proc.returncode == 0, output[-5000:]
    assert "Run note set" in output, output[-5000:]
    run = _latest_run(api)
    assert run["state"] == "success"
    note = run["note"]
    assert note.startswith("**Koywe: done, with 1 invalid document(s)**"), note
    assert "documents 3 · issued 2 · invalid 1" in note, note
    assert "Report: `" in note and f"koywe_reports/{DAG_ID}/" in note
    # the secrets of the API user, the sandbox and the token never reach the output
    password = json.loads(passwords_file(api["env"]).read_text())[NOTES_USER]
    assert password not in output
    assert api["sandbox"].credentials["client_secret"] not in output


def test_a_failed_run_gets_a_note_naming_why(api, tmp_path):
    proc, output = _run(
        api,
        tmp_path,
        _lines("NOTE-B", valid=1, invalid=1),
        extra_env={"AIRFLOW__KOYWE__MAX_INVALID_FRACTION": "0.2"},
    )
    run = _latest_run(api)
    assert run["state"] == "failed", output[-5000:]
    note = run["note"]
    assert note.startswith("**Koywe: run failed** — 1 of 2 documents invalid"), note
    assert "issued 1 · invalid 1" in note, note


def test_without_the_connection_the_run_goes_on_with_one_line(api, tmp_path):
    env = {k: v for k, v in api["env"].items() if k != "AIRFLOW_CONN_KOYWE_AIRFLOW_API"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", DAG_ID]
        + ["-c", json.dumps({"inbox": str(tmp_path / "none"), "dry_run": True})],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = proc.stdout + proc.stderr
    lines = [line for line in output.splitlines() if "Run note not set" in line]
    assert len(lines) == 1, output[-5000:]
    assert "koywe_airflow_api" in lines[0]
