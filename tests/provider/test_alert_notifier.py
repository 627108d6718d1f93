"""``KoyweAlertNotifier``: every Koywe DAG alerts on failure; what an alert says; where it goes
(``[koywe] alert_notifier``). The real mail of a real failed run: ``tests/e2e/test_alert_mail.py``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from koywe_provider.notifications import KoyweAlertNotifier

SENT: list[dict] = []


class RecordingNotifier:
    """A user's own transport (``[koywe] alert_notifier = tests' dotted path``)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def notify(self, context):
        SENT.append({"kwargs": self.kwargs, "alert": context["koywe_alert"]})


class FakeTI:
    def __init__(self, run_check=None, states=None):
        self.run_check = run_check
        self.states = states or {}

    def xcom_pull(self, task_ids, key):
        assert (task_ids, key) == ("check_run", "run_check")
        return self.run_check

    def get_task_states(self, dag_id, run_ids):
        return {run_ids[0]: self.states}


@pytest.fixture
def alert_ledger(ledger, ingest, monkeypatch):
    """The ``koywe_ledger`` connection on a ledger with one dead duplicate alarm, one dead row and one
    stuck row."""
    ids = ingest(ledger, {"DUP-1": {"n": 1}, "DEAD-1": {"n": 2}, "OLD-1": {"n": 3}})
    ledger.mark_dead(ids["DUP-1"], error="2 documents carry it", error_class="DuplicateAlarm")
    ledger.mark_dead(
        ids["DEAD-1"], error="gave up after 10 POSTs: token=abc", error_class="KoyweTransientError"
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOYWE_LEDGER",
        json.dumps({"conn_type": "sqlite", "extra": {"sqlalchemy_url": str(ledger.engine.url)}}),
    )
    monkeypatch.setenv("AIRFLOW__KOYWE__STUCK_AFTER_SECONDS", "0")  # the pending row is stuck at once
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    return ledger


def _context(ti=None, reason="task_failure"):
    return {
        "dag": SimpleNamespace(dag_id="koywe_reconciliation"),
        "run_id": "manual__1",
        "ti": ti,
        "reason": reason,
    }


def test_the_alert_names_the_problems_counts_rows_and_run(alert_ledger):
    ti = FakeTI(
        run_check={
            "problems": ["3 reconciliation difference(s)"],
            "counts": {"documents": 4, "dead": 2},
            "report": "/reports/r.json",
        },
        states={"compare": "failed", "report": "success"},
    )
    alert = KoyweAlertNotifier().build_alert(_context(ti))
    assert alert.subject == "[Koywe] koywe_reconciliation failed: 3 reconciliation difference(s)"
    assert alert.problems == ["3 reconciliation difference(s)"]
    assert alert.url == "https://airflow.example.com/dags/koywe_reconciliation/runs/manual__1"
    text = alert.text
    assert "Failed tasks: compare" in text
    assert "Counts: documents 4, dead 2" in text
    assert "Report: /reports/r.json" in text
    assert "Dead rows in the ledger (need a person): 2" in text
    assert "- DUP-1 (account 4201, dead, DuplicateAlarm)" in text
    assert "Duplicate alarms (several Koywe documents per reference): 1" in text
    assert "Stuck rows (unchanged past [koywe] stuck_after_seconds): 1" in text
    assert "- OLD-1 (account 4201, pending)" in text
    assert "token=abc" not in text and "gave up" not in text  # error texts are never mailed
    assert "<pre" in alert.html and "&lt;" not in alert.text


def test_without_xcom_the_failed_tasks_make_the_subject(alert_ledger):
    alert = KoyweAlertNotifier().build_alert(_context(FakeTI(states={"ingest": "failed"})))
    assert alert.subject == "[Koywe] koywe_reconciliation failed: task ingest failed"
    alert = KoyweAlertNotifier().build_alert(_context(None, reason="timed_out"))
    assert alert.problems == ["the run failed (timed_out)"]


def test_html_escapes_what_comes_from_the_ledger(ledger, ingest, monkeypatch):
    ids = ingest(ledger, {"<b>R</b>&{{ conn.smtp_default.password }}": {"n": 1}})
    ledger.mark_dead(next(iter(ids.values())), error="x", error_class="DuplicateAlarm")
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOYWE_LEDGER",
        json.dumps({"conn_type": "sqlite", "extra": {"sqlalchemy_url": str(ledger.engine.url)}}),
    )
    alert = KoyweAlertNotifier().build_alert(_context())
    assert "&lt;b&gt;R&lt;/b&gt;&amp;{{ conn.smtp_default.password }}" in alert.html
    assert "<b>R</b>" not in alert.html


def test_transports_come_from_the_koywe_settings(alert_ledger, monkeypatch, caplog):
    SENT.clear()
    monkeypatch.setenv("AIRFLOW__KOYWE__ALERT_NOTIFIER", f"{__name__}.RecordingNotifier, none")
    monkeypatch.setenv("AIRFLOW__KOYWE__ALERT_NOTIFIER_KWARGS", '{"room": "ops"}')
    context = _context(FakeTI(states={"compare": "failed"}))
    KoyweAlertNotifier()(context)
    assert len(SENT) == 1
    assert SENT[0]["kwargs"] == {"room": "ops"}
    assert SENT[0]["alert"]["subject"] == "[Koywe] koywe_reconciliation failed: task compare failed"
    assert SENT[0]["alert"]["dag_id"] == "koywe_reconciliation"

    monkeypatch.setenv("AIRFLOW__KOYWE__ALERT_NOTIFIER", "smtp")
    monkeypatch.delenv("AIRFLOW__KOYWE__ALERT_TO", raising=False)
    KoyweAlertNotifier()(context)  # no recipients: nothing sent, nothing raised
    assert len(SENT) == 1
    assert KoyweAlertNotifier(transports="none")._transport_names() == []


def test_a_missing_transport_provider_fails_the_callback_by_name_only(alert_ledger):
    with pytest.raises(RuntimeError, match=r"Koywe alert not sent through slack: ModuleNotFoundError"):
        KoyweAlertNotifier(transports=["slack"]).notify(_context())
