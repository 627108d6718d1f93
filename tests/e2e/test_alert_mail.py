"""Alerts for real: a retry run that raises a duplicate alarm fails, its DAG failure callback
(``KoyweAlertNotifier``) mails the alert through the SMTP provider to a local SMTP sink (aiosmtpd,
in-process on a free port), and the mail names the problem, the reference and the run — and no secret.

1. the daily DAG issues three documents whose answers are all lost (sandbox ``lost_response_rate`` 1):
   they are ``unknown``, and the run is OK;
2. a second Koywe document is planted under one of their references;
3. the retry DAG looks the three up: two are adopted, the third has two matches — a duplicate alarm, the
   row is ``dead``, ``check_run`` fails the run, the failure callback sends the mail.
"""

from __future__ import annotations

import json
from email import message_from_bytes, policy

import pytest

from koywe_demo.env import airflow, airflow_env, setup
from koywe_sandbox.testing import free_port
from koywe_test_support import chile_factura, leaks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SMTP_PASSWORD = "smtp-Secret-pa55"


class Sink:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            {"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "data": bytes(envelope.content)}
        )
        return "250 OK"


class Authenticator:
    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        ok = auth_data.login == b"alerts" and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)


@pytest.fixture(scope="module")
def smtp_sink():
    from aiosmtpd.controller import Controller

    sink = Sink()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=Authenticator(),
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield sink, controller.port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def alarm_run(tmp_path_factory, smtp_sink):
    from koywe_sandbox.testing import run_sandbox

    sink, port = smtp_sink
    home = tmp_path_factory.mktemp("airflow_home")
    inbox = tmp_path_factory.mktemp("inbox")
    references = ["ALERT-1", "ALERT-2", "ALERT-3"]
    (inbox / "day.jsonl").write_text(
        "".join(
            json.dumps({"reference": r, "account_id": 4201, "document": chile_factura(net=10_000 + n)}) + "\n"
            for n, r in enumerate(references)
        )
    )
    with run_sandbox(seed=23) as sb:
        env = airflow_env(
            airflow_home=home,
            koywe_base_url=sb.base_url,
            credentials=sb.credentials,
            ledger_url=f"sqlite:///{home / 'ledger.db'}",
            extra={
                "AIRFLOW__KOYWE__RETRY_BASE_SECONDS": "0",
                "AIRFLOW__KOYWE__ALERT_TO": "billing-ops@example.com, cfo@example.com",
                "AIRFLOW__KOYWE__ALERT_FROM": "koywe-alerts@example.com",
                "AIRFLOW__API__BASE_URL": "http://airflow.example.com",
                "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
                    {
                        "conn_type": "smtp",
                        "host": "127.0.0.1",
                        "port": port,
                        "login": "alerts",
                        "password": SMTP_PASSWORD,
                        "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 30},
                    }
                ),
            },
        )
        setup(env)
        sb.set_faults(lost_response_rate=1.0)
        daily = airflow(
            env,
            "dags",
            "test",
            "koywe_daily_issuance",
            "-c",
            json.dumps({"inbox": str(inbox), "issue_date": "2026-11-20"}),
            check=False,
            capture=True,
        )
        sb.set_faults(lost_response_rate=0.0)
        daily_output = daily.stdout + daily.stderr
        assert daily.returncode == 0, daily_output[-5000:]
        assert not sink.messages, "a run that did its work sent an alert"
        created = [d for d in sb.documents() if "ALERT-3" in json.dumps(d.get("references") or [])]
        assert len(created) == 1, created
        body = {k: v for k, v in created[0].items() if k not in ("document_id", "document_number")}
        sb.plant_document(body)
        retry = airflow(env, "dags", "test", "koywe_retry_failed_documents", check=False, capture=True)
        (home / "retry.log").write_text(retry.stdout + retry.stderr)
        yield {
            "sink": sink,
            "home": home,
            "outputs": [daily_output, retry.stdout + retry.stderr],
            "credentials": sb.credentials,
        }


def _mail(alarm_run):
    messages = alarm_run["sink"].messages
    assert len(messages) == 1, alarm_run["outputs"][-1][-5000:]
    return messages[0], message_from_bytes(messages[0]["data"], policy=policy.default)


def test_the_failed_run_mails_one_alert_to_the_configured_recipients(alarm_run):
    raw, mail = _mail(alarm_run)
    assert raw["from"] == "koywe-alerts@example.com"
    assert sorted(raw["to"]) == ["billing-ops@example.com", "cfo@example.com"]
    assert mail["Subject"] == (
        "[Koywe] koywe_retry_failed_documents failed: 1 duplicate alarm(s): several Koywe documents per reference"
    )


def test_the_alert_names_the_problem_the_reference_and_the_run(alarm_run):
    _, mail = _mail(alarm_run)
    text = mail.get_body(preferencelist=("html",)).get_content()
    assert "1 duplicate alarm(s): several Koywe documents per reference" in text
    assert "Duplicate alarms (several Koywe documents per reference): 1" in text
    assert "ALERT-3 (account 4201, dead, DuplicateAlarm)" in text
    assert "ALERT-1" not in text and "ALERT-2" not in text  # adopted, not alarming
    assert "koywe_reports/koywe_retry_failed_documents/" in text
    assert "http://airflow.example.com/dags/koywe_retry_failed_documents/runs/" in text


def test_no_secret_in_the_mail_and_the_run_log_says_it_was_sent(alarm_run):
    raw, _ = _mail(alarm_run)
    mail_text = raw["data"].decode(errors="replace")
    secrets = [SMTP_PASSWORD, *alarm_run["credentials"].values()]
    assert leaks([s for s in secrets if len(s) > 5], {"the alert mail": mail_text}) == []
    assert "Koywe alert sent (smtp)" in alarm_run["outputs"][-1]
