"""The run's report and the final check that fails a run whose work failed (pure functions)."""

from __future__ import annotations

from koywe_provider.services.report import build_report, render_markdown, run_counts, run_problems


def test_a_clean_run_has_no_problem():
    counts = {"documents": 10, "issued": 10, "invalid": 0, "dead": 0}
    assert run_problems({"ingest": "success", "issue_0": "success", "report": "success"}, counts) == []


def test_every_kind_of_problem_is_named():
    counts = {"documents": 10, "dead": 2, "duplicate_alarms": 1, "mismatch_alarms": 1, "invalid": 6}
    problems = run_problems(
        {"ingest": "failed", "issue_0": "upstream_failed"}, counts, max_invalid_fraction=0.5
    )
    assert problems == [
        "task ingest failed",
        "2 dead row(s) need a person",
        "1 duplicate alarm(s): several Koywe documents per reference",
        "1 content mismatch alarm(s): a Koywe document under our reference is not ours",
        "6 of 10 documents invalid (above [koywe] max_invalid_fraction=0.5)",
    ]
    assert run_problems({"issue_0": "upstream_failed"}, None) == [
        "task(s) issue_0 did not run",
        "no report was written",
    ]


def test_invalid_lines_alone_do_not_fail_the_run_by_default():
    assert run_problems({}, {"documents": 10, "invalid": 9}) == []


def test_the_report_shows_every_generation_of_a_reissued_document(ledger, ingest, make_issuer, clean_sandbox):
    from koywe_test_support import peru_factura

    document = peru_factura()
    account = str(document["header"]["account_id"])
    pk = ingest(ledger, {"PE-REP-1": document}, account_id=account)["PE-REP-1"]
    issuer = make_issuer(ledger)
    clean_sandbox.reject_references("PE-REP-1")
    issuer.issue_range(pk, pk)
    ledger.requeue(["PE-REP-1"], states=("rejected",))
    outcome = issuer.issue_range(pk, pk)
    report = build_report(ledger, dag_id="d", run_id=None, outcomes=[outcome.as_dict()])
    assert run_counts(report)["reissued"] == 1
    markdown = render_markdown(report)
    assert "## Re-issued after a refusal (1): every generation" in markdown
    assert (
        "| PE-REP-1 | issued | 1 | PE-REP-1 |" in markdown
        and "| PE-REP-1 | issued | 2 | PE-REP-1~2 |" in markdown
    )
