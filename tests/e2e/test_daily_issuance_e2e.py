"""End to end: ``airflow dags test koywe_daily_issuance`` against the sandbox, twice, on real Airflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from koywe_demo.env import airflow, airflow_env, setup
from koywe_provider.ledger import Ledger
from koywe_test_support import PROJECT_DIR, airflow_haystacks, dags_test, leaks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INBOX = PROJECT_DIR / "include" / "samples" / "inbox"
DAG_ID = "koywe_daily_issuance"


def inbox_lines() -> tuple[set[str], int]:
    """References of the valid sample files, and the number of lines of the invalid one."""
    valid = set()
    for path in INBOX.glob("documents-*.jsonl"):
        if path.name == "documents-invalid.jsonl":
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                valid.add(json.loads(line)["reference"])
    invalid = sum(1 for line in (INBOX / "documents-invalid.jsonl").read_text().splitlines() if line.strip())
    return valid, invalid


class Run:
    def __init__(self, tmp_path_factory):
        from koywe_sandbox.testing import run_sandbox

        self.home = tmp_path_factory.mktemp("airflow_home")
        self.ledger_url = f"sqlite:///{self.home / 'ledger.db'}"
        self._sandbox_cm = run_sandbox(seed=3)
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

    def dags_test(self, conf: dict) -> str:
        return dags_test(self.env, DAG_ID, conf, self.outputs)

    def close(self):
        self._sandbox_cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    r = Run(tmp_path_factory)
    try:
        r.dags_test({"inbox": str(INBOX)})
        r.first_stats = r.sandbox.stats()
        r.first_documents = r.sandbox.documents()
        yield r
    finally:
        r.close()


def internal_references(document: dict) -> list[str]:
    return [
        str(ref["reference_number"])
        for ref in document.get("references") or []
        if str(ref.get("reference_code")).lstrip("0") == "5"
    ]


def test_every_valid_sample_issued_exactly_once_with_one_login(run):
    valid, invalid = inbox_lines()
    assert len(valid) >= 40
    sent = [ref for doc in run.first_documents for ref in internal_references(doc)]
    assert sorted(sent) == sorted(valid)  # each valid reference exactly once, nothing else
    assert run.first_stats["duplicate_references"] == 0
    assert run.first_stats["auth_calls"] == 1
    assert run.first_stats["documents_created"] == len(valid)

    ledger = Ledger(run.ledger_url)
    counts = ledger.counts_by_state()
    assert counts["issued"] == len(valid)
    assert counts["invalid"] == invalid
    assert sum(counts.values()) == len(valid) + invalid
    for ref in list(valid)[:5]:
        row = next(
            r for r in [ledger.get_by_reference(str(a), ref) for a in (4201, 16268, 14540, 11857)] if r
        )
        assert row["koywe_document_id"] and row["document_number"]
    ledger.dispose()


def test_invalid_lines_are_recorded_with_file_line_and_field(run):
    ledger = Ledger(run.ledger_url)
    failures = ledger.failures()
    ledger.dispose()
    _, invalid = inbox_lines()
    assert len(failures) == invalid
    for failure in failures:
        assert failure["state"] == "invalid"
        assert "documents-invalid.jsonl" in failure["source"]
        assert failure["line_no"] >= 1
        assert f"line {failure['line_no']}" in failure["last_error"]
        assert failure["error_field"]


def test_report_file_lists_counts_and_failures(run):
    reports = sorted((run.home / "koywe_reports" / DAG_ID).glob("*.json"))
    assert reports
    report = json.loads(reports[0].read_text())
    valid, invalid = inbox_lines()
    assert report["states"]["issued"] == len(valid)
    assert report["states"]["invalid"] == invalid
    assert len(report["failures"]) == invalid
    assert Path(str(reports[0]).replace(".json", ".md")).exists()


def test_second_run_issues_nothing_new_and_reuses_the_token(run):
    run.dags_test({"inbox": str(INBOX)})
    stats = run.sandbox.stats()
    assert stats["documents_created"] == run.first_stats["documents_created"]
    assert stats["auth_calls"] == 1  # the token cached in the Airflow Variable was reused
    assert stats["duplicate_references"] == 0
    latest = max((run.home / "koywe_reports" / DAG_ID).glob("*.json"), key=lambda p: p.stat().st_mtime)
    report = json.loads(latest.read_text())
    assert report["ingest"]["added"] == 0
    assert report["batches"]["issued"] == 0


def test_dry_run_sends_nothing(run, tmp_path):
    valid_line = (INBOX / "documents-cl.jsonl").read_text().splitlines()[0]
    record = json.loads(valid_line)
    record["reference"] = "DRY-RUN-0001"
    (tmp_path / "dry.jsonl").write_text(json.dumps(record) + "\n")
    before = run.sandbox.stats()
    run.dags_test({"inbox": str(tmp_path), "dry_run": True})
    after = run.sandbox.stats()
    assert after["documents_created"] == before["documents_created"]
    assert after["auth_calls"] == before["auth_calls"]
    ledger = Ledger(run.ledger_url)
    assert ledger.get_by_reference(str(record["account_id"]), "DRY-RUN-0001")["state"] == "pending"
    ledger.dispose()


def test_no_secret_in_logs_xcoms_or_rendered_fields(run):
    token_json = airflow(
        run.env, "variables", "get", "koywe_token__koywe_default", capture=True
    ).stdout.strip()
    token = json.loads(token_json)["access_token"]
    secrets = [token, run.sandbox.credentials["client_secret"], run.sandbox.credentials["password"]]

    haystacks = airflow_haystacks(run.home, run.outputs)
    assert "issued" in haystacks["xcom"]  # we did read the real material
    assert "koywe_daily_issuance" in haystacks["dags test output"]
    assert leaks(secrets, haystacks) == []
