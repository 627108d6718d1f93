"""Operators for a document's life after issuance: status changes, batch tax-bureau polling, webhooks.

Thin: each resolves its templated arguments, calls :class:`~koywe_provider.hooks.koywe.KoyweHook` and
:mod:`koywe_provider.status` / :mod:`koywe_provider.ledger.status`, and returns a small XCom (ids and
counts — never payloads, tokens or credentials).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseHook, BaseOperator, Context

from koywe_provider.exceptions import KoyweError, KoyweNotFoundError, KoyweRejectedError
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.ledger import KoyweLedgerHook
from koywe_provider.ledger.models import AttemptOutcome
from koywe_provider.ledger.status import find_by_koywe_document_id, record_status_change
from koywe_provider.status import (
    ACTIONS,
    DocumentStatusPreconditionError,
    TaxBureauPoller,
    plan_status_change,
    status_report,
)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


class KoyweUpdateDocumentStatusOperator(BaseOperator):
    """Change a document's ``document_status`` with ``PUT /documents/{id}`` (seed ``004_…``).

    ``action="issue_draft"`` sends ``{"document_status": "1"}`` (Chile draft → issued);
    ``action="cancel"`` sends ``{"document_status": "2"}`` (Mexico invoice, only from 1).
    The document is named by ``document_id`` (Koywe's id) or by ``reference`` (the internal transaction
    id, looked up with ``GET /documents?reference_code=5&reference_number=…``, optionally within
    ``account_id``). Preconditions (country, current status) are checked on Koywe's current document
    before the ``PUT``; a change already applied is success without a call. The ledger row holding the
    document (if any) gets the new statuses and a ``koywe_attempts`` row (kind ``status_update``,
    ``reason`` in its ``error`` column).

    XCom: ``{"document_id", "action", "document_status", "changed": bool, "ledger_id"}``.
    Raises :class:`~koywe_provider.status.DocumentStatusPreconditionError` (wrong country or status, no
    or several documents for the reference; nothing sent) or :class:`KoyweRejectedError` (Koywe refused).
    """

    template_fields: Sequence[str] = (
        "document_id",
        "reference",
        "account_id",
        "action",
        "reason",
        "koywe_conn_id",
        "koywe_ledger_conn_id",
    )
    ui_color = "#fff4e0"

    def __init__(
        self,
        *,
        action: str,
        document_id: str | int | None = None,
        reference: str | None = None,
        account_id: str | int | None = None,
        reason: str | None = None,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.action = action
        self.document_id = document_id
        self.reference = reference
        self.account_id = account_id
        self.reason = reason
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def _resolve(self, hook: KoyweHook) -> dict:
        if not _blank(self.document_id):
            try:
                return hook.get_document(str(self.document_id).strip())
            except KoyweNotFoundError as err:
                raise DocumentStatusPreconditionError(
                    f"Koywe has no document {self.document_id}; check the id (nothing was changed)."
                ) from err
        if _blank(self.reference):
            raise DocumentStatusPreconditionError(
                "Give a Koywe document_id or an internal reference (nothing was sent to Koywe)."
            )
        account = None if _blank(self.account_id) else str(self.account_id).strip()
        found = hook.find_documents_by_reference(str(self.reference).strip(), account_id=account)
        if len(found) != 1:
            ids = [d.get("document_id") for d in found]
            raise DocumentStatusPreconditionError(
                f"Reference {self.reference!r} matches {len(found)} Koywe document(s) {ids}: "
                + ("nothing to change." if not found else "a duplicate; pass the document_id to choose.")
            )
        return found[0]

    def execute(self, context: Context) -> dict[str, Any]:
        if self.action not in ACTIONS:
            raise DocumentStatusPreconditionError(
                f"Unknown action {self.action!r}: use one of {sorted(ACTIONS)} (nothing was sent to Koywe)."
            )
        hook = KoyweHook(self.koywe_conn_id)
        document = self._resolve(hook)
        plan = plan_status_change(document, self.action)
        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        row = find_by_koywe_document_id(ledger, plan.document_id)
        if row is None and not _blank(self.reference):
            account = None if _blank(self.account_id) else str(self.account_id).strip()
            row = _row_by_reference(ledger, str(self.reference).strip(), account)
        ti = context["ti"]
        note = None if _blank(self.reason) else f"reason: {self.reason}"
        if plan.already_applied:
            self.log.info(
                "Koywe document %s already has document_status %s; nothing to send",
                plan.document_id,
                plan.target,
            )
            answer, outcome, http_status, duration_ms = document, AttemptOutcome.ALREADY_APPLIED, None, 0
        else:
            self.log.info(
                "PUT /documents/%s document_status %s -> %s (%s)%s",
                plan.document_id,
                plan.current,
                plan.target,
                self.action,
                f"; {note}" if note else "",
            )
            started = time.monotonic()
            try:
                answer = hook.update_document_status(plan.document_id, plan.target)
            except KoyweRejectedError as err:
                if row is not None:
                    record_status_change(
                        ledger,
                        row["id"],
                        status_report(document),
                        outcome="rejected",
                        http_status=err.status_code,
                        duration_ms=int((time.monotonic() - started) * 1000),
                        note=f"{note + '; ' if note else ''}{err}",
                        run_id=context["run_id"],
                        task=ti.task_id,
                    )
                raise
            http_status, duration_ms = 200, int((time.monotonic() - started) * 1000)
            outcome = AttemptOutcome.ISSUED if self.action == "issue_draft" else AttemptOutcome.CANCELLED
        report = status_report(answer if isinstance(answer, dict) and answer.get("document_id") else document)
        if report.document_status is None or (
            not plan.already_applied and report.document_status < plan.target
        ):
            # Koywe's PUT answer is the document; trust the accepted change when it omits the status.
            report = type(report)(
                koywe_document_id=plan.document_id,
                document_status=plan.target,
                taxbureau_sending_status=report.taxbureau_sending_status,
                taxbureau_validation_status=report.taxbureau_validation_status,
                taxbureau_validation_comments=report.taxbureau_validation_comments,
            )
        if row is not None:
            record_status_change(
                ledger,
                row["id"],
                report,
                outcome=outcome,
                http_status=http_status,
                duration_ms=duration_ms,
                note=note,
                run_id=context["run_id"],
                task=ti.task_id,
            )
        else:
            self.log.warning(
                "Koywe document %s is not in the ledger; only Koywe was changed", plan.document_id
            )
        return {
            "document_id": plan.document_id,
            "action": self.action,
            "document_status": report.document_status,
            "changed": not plan.already_applied,
            "ledger_id": None if row is None else row["id"],
        }


def _row_by_reference(ledger, reference: str, account_id: str | None) -> dict | None:
    if account_id is not None:
        return ledger.get_by_reference(account_id, reference)
    import sqlalchemy as sa

    from koywe_provider.ledger.models import Document

    docs = Document.__table__
    with ledger.engine.execution_options(koywe_sqlite_begin="DEFERRED").connect() as conn:
        rows = conn.execute(sa.select(docs).where(docs.c.reference == reference).limit(2)).all()
    return dict(rows[0]._mapping) if len(rows) == 1 else None


class KoyweTaxBureauPollOperator(BaseOperator):
    """Update the ledger's tax-bureau statuses from Koywe in batches (:class:`~koywe_provider.status.TaxBureauPoller`).

    ``GET /documents`` over the issue-date window of the documents still waiting, 100 per page: one call
    per hundred documents. Documents rejected by the tax bureau become ``rejected`` with the bureau's
    comments. Emits an event on each outlet Asset when rows changed.
    XCom: :class:`~koywe_provider.status.PollOutcome` as a dict (counts and the window).
    """

    template_fields: Sequence[str] = (
        "issue_date_from",
        "issue_date_to",
        "dry_run",
        "koywe_conn_id",
        "koywe_ledger_conn_id",
    )
    ui_color = "#eaf7ea"

    def __init__(
        self,
        *,
        issue_date_from: str | None = None,
        issue_date_to: str | None = None,
        dry_run: bool | str = False,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.issue_date_from = issue_date_from
        self.issue_date_to = issue_date_to
        self.dry_run = dry_run
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        if str(self.dry_run).strip().lower() in ("1", "true", "yes", "on"):
            self.log.info("Dry run: not polling Koywe")
            return {}
        poller = TaxBureauPoller(
            KoyweHook(self.koywe_conn_id), KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        )
        outcome = poller.poll(
            issue_date_from=None if _blank(self.issue_date_from) else str(self.issue_date_from),
            issue_date_to=None if _blank(self.issue_date_to) else str(self.issue_date_to),
        ).as_dict()
        self.log.info("Tax-bureau polling: %s", outcome)
        if outcome["changed"]:
            for asset in self.outlets:
                context["outlet_events"][asset].extra = {
                    "source": "polling",
                    "run_id": context["run_id"],
                    **{k: outcome[k] for k in ("changed", "accepted", "rejected")},
                }
        return outcome


class KoyweWebhookSubscriptionOperator(BaseOperator):
    """Subscribe an account to Koywe's ``DOCUMENT.STATUSUPDATE`` callbacks (``POST /webhook_subscriptions``).

    The callback's basic-auth credentials come from the Airflow connection ``callback_conn_id`` (login /
    password; the same connection the callback endpoint checks), so they never appear in a template,
    a log or an XCom. XCom: Koywe's answer without the password.
    """

    template_fields: Sequence[str] = (
        "account_id",
        "callback_url",
        "event_id",
        "koywe_conn_id",
        "callback_conn_id",
    )

    def __init__(
        self,
        *,
        account_id: str | int,
        callback_url: str,
        event_id: str = "DOCUMENT.STATUSUPDATE",
        callback_conn_id: str = "koywe_callbacks",
        koywe_conn_id: str = KoyweHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.account_id = account_id
        self.callback_url = callback_url
        self.event_id = event_id
        self.callback_conn_id = callback_conn_id
        self.koywe_conn_id = koywe_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        conn = BaseHook.get_connection(self.callback_conn_id)
        if not conn.login or not conn.password:
            raise KoyweError(
                f"Connection {self.callback_conn_id!r} needs a login and a password for Koywe's callbacks"
            )
        answer = KoyweHook(self.koywe_conn_id).create_webhook_subscription(
            self.account_id, self.callback_url, conn.login, conn.password, self.event_id
        )
        self.log.info("Subscribed account %s to %s at %s", self.account_id, self.event_id, self.callback_url)
        return answer
