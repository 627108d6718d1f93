"""Alerts: a notifier for failed Koywe runs, sent through Airflow's notifier interface.

:class:`KoyweAlertNotifier` is a ``BaseNotifier``: give it to any DAG's (or task's) failure callback::

    DAG(..., on_failure_callback=KoyweAlertNotifier())

Every DAG of this project has it, so an alert goes out when a run fails because of dead rows, duplicate
or content-mismatch alarms, rows stuck past ``[koywe] stuck_after_seconds``, invalid documents above
``[koywe] max_invalid_fraction`` (the ``check_run`` task's problems), reconciliation differences (the
``koywe_reconciliation`` DAG fails its run on them) or any failed task. The alert names the DAG, the run,
the failed tasks, ``check_run``'s problems and counts (XCom ``run_check``) and the ledger's dead, alarmed
and stuck rows (references, states and error classes only), with a link to the run in the UI. Never a
payload, a Koywe error text, a password or a token.

Where it goes is configuration, read when the alert is sent (``[koywe]`` in Airflow's config,
``AIRFLOW__KOYWE__…``):

``alert_notifier``  comma-separated transports: ``smtp`` (default: the SMTP provider's ``SmtpNotifier``),
                    ``slack`` (``SlackNotifier``) and ``slack_webhook`` (``SlackWebhookNotifier``) from
                    ``apache-airflow-providers-slack`` when installed, ``none``, or the dotted path of your
                    own ``BaseNotifier`` class (built with ``alert_notifier_kwargs``, a JSON object; its
                    ``notify(context)`` finds the alert in ``context["koywe_alert"]``: ``subject``,
                    ``text``, ``html``, ``dag_id``, ``run_id``, ``problems``, ``counts``, ``url``).
``alert_to``        e-mail recipients, comma-separated (no recipients: no mail, one log line).
``alert_from``      the sender (default: the SMTP connection's ``from_email``, else ``[email] from_email``).
``alert_conn_id``   the transport's connection (default ``smtp_default``, ``slack_api_default``,
                    ``slack_default``).
``alert_channel``   the Slack channel (``slack``; default ``#koywe-alerts``).

DAG-level callbacks run in Airflow's DAG processor (``airflow/dag_processing/processor.py``), which
must reach the SMTP server (or Slack) and the ledger; under ``airflow dags test`` they run in-process.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow.sdk import BaseNotifier

#: ``[koywe] alert_notifier`` when unset.
DEFAULT_TRANSPORTS = "smtp"
DEFAULT_SLACK_CHANNEL = "#koywe-alerts"
#: Rows named per kind (dead, alarms, stuck) in one alert; the report has them all.
MAX_NAMED = 20
_DEFAULT_CONN = {"smtp": "smtp_default", "slack": "slack_api_default", "slack_webhook": "slack_default"}


@dataclass
class KoyweAlert:
    """What an alert says, in plain text and HTML (every value escaped), and the facts it was built from."""

    dag_id: str
    run_id: str
    subject: str
    text: str
    html: str
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class KoyweAlertNotifier(BaseNotifier):
    """Send a Koywe alert about a failed run through the configured transports (module docstring).

    Every argument overrides its ``[koywe]`` setting; all are optional.

    :param transports: ``"smtp"``, ``"slack"``, ``"slack_webhook"``, ``"none"``, a ``BaseNotifier``
        class path, or a list of them.
    :param to: e-mail recipients (list or comma-separated). :param from_email: the sender.
    :param conn_id: the transport's connection id. :param channel: the Slack channel.
    :param koywe_ledger_conn_id: the ledger whose dead, alarmed and stuck rows the alert names.
    """

    template_fields: Sequence[str] = ()

    def __init__(
        self,
        *,
        transports: str | Sequence[str] | None = None,
        to: str | Sequence[str] | None = None,
        from_email: str | None = None,
        conn_id: str | None = None,
        channel: str | None = None,
        koywe_ledger_conn_id: str = "koywe_ledger",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.transports = transports
        self.to = to
        self.from_email = from_email
        self.conn_id = conn_id
        self.channel = channel
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render (no template fields, and the alert's text is never a template). Also keeps
        ``airflow dags test`` working: there Airflow 3.3.2 passes DAG callbacks a ``SerializedDAG``
        (``models/dagrun.py``, ``execute_dag_callbacks``), which ``BaseNotifier``'s rendering cannot use
        (``'SerializedDAG' object has no attribute 'get_template_env'``)."""
        if self.template_fields:
            super().render_template_fields(context, jinja_env)

    # --- what the alert says ------------------------------------------------------------------
    def build_alert(self, context: dict[str, Any]) -> KoyweAlert:
        """The alert of ``context`` (a DAG or task callback's context). Each fact is read on its own: one
        that cannot be read is left out with a log line, never the whole alert."""
        dag = context.get("dag")
        dag_id = getattr(dag, "dag_id", None) or str(context.get("dag_id") or "?")
        run_id = str(context.get("run_id") or "?")
        ti = context.get("ti")
        reason = str(context.get("reason") or "")
        check = self._fact("check_run's result", lambda: _run_check(ti))
        if check is None:  # no XCom access (``dags test`` runs callbacks after its tasks' comms are gone)
            check = self._fact("the run's report", lambda: _from_report(dag_id, run_id)) or {}
        failed = self._fact("the failed tasks", lambda: _failed_tasks(ti, dag_id, run_id)) or []
        ledger = self._fact("the ledger's rows", self._ledger_facts) or {}
        problems = [str(p) for p in check.get("problems") or []]
        if not problems and failed:
            problems = [f"task{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed"]
        if not problems:
            problems = [f"the run failed ({reason or 'no reason given'})"]
        counts = {k: int(v) for k, v in (check.get("counts") or {}).items() if isinstance(v, int | float)}
        url = _run_url(dag_id, run_id)

        subject = f"[Koywe] {dag_id} failed: {problems[0]}"
        subject = subject if len(subject) <= 160 else subject[:159] + "…"
        lines = [f"Koywe run failed: {dag_id} / {run_id}", ""]
        lines += ["Why:"] + [f"- {p}" for p in problems]
        if failed:
            lines += ["", f"Failed tasks: {', '.join(failed)}"]
        if counts:
            lines += ["", "Counts: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)]
        if check.get("report"):
            lines += ["", f"Report: {check['report']}"]
        for title, key in (
            ("Dead rows in the ledger (need a person)", "dead"),
            ("Duplicate alarms (several Koywe documents per reference)", "duplicate_alarms"),
            ("Content mismatch alarms (a Koywe document under our reference is not ours)", "mismatch_alarms"),
            ("Stuck rows (unchanged past [koywe] stuck_after_seconds)", "stuck"),
        ):
            fact = ledger.get(key)
            if fact and fact["count"]:
                lines += ["", f"{title}: {fact['count']}"]
                lines += [f"- {r}" for r in fact["rows"]]
                if fact["count"] > len(fact["rows"]):
                    lines.append(f"- … and {fact['count'] - len(fact['rows'])} more (see the report)")
        if url:
            lines += ["", f"The run in Airflow: {url}"]
        lines += [
            "",
            "From a shell: airflow koywe list --state dead; airflow koywe show --reference <reference>",
        ]
        text = "\n".join(lines)
        body = "<pre style='font-family: monospace'>" + html.escape(text) + "</pre>"
        if url:
            body = f"<p><a href='{html.escape(url, quote=True)}'>Open the run in Airflow</a></p>" + body
        return KoyweAlert(dag_id, run_id, subject, text, body, problems, counts, url)

    def _fact(self, what: str, read):
        try:
            return read()
        except Exception as err:  # a fact that cannot be read must not stop the alert
            self.log.warning("Koywe alert: %s could not be read (%s)", what, type(err).__name__)
            return None

    def _ledger_facts(self) -> dict[str, Any]:
        from airflow.sdk import conf

        from koywe_provider.hooks.ledger import KoyweLedgerHook
        from koywe_provider.services.report import DEFAULT_STUCK_AFTER_SECONDS, DUPLICATE_ALARM

        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        dead = [f for f in ledger.failures(limit=10**9) if f["state"] == "dead"]

        def named(rows: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "count": len(rows),
                "rows": [
                    f"{r['reference']} (account {r['account_id']}, {r['state']}"
                    + (f", {r['last_error_class']}" if r.get("last_error_class") else "")
                    + ")"
                    for r in rows[:MAX_NAMED]
                ],
            }

        seconds = conf.getfloat("koywe", "stuck_after_seconds", fallback=DEFAULT_STUCK_AFTER_SECONDS)
        stuck_count, stuck_rows = ledger.stuck(idle_seconds=seconds, limit=MAX_NAMED)
        stuck = named(stuck_rows)
        stuck["count"] = stuck_count
        return {
            "dead": named(dead),
            "duplicate_alarms": named([d for d in dead if d.get("last_error_class") == DUPLICATE_ALARM]),
            "mismatch_alarms": named(
                [d for d in dead if d.get("last_error_class") == "ContentMismatchAlarm"]
            ),
            "stuck": stuck,
        }

    # --- where it goes ------------------------------------------------------------------------
    def notify(self, context: dict[str, Any]) -> None:
        alert = self.build_alert(context)
        context["koywe_alert"] = alert.as_dict()
        sent, errors = [], []
        for transport in self._transport_names():
            try:
                if self._send(transport, alert, context):
                    sent.append(transport)
            except Exception as err:
                # the error's class only: a transport's message could quote its connection
                errors.append(f"{transport}: {type(err).__name__}")
        if sent:
            self.log.info("Koywe alert sent (%s): %s", ", ".join(sent), alert.subject)
        if errors:
            raise RuntimeError(f"Koywe alert not sent through {', '.join(errors)}")

    def _transport_names(self) -> list[str]:
        value = self.transports
        if value is None:
            value = _setting("alert_notifier") or DEFAULT_TRANSPORTS
        names = value.split(",") if isinstance(value, str) else list(value)
        return [n.strip() for n in names if n.strip() and n.strip().lower() != "none"]

    def _conn(self, transport: str) -> str:
        return self.conn_id or _setting("alert_conn_id") or _DEFAULT_CONN.get(transport, "")

    def _send(self, transport: str, alert: KoyweAlert, context: dict[str, Any]) -> bool:
        """Send through one transport; ``False`` when it is not configured (logged). Calls the provider
        notifier's ``notify`` directly: our text is never rendered as a Jinja template."""
        if transport == "smtp":
            recipients = self.to if self.to is not None else _setting("alert_to")
            if isinstance(recipients, str):
                recipients = [r.strip() for r in recipients.split(",") if r.strip()]
            if not recipients:
                self.log.info("Koywe alert not mailed: no [koywe] alert_to. %s", alert.subject)
                return False
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            notifier = SmtpNotifier(
                to=list(recipients),
                from_email=self.from_email or _setting("alert_from") or _setting("from_email", "email"),
                subject=alert.subject,
                html_content=alert.html,
                smtp_conn_id=self._conn(transport),
            )
        elif transport == "slack":
            from airflow.providers.slack.notifications.slack import SlackNotifier

            notifier = SlackNotifier(
                slack_conn_id=self._conn(transport),
                text=f"*{alert.subject}*\n```{alert.text}```",
                channel=self.channel or _setting("alert_channel") or DEFAULT_SLACK_CHANNEL,
            )
        elif transport == "slack_webhook":
            from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

            notifier = SlackWebhookNotifier(
                slack_webhook_conn_id=self._conn(transport),
                text=f"*{alert.subject}*\n```{alert.text}```",
            )
        else:
            import importlib

            module, _, name = transport.rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            kwargs = json.loads(_setting("alert_notifier_kwargs") or "{}")
            notifier = cls(**kwargs)
        notifier.notify(context)
        return True


def _setting(key: str, section: str = "koywe") -> str | None:
    from airflow.sdk import conf

    value = conf.get(section, key, fallback=None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _run_check(ti: Any) -> dict[str, Any] | None:
    if ti is None:
        return None
    value = ti.xcom_pull(task_ids="check_run", key="run_check")
    return value if isinstance(value, dict) else None


def _from_report(dag_id: str, run_id: str) -> dict[str, Any] | None:
    """``check_run``'s verdict recomputed from the run's report file in ``[koywe] reports_dir``, when its
    XCom cannot be read."""
    from airflow.sdk import conf

    from koywe_provider.services.ingestion import as_storage_path
    from koywe_provider.services.report import (
        DEFAULT_MAX_INVALID_FRACTION,
        report_stem,
        reports_dir,
        run_counts,
        run_problems,
    )

    path = as_storage_path(reports_dir()) / dag_id / f"{report_stem(run_id)}.json"
    if not path.exists():
        return None
    counts = run_counts(json.loads(path.read_text()))
    threshold = conf.getfloat("koywe", "max_invalid_fraction", fallback=DEFAULT_MAX_INVALID_FRACTION)
    problems = run_problems({}, counts, max_invalid_fraction=threshold, fail_on_stuck=True)
    return {"problems": problems, "counts": counts, "report": str(path)}


def _failed_tasks(ti: Any, dag_id: str, run_id: str) -> list[str]:
    if ti is None:
        return []
    states = ti.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    return sorted(task for task, state in states.items() if state == "failed")


def _run_url(dag_id: str, run_id: str) -> str | None:
    from urllib.parse import quote

    base = _setting("base_url", "api")
    if not base:
        return None
    return f"{base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


__all__ = ["KoyweAlert", "KoyweAlertNotifier"]
