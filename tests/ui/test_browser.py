"""The Koywe page in a real browser: Debian's chromium, headless, driven by playwright-core
(``tests/browser/koywe_page.mjs``) against a real ``airflow api-server``. What a person sees: the login,
"Koywe" in Airflow's navigation, the counts, a search hit, a document with its generations, attempts and
the tax bureau's answer, a run's rendered report, and a button that leads to the retry DAG's prefilled
form, whose submit starts the run as that person. Screenshots go to this test's tmp dir.

Set-up: ``make browser-deps`` (Debian's ``chromium`` as root, ``npm ci`` in ``tests/browser``). Without
them the test skips saying so; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

pytestmark = [pytest.mark.slow]

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_node() -> str:
    """The ``node`` that runs the browser script, once chromium and playwright-core are known to be there
    (before the API server is started for nothing)."""
    return _tools_or_skip()


def _tools_or_skip() -> str:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian's chromium package)")
    node = shutil.which("node")
    if node is None:
        missing.append("node")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/browser/node_modules (npm ci)")
    if missing:
        reason = f"browser test needs {', '.join(missing)}: run `make browser-deps`"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    assert node is not None
    return node


def test_a_person_reads_the_ledger_and_triggers_a_retry_in_airflows_ui(browser_node, airflow_ui, tmp_path):
    node = browser_node
    shots = tmp_path / "screenshots"
    shots.mkdir()
    config = {
        "url": airflow_ui.url,
        "user": "operator",
        "password": airflow_ui.passwords["operator"],
        "screenshots": str(shots),
        "ids": airflow_ui.seeded.ids,
        "daily_run": airflow_ui.seeded.daily_run,
    }
    env = {**os.environ, "KOYWE_BROWSER_CONFIG": json.dumps(config)}
    done = subprocess.run(
        [node, str(BROWSER_DIR / "koywe_page.mjs")],
        cwd=BROWSER_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the browser (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    result = json.loads(lines[-1])
    assert result["ok"], (
        f"{result.get('error')}\nat {result.get('url')}\nseen: {json.dumps(result.get('seen'), indent=1)}\n"
        f"screenshots in {shots}\napi-server log tail:\n{airflow_ui.tail(3000)}"
    )
    seen = result["seen"]
    print(f"screenshots: {shots}")

    assert seen["totals"] == {"issued": "4", "rejected": "1", "unknown": "1", "invalid": "1", "dead": "1"}
    assert seen["search_landed_on"].startswith("CL-0003")
    assert (
        seen["top_url_after_search"]
        == f"/plugin/koywe/koywe-ledger/documents/{airflow_ui.seeded.ids['CL-0003']}"
    )
    assert seen["generations"] == 2
    assert "no autorizado" in seen["bureau"]
    assert "Koywe issuance report" in seen["report_heading"]
    assert {"CL-0004", "PE-0002", "MX-0001", "INV-BAD-1"} <= set(seen["run_failures"])
    assert seen["form_references"] == "CL-0004" and seen["form_requeue"] is True
    assert seen["airflow_run_page"] == f"/dags/koywe_retry_failed_documents/runs/{seen['run_id']}"
    assert seen["foreign_requests"] == []
    for name in (
        "1-counts.png",
        "2-document.png",
        "3-run-report.png",
        "4-trigger-form.png",
        "6-airflow-run.png",
    ):
        assert (shots / name).stat().st_size > 10_000, name

    # The run exists in Airflow as the form filled it, started by that person.
    with airflow_ui.client("admin") as client:
        run = client.get(
            f"/api/v2/dags/koywe_retry_failed_documents/dagRuns/{quote(seen['run_id'], safe='')}"
        )
        assert run.status_code == 200, run.text
        body = run.json()
        dag = client.get("/api/v2/dags/koywe_retry_failed_documents").json()
    assert body["conf"]["references"] == ["CL-0004"]
    assert body["conf"]["requeue_rejected"] is True and body["conf"]["dry_run"] is False
    assert body["triggering_user_name"] == "operator"
    assert body["note"] == "Triggered from the Koywe page for CL-0004"
    assert dag["is_paused"] is False  # the form's "unpause" box was ticked for the paused DAG
