"""Operators for a document's life after issuance: status changes, batch tax-bureau polling, webhooks.

Thin: each resolves its templated arguments, calls a service (:mod:`koywe_provider.services.status_changes`,
:mod:`koywe_provider.services.taxbureau`) or the hook, and returns a small XCom (ids and counts — never
payloads, tokens or credentials).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseHook, BaseOperator, Context

from koywe_provider.exceptions import KoyweError
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.ledger import KoyweLedgerHook
from koywe_provider.services.status_changes import StatusChanger
from koywe_provider.services.taxbureau import TaxBureauPoller


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
    Raises :class:`~koywe_provider.services.status_changes.DocumentStatusPreconditionError` (wrong country or status, no
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

    def execute(self, context: Context) -> dict[str, Any]:
        changer = StatusChanger(
            KoyweHook(self.koywe_conn_id),
            KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger(),
            run_id=context["run_id"],
            task=context["ti"].task_id,
        )
        result = changer.change(
            self.action,
            document_id=self.document_id,
            reference=self.reference,
            account_id=self.account_id,
            reason=self.reason,
        )
        self.log.info(
            "%s of Koywe document %s: Koywe answered document_status %s%s",
            self.action,
            result.document_id,
            result.document_status,
            "" if result.changed else " (already applied; nothing sent)",
        )
        if result.ledger_id is None:
            self.log.warning(
                "Koywe document %s is not in the ledger; only Koywe was changed", result.document_id
            )
        return result.as_dict()


class KoyweTaxBureauPollOperator(BaseOperator):
    """Update the ledger's tax-bureau statuses from Koywe in batches (:class:`~koywe_provider.services.taxbureau.TaxBureauPoller`).

    ``GET /documents`` over the issue-date window of the documents still waiting, 100 per page: one call
    per hundred documents. Documents rejected by the tax bureau become ``rejected`` with the bureau's
    comments. Emits an event on each outlet Asset when rows changed.
    XCom: :class:`~koywe_provider.services.taxbureau.PollOutcome` as a dict (counts and the window).
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
