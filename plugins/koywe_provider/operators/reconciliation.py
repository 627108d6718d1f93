"""Operators of the daily reconciliation with Koywe and of the legal archive's missing files.

Thin: each resolves its templated arguments, calls :mod:`koywe_provider.services.reconciliation` or
:mod:`koywe_provider.services.archive`, and returns a small XCom (counts and the report's path — the
discrepancies themselves go to the report file, the archive's paths and checksums to the ledger).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.ledger import KoyweLedgerHook


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


def _report_dir(report_dir: str | None):
    from koywe_provider.services.ingestion import as_storage_path
    from koywe_provider.services.report import reports_dir

    return as_storage_path(report_dir or reports_dir())


class KoyweReconcileOperator(BaseOperator):
    """Reconcile Koywe's documents of an issue-date window with the ledger, both ways
    (:class:`~koywe_provider.services.reconciliation.Reconciler`).

    ``GET /documents?issue_date_from=…&issue_date_to=…``, 100 per page (``ceil(n / 100)`` calls through the
    shared rate budget, never one per document), compared page by page with the ledger; status news is
    written forwards into the ledger. The report (JSON and Markdown) goes to
    ``<report_dir>/<dag_id>/<run_id>.json|.md`` and the log.

    :param issue_date_from: / :param issue_date_to: the window, ``YYYY-MM-DD`` (both included).
    :param account_id: only this Koywe account (empty: every account the API user sees).
    :param adopt: adopt the documents lost by a crash (a row without a Koywe document whose reference a
        Koywe document with the row's content carries), through the adoption service.
    :param report_dir: default ``[koywe] reports_dir``, else ``$AIRFLOW_HOME/koywe_reports``.
    Settings: ``[koywe] stuck_after_seconds`` (21600), ``[koywe] callbacks_expected`` (``auto``).
    XCom: ``{"counts": {...}, "report": path, "issue_date_from", "issue_date_to", "account_id"}``.
    """

    template_fields: Sequence[str] = (
        "issue_date_from",
        "issue_date_to",
        "account_id",
        "adopt",
        "report_dir",
        "koywe_conn_id",
        "koywe_ledger_conn_id",
    )
    ui_color = "#eef0ff"

    def __init__(
        self,
        *,
        issue_date_from: str,
        issue_date_to: str,
        account_id: str | None = None,
        adopt: bool | str = False,
        report_dir: str | None = None,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.issue_date_from = issue_date_from
        self.issue_date_to = issue_date_to
        self.account_id = account_id
        self.adopt = adopt
        self.report_dir = report_dir
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from koywe_provider.services.reconciliation import (
            Reconciler,
            ReconciliationPolicy,
            build_report,
            render_markdown,
            write_report,
        )

        ti = context["ti"]
        reconciler = Reconciler(
            KoyweHook(self.koywe_conn_id),
            KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger(),
            policy=ReconciliationPolicy.from_config(),
            owner=f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/try{ti.try_number}",
            run_id=context["run_id"],
            task=ti.task_id,
        )
        result = reconciler.run(
            str(self.issue_date_from),
            str(self.issue_date_to),
            account_id=None if _blank(self.account_id) else str(self.account_id),
            adopt=_to_bool(self.adopt),
        )
        report = build_report(result, dag_id=ti.dag_id, run_id=context["run_id"])
        json_path, _ = write_report(report, _report_dir(self.report_dir))
        self.log.info("Koywe reconciliation (%s):\n%s", json_path, render_markdown(report))
        return {
            "counts": result.counts(),
            "report": str(json_path),
            "issue_date_from": result.issue_date_from,
            "issue_date_to": result.issue_date_to,
            "account_id": result.account_id,
        }


class KoyweArchiveMissingOperator(BaseOperator):
    """Fetch the legal archive's missing files of an issue-date window
    (:func:`~koywe_provider.services.archive.fetch_missing`).

    One ``GET /documents/{id}`` per document that lacks its XML or PDF and was never fetched, through the
    shared rate budget, at most ``[koywe] archive_fetch_max_per_run`` (200) per run; files written under
    ``[koywe] archive_root`` and recorded in the ledger with their SHA-256. Does nothing when
    ``[koywe] archive_enabled`` is false or ``enabled`` is false. When ``summary`` (the reconcile task's
    XCom) names a report, the archive's counts are added to it.

    XCom: :class:`~koywe_provider.services.archive.FetchOutcome` as a dict (at most 20 errors).
    """

    template_fields: Sequence[str] = (
        "issue_date_from",
        "issue_date_to",
        "account_id",
        "enabled",
        "summary",
        "koywe_conn_id",
        "koywe_ledger_conn_id",
    )
    ui_color = "#f3ecdf"

    def __init__(
        self,
        *,
        issue_date_from: str,
        issue_date_to: str,
        account_id: str | None = None,
        enabled: bool | str = True,
        summary: Any = None,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.issue_date_from = issue_date_from
        self.issue_date_to = issue_date_to
        self.account_id = account_id
        self.enabled = enabled
        self.summary = summary
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from koywe_provider.services.archive import ArchiveSettings, DocumentArchive, fetch_missing

        settings = ArchiveSettings.from_config()
        if not (settings.enabled and _to_bool(self.enabled)):
            self.log.info("The legal archive is off ([koywe] archive_enabled or the archive_missing param)")
            return {}
        archive = DocumentArchive(
            KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger(), settings.root_path()
        )
        outcome = fetch_missing(
            KoyweHook(self.koywe_conn_id),
            archive,
            issue_date_from=str(self.issue_date_from),
            issue_date_to=str(self.issue_date_to),
            account_id=None if _blank(self.account_id) else str(self.account_id),
            max_documents=settings.fetch_max_per_run,
        ).as_dict()
        outcome["errors"] = outcome["errors"][:20]
        outcome["root"] = str(settings.root_path())
        self.log.info("Legal archive: %s", outcome)
        self._add_to_report(outcome)
        return outcome

    def _add_to_report(self, outcome: dict[str, Any]) -> None:
        import json

        from koywe_provider.services.ingestion import as_storage_path
        from koywe_provider.services.reconciliation import write_report

        report_path = self.summary.get("report") if isinstance(self.summary, dict) else None
        if not report_path:
            return
        path = as_storage_path(str(report_path))
        report = json.loads(path.read_text())
        report["archive"] = outcome
        write_report(report, path.parent.parent)


class KoyweReconciliationEventOperator(BaseOperator):
    """Emit the Asset event of its ``outlets`` (``koywe_reconciliation``) with the reconciliation's counts
    in ``extra`` — differences or not, so a data team's DAG can react to either. Skipped when no
    reconciliation was made.

    :param summary: the reconcile task's XCom. :param archive: the archive task's XCom.
    ``extra``: ``run_id``, ``issue_date_from``, ``issue_date_to``, ``account_id``, every count of
    :meth:`~koywe_provider.services.reconciliation.ReconciliationResult.counts`, ``archived`` (documents,
    files and bytes fetched into the archive, ``still_lacking`` left for later) and ``report``.
    """

    template_fields: Sequence[str] = ("summary", "archive")

    def __init__(self, *, summary: Any = None, archive: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.summary = summary
        self.archive = archive

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        if not isinstance(self.summary, dict) or not self.summary.get("counts"):
            raise AirflowSkipException("No reconciliation was made: no Asset event")
        archive = self.archive if isinstance(self.archive, dict) else {}
        extra = {
            "run_id": context["run_id"],
            **{k: self.summary.get(k) for k in ("issue_date_from", "issue_date_to", "account_id")},
            **self.summary["counts"],
            "archived": {
                "documents": archive.get("archived", 0),
                "files": archive.get("files", 0),
                "bytes": archive.get("bytes", 0),
                "still_lacking": archive.get("remaining", 0) + archive.get("failed", 0),
            },
            "report": self.summary.get("report"),
        }
        for asset in self.outlets:
            context["outlet_events"][asset].extra = extra
        self.log.info("Asset event with %s", extra)
        return extra


class KoyweReconciliationCheckOperator(BaseOperator):
    """The run's last task (``trigger_rule="all_done"``): fail the run, once and in one line naming the
    differences and the report, unless Koywe and the ledger agree (or every difference was adopted) and
    every other task succeeded.

    :param summary: the reconcile task's XCom.
    XCom (key ``run_check``, and the return value when the run is OK): ``{"ok", "problems", "counts",
    "report"}``.
    """

    template_fields: Sequence[str] = ("summary",)

    def __init__(self, *, summary: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.summary = summary

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from koywe_provider.services.reconciliation import reconciliation_problems

        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        states = {task: state for task, state in states.items() if task != ti.task_id}
        summary = self.summary if isinstance(self.summary, dict) else None
        counts = summary.get("counts") if summary else None
        problems = reconciliation_problems(states, counts)
        report = (summary or {}).get("report") or "none written"
        result = {"ok": not problems, "problems": problems, "counts": counts or {}, "report": report}
        ti.xcom_push(key="run_check", value=result)
        if problems:
            message = f"Koywe reconciliation failed: {'; '.join(problems)} (report: {report})"
            self.log.error(message)
            raise AirflowFailException(message)
        self.log.info("Koywe and the ledger agree (report: %s)", report)
        return result
