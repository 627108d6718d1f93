"""Operators that onboard companies to Koywe (``POST /accounts``, ``GET /accounts/{id}``, seed ``003_…``).

Thin: the rules live in :mod:`koywe_provider.models.accounts` (validation),
:mod:`koywe_provider.services.provisioning` (requests, secret references, create/confirm) and
:mod:`koywe_provider.ledger.accounts` (``koywe_accounts``). XComs hold ledger ids, states, Koywe
account ids and error texts — never a password, a certificate or a token. Secrets are resolved in
``execute`` from references and masked at once; no templated field ever holds one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.ledger import KoyweLedgerHook
from koywe_provider.ledger.accounts import AccountLedger, AccountState

DEFAULT_SECRETS_DIR_ENV = "KOYWE_SECRETS_DIR"


def default_secrets_dir() -> str:
    """``$KOYWE_SECRETS_DIR``, else ``$AIRFLOW_HOME/secrets/koywe``."""
    if os.environ.get(DEFAULT_SECRETS_DIR_ENV):
        return os.environ[DEFAULT_SECRETS_DIR_ENV]
    return str(Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "secrets" / "koywe")


def _owner(context: Context) -> str:
    ti = context["ti"]
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/try{ti.try_number}"


def _accounts(conn_id: str) -> AccountLedger:
    return AccountLedger.of(KoyweLedgerHook(conn_id).get_ledger())


class KoyweValidateAccountsOperator(BaseOperator):
    """Validate provisioning requests before any API call and record them in ``koywe_accounts``.

    ``mode``: ``"form"`` builds one request from the DAG's Params form
    (:func:`~koywe_provider.services.provisioning.request_from_form`); ``"batch"`` reads every ``*.json``/``*.jsonl``
    file of ``inbox`` (an ``ObjectStoragePath`` folder or file, or a path relative to ``base_dir``);
    ``"requests"`` takes ``requests`` (a list of provisioning request objects or its JSON). Each
    request's secret references are resolved (and masked) to check certificates and passwords, then
    dropped. See :mod:`koywe_provider.services.provisioning` for the request format.

    XCom ``return_value``: the ``koywe_accounts`` ids to create (``[pk…]``, for ``.expand``);
    XCom ``summary``: ``{"requests": n, "to_create": [pk…], "invalid": [{"request", "source",
    "errors": [[field, message]…]}], "existing": [{"request", "state", "koywe_account_id"}]}``.
    """

    template_fields: Sequence[str] = ("mode", "requests", "inbox", "secrets_dir", "koywe_ledger_conn_id")

    def __init__(
        self,
        *,
        mode: str = "requests",
        requests: Any = None,
        inbox: str | None = None,
        base_dir: str | None = None,
        secrets_dir: str | None = None,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mode = mode
        self.requests = requests
        self.inbox = inbox
        self.base_dir = base_dir
        self.secrets_dir = secrets_dir
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def _read(self, context: Context) -> list:
        from koywe_provider.services.ingestion import as_storage_path
        from koywe_provider.services.provisioning import parse_request, read_requests, request_from_form

        if self.mode == "form":
            obj = request_from_form(dict(context["params"]))
            return [parse_request(obj, source="form", default_id=f"form:{context['run_id']}")]
        if self.mode == "batch" or (self.mode == "requests" and self.inbox and not self.requests):
            if not self.inbox:
                raise ValueError("batch mode needs an inbox (folder or file of provisioning requests)")
            inbox = as_storage_path(self.inbox, base_dir=Path(self.base_dir) if self.base_dir else None)
            return list(read_requests(inbox))
        items = self.requests
        if isinstance(items, str):
            items = json.loads(items) if items.strip() else []
        if isinstance(items, dict):
            items = [items]
        return [
            parse_request(obj, source="form", default_id="form" if len(items) == 1 else f"form#{n}")
            for n, obj in enumerate(items or [], start=1)
        ]

    def execute(self, context: Context) -> list[int]:
        from koywe_provider.services.provisioning import SecretResolver, validate_requests

        requests = self._read(context)
        summary = validate_requests(
            requests,
            _accounts(self.koywe_ledger_conn_id),
            SecretResolver(self.secrets_dir or default_secrets_dir()),
            run_id=context["run_id"],
            log=self.log,
        )
        for item in summary["invalid"]:
            self.log.warning(
                "Request %s is invalid (not sent to Koywe):\n  %s",
                item["request"],
                "\n  ".join(f"{f}: {m}" for f, m in item["errors"]),
            )
        self.log.info(
            "%d request(s): %d to create, %d invalid, %d already known",
            summary["requests"],
            len(summary["to_create"]),
            len(summary["invalid"]),
            len(summary["existing"]),
        )
        context["ti"].xcom_push(key="summary", value=summary)
        return summary["to_create"]


class KoyweCreateAccountOperator(BaseOperator):
    """Create one company's Koywe account (``POST /accounts``), then confirm it (``GET /accounts/{id}``).

    :param account_pk: the ``koywe_accounts`` row (from :class:`KoyweValidateAccountsOperator`), in
        state ``validated``; any other state is not sent (a company is never created twice).
    :param secrets_dir: folder of ``file:`` secret references (default ``$KOYWE_SECRETS_DIR`` or
        ``$AIRFLOW_HOME/secrets/koywe``).
    :param confirm: also ``GET /accounts/{id}`` and mark the row ``confirmed`` (default true).

    XCom: ``{"id", "state", "koywe_account_id", "sent", "error"}``. Raises :class:`AirflowFailException`
    (no retry) when Koywe refused the account (``failed``) or the outcome is unknown (``unknown``: a
    person checks Koywe); transient errors (5xx, 429, connection refused) are re-raised for Airflow's
    retries with the row back in ``validated``.
    """

    template_fields: Sequence[str] = ("account_pk", "koywe_conn_id", "koywe_ledger_conn_id", "secrets_dir")
    ui_color = "#e8ffe8"

    def __init__(
        self,
        *,
        account_pk: int | str,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        secrets_dir: str | None = None,
        confirm: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.account_pk = account_pk
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id
        self.secrets_dir = secrets_dir
        self.confirm = confirm

    def execute(self, context: Context) -> dict[str, Any]:
        from koywe_provider.services.provisioning import SecretResolver, confirm_account, create_account

        accounts = _accounts(self.koywe_ledger_conn_id)
        hook = KoyweHook(self.koywe_conn_id)
        pk = int(self.account_pk)
        result = create_account(
            pk,
            accounts,
            hook,
            SecretResolver(self.secrets_dir or default_secrets_dir()),
            owner=_owner(context),
            log=self.log,
        )
        if result.state == AccountState.CREATED and self.confirm:
            result = confirm_account(pk, accounts, hook, log=self.log)
        self.log.info("Account row %s: %s (Koywe account %s)", pk, result.state, result.koywe_account_id)
        if result.state == AccountState.FAILED:
            raise AirflowFailException(f"Account row {pk} failed: {result.error}")
        if result.state == AccountState.UNKNOWN:
            raise AirflowFailException(
                f"Account row {pk}: the outcome of POST /accounts is unknown ({result.error}). Koywe has no "
                "account search: check Koywe's web app and resolve the row by hand; it is not retried."
            )
        return result.as_dict()


class KoyweConfirmAccountOperator(BaseOperator):
    """Confirm a created account with ``GET /accounts/{account_id}`` (country and tax id must agree).

    XCom: ``{"id", "state", "koywe_account_id", "sent": false, "error"}``; rows not ``created`` are skipped.
    """

    template_fields: Sequence[str] = ("account_pk", "koywe_conn_id", "koywe_ledger_conn_id")

    def __init__(
        self,
        *,
        account_pk: int | str,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.account_pk = account_pk
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from koywe_provider.services.provisioning import confirm_account

        result = confirm_account(
            int(self.account_pk),
            _accounts(self.koywe_ledger_conn_id),
            KoyweHook(self.koywe_conn_id),
            log=self.log,
        )
        return result.as_dict()


class KoyweAccountReportOperator(BaseOperator):
    """Write and log the provisioning report: every request, its state, Koywe id and every error.

    :param validation: the validate task's XCom. :param report_dir: folder for
        ``<dag_id>/<run_id>.json|.md`` (default ``$AIRFLOW_HOME/koywe_reports``).
    XCom: ``{"states": {...}, "needs_a_person": [request…], "report": path}``.
    """

    template_fields: Sequence[str] = ("validation", "report_dir", "koywe_ledger_conn_id")

    def __init__(
        self,
        *,
        validation: Any = None,
        report_dir: str | None = None,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.validation = validation
        self.report_dir = report_dir
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from koywe_provider.services.ingestion import as_storage_path
        from koywe_provider.services.provisioning import build_account_report, render_account_report

        report = build_account_report(
            _accounts(self.koywe_ledger_conn_id),
            run_id=context["run_id"],
            validation=self.validation if isinstance(self.validation, dict) else None,
        )
        report["dag_id"] = context["ti"].dag_id
        from koywe_provider.services.report import reports_dir

        folder = self.report_dir or reports_dir()
        json_path = _write(report, as_storage_path(folder), render_account_report(report))
        self.log.info("Koywe account provisioning report (%s):\n%s", json_path, render_account_report(report))
        return {
            "states": report["states"],
            "needs_a_person": report["needs_a_person"],
            "report": str(json_path),
        }


def _write(report: dict[str, Any], folder, markdown: str):
    """``<folder>/<dag_id>/<run_id>.json`` and ``.md`` (any ``ObjectStoragePath``); returns the JSON path."""
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in report["run_id"])
    target = folder / report["dag_id"]
    target.mkdir(parents=True, exist_ok=True)
    json_path = target / f"{safe_run}.json"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    (target / f"{safe_run}.md").write_text(markdown + "\n")
    return json_path
