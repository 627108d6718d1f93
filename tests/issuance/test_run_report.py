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


def test_stuck_rows_fail_only_the_runs_that_ask():
    counts = {"documents": 0, "stuck": 3}
    assert run_problems({}, counts) == []
    assert run_problems({}, counts, fail_on_stuck=True) == [
        "3 row(s) stuck (unchanged past [koywe] stuck_after_seconds)"
    ]


def test_the_run_note_gives_the_verdict_the_counts_and_the_report():
    from koywe_provider.hooks.airflow_api import MAX_NOTE_LENGTH, truncate_note
    from koywe_provider.services.report import run_note

    ok = run_note([], {"documents": 5, "issued": 5, "invalid": 0}, "/r/run.json")
    assert ok.splitlines()[0] == "**Koywe: OK**"
    assert "documents 5 · issued 5" in ok and "invalid" not in ok and "Report: `/r/run.json`" in ok
    marked = run_note([], {"documents": 5, "issued": 3, "invalid": 1, "rejected": 1}, "/r/run.json")
    assert (
        marked.splitlines()[0]
        == "**Koywe: done, with 1 invalid, 1 rejected document(s)** (listed in the report)"
    )
    assert "documents 5 · issued 3 · invalid 1 · rejected 1" in marked
    failed = run_note(["2 dead row(s) need a person"], {"documents": 2, "issued": 0, "dead": 2}, None)
    assert failed.splitlines()[0] == "**Koywe: run failed** — 2 dead row(s) need a person"
    assert "issued 0 · dead 2" in failed and "Report" not in failed
    assert "no report was written" in run_note(["no report was written"], None, None)
    long = run_note(["x" * 5000], {"documents": 1}, "/r/" + "y" * 5000)
    assert len(truncate_note(long)) <= MAX_NOTE_LENGTH
