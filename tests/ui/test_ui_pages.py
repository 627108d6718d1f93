"""The Koywe page's app in-process (the auth check itself is tested on a real API server in
test_ui_api_server.py): what each page shows, what it never shows, and how it fails."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from airflow.sdk import ObjectStoragePath
from fastapi.testclient import TestClient

from koywe_provider.ledger import IngestItem
from koywe_provider.ui import app as ui_app
from koywe_provider.ui.asgi import EXTERNAL_VIEW, URL_PREFIX, LazyApp
from koywe_ui_support import seed_ledger


class Grants:
    def __init__(self, read: bool = True, trigger: frozenset[str] = frozenset(ui_app.TRIGGERABLE)):
        self.read, self.trigger = read, trigger

    def may_read(self, user) -> bool:
        return self.read

    def may_trigger(self, user, dag_id: str) -> bool:
        return dag_id in self.trigger


@pytest.fixture
def site(ledger, tmp_path):
    seeded = seed_ledger(ledger, reports_dir=tmp_path / "reports")

    def make(grants: Grants | None = None, *, reports: Path | None = None) -> TestClient:
        folder = ObjectStoragePath((reports or tmp_path / "reports").resolve().as_uri())
        app = ui_app.create_app(ledger=lambda: ledger, reports=lambda: folder, permissions=grants or Grants())
        app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="ana", role="op")
        return TestClient(app, root_path=URL_PREFIX)

    make.seeded = seeded
    make.ledger = ledger
    return make


def test_the_overview_counts_every_state_and_links_the_runs(site):
    page = site().get("/", params={"days": 0})
    assert page.status_code == 200
    assert '<base href="/koywe-ledger/">' in page.text
    totals = dict(re.findall(r'<th class="n" data-state="(\w+)">(\d+)</th>', page.text))
    assert totals == {
        "issued": "4", "draft": "0", "not_sent": "0", "pending": "0", "in_flight": "0",
        "retryable": "0", "unknown": "1", "rejected": "1", "invalid": "1", "dead": "1",
    }  # fmt: skip
    assert ">Chile<" in page.text and ">Peru<" in page.text and ">Mexico<" in page.text
    assert "runs/manual__" in page.text
    peru = site().get("/", params={"days": 0, "country": "83"}).text
    assert ">Chile<" not in peru.split("<table")[1]


def test_one_search_hit_opens_the_document_and_several_are_listed(site):
    client = site()
    one = client.get("/search", params={"q": "CL-0003~2"}, follow_redirects=False)
    assert one.status_code == 303
    assert one.headers["location"] == f"documents/{site.seeded.ids['CL-0003']}"
    several = client.get("/search", params={"q": "CL-"})
    assert several.status_code == 200
    assert several.text.count('href="documents/') == 4
    none = client.get("/search", params={"q": "nothing-like-this"})
    assert "No document has this reference" in none.text


def test_a_document_page_shows_generations_attempts_and_the_bureau_but_no_payload(site):
    client = site()
    seeded = site.seeded
    page = client.get(f"/documents/{seeded.ids['CL-0003']}").text
    assert "CL-0003~2" in page and "5 content rejected" in page and "no autorizado" in page
    assert page.count("<tr><td>") >= 2  # two generations
    assert "Comercial Andes SpA" in page and "35,700 CLP" in page
    for private in (
        "Av. Providencia",
        "+56223456789",
        "Calle Prat",
        "line_description",
        "Servicio de mantencion",
    ):
        assert private not in page
    peru = client.get(f"/documents/{seeded.ids['PE-0001']}").text
    assert "compras@example.pe" not in peru and re.search(r"224\.3\d PEN", peru)
    invalid = client.get(f"/documents/{seeded.ids['INV-BAD-1']}").text
    assert "header.receiver_tax_id_code" in invalid and "1-9" in invalid
    assert "none (the line did not parse)" in invalid and "<dt>total</dt>" not in invalid
    assert "receiver_tax_id_code&#34;: &#34;1-9" not in invalid and '"1-9"}' not in invalid  # no raw line
    assert client.get("/documents/999999").status_code == 404


def test_buttons_follow_the_state_and_the_users_permission(site):
    seeded = site.seeded
    dead = site().get(f"/documents/{seeded.ids['CL-0004']}").text
    assert 'href="trigger/koywe_retry_failed_documents?references=CL-0004&amp;requeue_rejected=true"' in dead
    assert "koywe_void_documents" not in dead
    issued = (
        site(Grants(trigger=frozenset({"koywe_document_status"})))
        .get(f"/documents/{seeded.ids['CL-0001']}")
        .text
    )
    assert "Your Airflow role may not trigger koywe_void_documents" in issued
    assert 'href="trigger/koywe_document_status?reference=CL-0001&amp;account_id=4201"' in issued
    unknown = site().get(f"/documents/{seeded.ids['MX-0001']}").text
    assert 'href="trigger/koywe_retry_failed_documents?references=MX-0001"' in unknown


def test_the_trigger_form_carries_the_prefill_and_only_offers_koywe_dags(site):
    client = site(Grants(trigger=frozenset()))
    form = client.get(
        "/trigger/koywe_retry_failed_documents", params=[("references", "A"), ("references", "B")]
    )
    assert form.status_code == 200
    assert 'data-prefill=\'{"references": ["A", "B"]}\'' in form.text
    assert "may not trigger koywe_retry_failed_documents" in form.text
    assert re.search(r'<button type="submit" id="trigger-submit"\s+disabled', form.text)
    assert client.get("/trigger/some_other_dag").status_code == 404
    script = client.get("/static/koywe.js")
    assert (
        script.status_code == 200
        and "/dagRuns" in script.text
        and 'credentials: "same-origin"' in script.text
    )
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/app.py").status_code == 404


def test_the_run_page_renders_the_report_and_escapes_what_it_holds(site, tmp_path):
    seeded = site.seeded
    page = site().get(f"/runs/{seeded.daily_run}")
    assert page.status_code == 200
    assert "<h1>Koywe issuance report" in page.text and "<table>" in page.text
    assert 'href="/dags/koywe_daily_issuance/runs/' in page.text
    assert page.text.count('href="documents/') >= 4  # its failures, linked
    # A reference is data from an inbox: nothing in it becomes markup, on the page or in the report.
    site.ledger.ingest_many(
        [IngestItem("<script>alert(1)</script>", "4201", None, None, "x.jsonl", 1, error="bad <b>line</b>")],
        run_id="manual__xss",
    )
    from koywe_provider.services.report import build_report, write_report

    write_report(
        build_report(site.ledger, dag_id="koywe_daily_issuance", run_id="manual__xss"),
        ObjectStoragePath((tmp_path / "reports").resolve().as_uri()),
    )
    xss = site().get("/runs/manual__xss").text
    assert "<script>alert(1)</script>" not in xss and "<b>line</b>" not in xss
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in xss
    assert site().get("/runs/no-such-run").status_code == 404


def test_a_run_without_a_report_file_still_shows_its_failures(site, tmp_path):
    page = site(reports=tmp_path / "elsewhere").get(f"/runs/{site.seeded.retry_run}")
    assert page.status_code == 200
    assert "No report file for this run" in page.text and "CL-0004" in page.text


def test_without_read_permission_every_page_is_403(site):
    client = site(Grants(read=False))
    for path in ("/", "/search?q=CL", "/documents/1", "/runs", "/trigger/koywe_retry_failed_documents"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "CL-0" not in response.text
    html = client.get("/", headers={"Accept": "text/html"})
    assert html.status_code == 403 and "Not allowed" in html.text


def test_a_missing_ledger_is_a_clear_503_and_creates_nothing(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "koywe_ledger.db"
    monkeypatch.setenv("AIRFLOW_CONN_KOYWE_LEDGER", f'{{"conn_type": "sqlite", "host": "{missing}"}}')
    app = ui_app.create_app(permissions=Grants())
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="ana", role="op")
    response = TestClient(app).get("/")
    assert response.status_code == 503
    assert "no ledger at" in response.text and str(missing) in response.text
    assert not missing.exists()


def test_the_lazy_app_builds_once_on_first_use():
    lazy = LazyApp("koywe_provider.ui.app:create_app")
    assert lazy._app is None  # importing the plugin built nothing
    built = lazy.build()
    assert lazy.build() is built
    assert repr(lazy) == "LazyApp('koywe_provider.ui.app:create_app')"

    async def probe():
        sent = []

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "root_path": "",
                 "query_string": b"", "headers": [], "http_version": "1.1", "scheme": "http",
                 "server": ("t", 80), "client": ("t", 1)}  # fmt: skip
        await lazy(scope, receive, send)
        return sent

    sent = asyncio.run(probe())
    assert sent[0]["status"] == 401  # no credentials: Airflow's own get_user refuses
    assert EXTERNAL_VIEW["href"] == "koywe-ledger/" and EXTERNAL_VIEW["url_route"] == "koywe"


def test_the_plugin_file_imports_no_web_framework():
    import subprocess
    import sys

    code = (
        "import sys; import koywe_provider.ui.asgi; "
        "heavy = [m for m in ('fastapi', 'jinja2', 'airflow.api_fastapi.core_api.security') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("state", "buttons"),
    [
        ("rejected", ["koywe_retry_failed_documents?references=R&requeue_rejected=true"]),
        ("dead", ["koywe_retry_failed_documents?references=R&requeue_rejected=true"]),
        ("invalid", ["koywe_retry_failed_documents?references=R"]),
        ("retryable", ["koywe_retry_failed_documents?references=R"]),
        ("unknown", ["koywe_retry_failed_documents?references=R"]),
        ("pending", ["koywe_retry_failed_documents?references=R&requeue_rejected=true"]),
        ("issued", ["koywe_void_documents?references=R", "koywe_document_status?reference=R&account_id=7"]),
        ("draft", ["koywe_void_documents?references=R", "koywe_document_status?reference=R&account_id=7"]),
        ("not_sent", ["koywe_void_documents?references=R"]),
    ],
)
def test_each_state_gets_the_buttons_of_what_the_dags_do_with_it(state, buttons):
    actions = ui_app.actions_for({"state": state, "reference": "R", "account_id": "7"})
    assert [a.href() for a in actions] == [f"trigger/{b}" for b in buttons]
    assert all(a.dag_id in ui_app.TRIGGERABLE for a in actions)


def test_a_line_without_a_reference_is_shown_by_its_file_and_line():
    from koywe_provider.ui import render

    source = "file:///data/inbox/documents-invalid.jsonl"
    assert render.short_reference(f"{source}#L2") == "documents-invalid.jsonl#L2"
    assert render.short_reference("INV-1") == "INV-1"
    assert (
        render.reason(f"{source} line 2: missing or empty reference", source, 2)
        == "missing or empty reference"
    )
    assert render.reason(f"{source} line 3: x", source, 2) == f"{source} line 3: x"  # another line: kept
    assert render.reason(None) == ""
