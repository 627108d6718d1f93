"""The Koywe page on a real ``airflow api-server`` with the simple auth manager: nobody reads the ledger
without an Airflow login and read access to the Koywe runs, and the page's buttons trigger the DAGs
through Airflow's REST API with the user's own session, which Airflow authorises itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import jwt
import pytest

pytestmark = [pytest.mark.slow]

PAGES = [
    "/koywe-ledger/",
    "/koywe-ledger/search?q=CL-0003",
    "/koywe-ledger/documents/1",
    "/koywe-ledger/runs",
    "/koywe-ledger/trigger/koywe_retry_failed_documents?references=CL-0004",
    "/koywe-ledger/static/koywe.css",
]


@pytest.mark.parametrize("path", PAGES)
def test_without_a_login_every_route_answers_401(airflow_ui, path):
    with airflow_ui.client() as client:
        response = client.get(path)
    assert response.status_code == 401, response.text
    assert "CL-0" not in response.text


def test_a_browser_without_a_login_gets_401_and_a_link_to_airflows_login(airflow_ui):
    with airflow_ui.client() as client:
        response = client.get("/koywe-ledger/documents/1", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert "Sign in to Airflow" in response.text
    # Airflow's sign-in, coming back to this very page (inside the iframe, which may not navigate the top).
    assert f"/auth/login?next={quote(airflow_ui.url + '/koywe-ledger/documents/1', safe='')}" in response.text
    assert "CL-0001" not in response.text


def test_a_forged_or_expired_token_is_refused(airflow_ui):
    forged = jwt.encode(
        {
            "sub": "admin",
            "role": "admin",
            "aud": "apache-airflow",
            "exp": datetime.now(UTC) + timedelta(hours=1),
        },
        "not-the-api-servers-secret-" * 3,
        algorithm="HS512",
    )
    with airflow_ui.client() as client:
        client.cookies.set("_token", forged)
        assert client.get("/koywe-ledger/").status_code == 403
    with airflow_ui.client() as client:
        client.headers["Authorization"] = f"Bearer {forged}"
        assert client.get("/koywe-ledger/documents/1").status_code == 403


@pytest.mark.parametrize("cookie", [True, False], ids=["session-cookie", "bearer-token"])
def test_a_user_without_permission_gets_403(airflow_ui, cookie):
    with airflow_ui.client("nobody", cookie=cookie) as client:
        for path in PAGES:
            response = client.get(path)
            assert response.status_code == 403, (path, response.text)
            assert "CL-0" not in response.text
        assert "koywe_daily_issuance" in client.get("/koywe-ledger/").json()["detail"]


def test_a_viewer_reads_the_ledger_but_is_offered_no_trigger(airflow_ui):
    ids = airflow_ui.seeded.ids
    with airflow_ui.client("viewer") as client:
        overview = client.get("/koywe-ledger/?days=0")
        assert overview.status_code == 200
        assert 'data-state="dead">1<' in overview.text  # the totals row
        document = client.get(f"/koywe-ledger/documents/{ids['CL-0004']}")
        assert document.status_code == 200
        assert "CL-0004" in document.text
        assert 'class="button disabled"' in document.text
        assert 'href="trigger/koywe_retry_failed_documents' not in document.text
        # Triggering through the REST API with the viewer's own session: Airflow refuses it.
        response = client.post(
            "/api/v2/dags/koywe_retry_failed_documents/dagRuns",
            json={"logical_date": None, "conf": {"references": ["CL-0004"]}},
        )
        assert response.status_code == 403, response.text


def test_an_operator_is_offered_the_trigger_and_its_session_starts_the_run(airflow_ui):
    ids = airflow_ui.seeded.ids
    with airflow_ui.client("operator") as client:
        document = client.get(f"/koywe-ledger/documents/{ids['CL-0004']}")
        assert document.status_code == 200
        href = "trigger/koywe_retry_failed_documents?references=CL-0004&amp;requeue_rejected=true"
        assert f'href="{href}"' in document.text
        form = client.get("/koywe-ledger/" + href.replace("&amp;", "&"))
        assert form.status_code == 200
        assert 'data-prefill=\'{"references": ["CL-0004"], "requeue_rejected": ["true"]}\'' in form.text
        # What the form's submit does: the public REST API, the operator's own session cookie.
        details = client.get("/api/v2/dags/koywe_retry_failed_documents/details")
        assert details.status_code == 200
        assert {"references", "requeue_rejected", "dry_run"} <= set(details.json()["params"])
        response = client.post(
            "/api/v2/dags/koywe_retry_failed_documents/dagRuns",
            json={
                "logical_date": None,
                "conf": {"references": ["CL-0004"], "requeue_rejected": True, "dry_run": True},
                "note": "Triggered from the Koywe page for CL-0004",
            },
        )
        assert response.status_code == 200, response.text
        run = response.json()
        assert run["conf"]["references"] == ["CL-0004"]
        assert run["triggered_by"] == "rest_api"
        again = client.get(f"/api/v2/dags/koywe_retry_failed_documents/dagRuns/{quote(run['dag_run_id'])}")
        assert again.json()["conf"]["requeue_rejected"] is True


def test_the_pages_answer_what_the_ledger_holds(airflow_ui):
    seeded = airflow_ui.seeded
    with airflow_ui.client("admin", cookie=False) as client:
        found = client.get("/koywe-ledger/search", params={"q": "CL-0003~2"})
        assert found.status_code == 303
        assert found.headers["location"] == f"documents/{seeded.ids['CL-0003']}"
        document = client.get(f"/koywe-ledger/documents/{seeded.ids['CL-0003']}").text
        assert "RUT receptor 96790240-3 no autorizado" in document  # the bureau's answer, generation 1
        assert "CL-0003~2" in document  # generation 2's Koywe reference
        run = client.get(f"/koywe-ledger/runs/{quote(seeded.daily_run, safe='')}")
        assert run.status_code == 200
        assert "Koywe issuance report" in run.text
        assert "<table>" in run.text  # the Markdown rendered
        assert "details[0].unit_measure" in run.text  # PE-0002's reason
        plugins = client.get("/api/v2/plugins").json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "koywe_ledger_ui")
    assert ours["external_views"][0]["url_route"] == "koywe"
    assert ours["fastapi_apps"][0]["url_prefix"] == "/koywe-ledger"
