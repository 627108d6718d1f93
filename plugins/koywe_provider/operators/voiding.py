"""Operators of ``koywe_void_documents``: plan (the ledger only), apply (the Koywe calls), check the run.

Thin: each reads its templated arguments, calls :mod:`koywe_provider.services.voiding`, logs one line
per document and returns a small XCom — references, paths, statuses and messages, never payloads,
tokens or credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from koywe_provider.exceptions import KoyweTransientError
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.ledger import KoyweLedgerHook
from koywe_provider.services.issuance import IssuancePolicy
from koywe_provider.services.voiding import (
    VoidItem,
    VoidRequest,
    VoidRequestError,
    apply_voids,
    plan_voids,
    summarize,
)


def _log_items(log: Any, items: Sequence[VoidItem]) -> None:
    for item in items:
        where = f" [{item.country}]" if item.country else ""
        log.info("%s%s %s → %s: %s", item.reference, where, item.action, item.status, item.message)


class KoyweVoidPlanOperator(BaseOperator):
    """Choose the path of every document of a void request and refuse, before any call, what its country
    does not allow (:func:`~koywe_provider.services.voiding.plan_voids`); credit and debit notes are
    built and recorded as ``pending`` ledger rows here. No Koywe call.

    :param references: ledger references (list, or comma/space separated text).
    :param action: ``cancel`` | ``credit_note`` | ``debit_note`` | ``issue_draft`` | ``delete_draft``.
    :param reason: the note's ``references[].description`` (and the attempt's note).
    :param reason_code: the country's reason code (default per country and case).
    :param amount: tax included, in the document's currency (notes; empty = the whole document).
    :param lines: 1-based line numbers, or ``[{"line": n, "quantity": q}]`` (credit notes).
    :param account_id: narrows the references to one Koywe account.
    :param issue_date: the notes' issue date ``YYYY-MM-DD``.
    :param external_originals: originals issued elsewhere ``[{"reference", "account_id", "folio",
        "document"}]``, recorded first so that a note references their folio.
    XCom: one dict per document (:class:`~koywe_provider.services.voiding.VoidItem`). A request that
    cannot be read (unknown action, no reference, a bad amount) fails at once, without retries.
    """

    template_fields: Sequence[str] = (
        "references",
        "action",
        "reason",
        "reason_code",
        "amount",
        "lines",
        "account_id",
        "issue_date",
        "external_originals",
        "koywe_ledger_conn_id",
    )
    ui_color = "#fdecea"

    def __init__(
        self,
        *,
        references: Any,
        action: str,
        issue_date: Any,
        reason: Any = None,
        reason_code: Any = None,
        amount: Any = None,
        lines: Any = None,
        account_id: Any = None,
        external_originals: Any = None,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.references = references
        self.action = action
        self.issue_date = issue_date
        self.reason = reason
        self.reason_code = reason_code
        self.amount = amount
        self.lines = lines
        self.account_id = account_id
        self.external_originals = external_originals
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            request = VoidRequest.parse(
                references=self.references,
                action=self.action,
                issue_date=self.issue_date,
                reason=self.reason,
                reason_code=self.reason_code,
                amount=self.amount,
                lines=self.lines,
                account_id=self.account_id,
                external_originals=self.external_originals,
            )
        except VoidRequestError as err:
            raise AirflowFailException(f"Koywe void request refused (nothing was sent): {err}") from None
        ti = context["ti"]
        items = plan_voids(
            KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger(),
            request,
            request_key=f"{ti.dag_id}/{ti.run_id}",
            run_id=context["run_id"],
        )
        _log_items(self.log, items)
        return [item.as_dict() for item in items]


class KoyweVoidApplyOperator(BaseOperator):
    """Apply the planned documents (:func:`~koywe_provider.services.voiding.apply_voids`): notes through
    the issuing engine (shared rate budget, fence, lookup before any resend), Mexico cancellations and
    Chile draft issues with ``PUT``, draft deletions with ``DELETE``.

    A transient Koywe error (5xx, 429, no answer) fails the try with :class:`KoyweTransientError` after
    every other document was applied, so the task is retried; applying again is safe (a note is found
    again, an applied change is not re-sent). XCom: the items after applying (also under key
    ``results``, pushed even when the try fails).

    :param plan: the plan task's XCom.
    :param reason: recorded with each attempt.
    """

    template_fields: Sequence[str] = ("plan", "reason", "koywe_conn_id", "koywe_ledger_conn_id")
    ui_color = "#fdecea"

    def __init__(
        self,
        *,
        plan: Any,
        reason: Any = None,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.reason = reason
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        ti = context["ti"]
        items = [VoidItem.from_dict(i) for i in (self.plan or [])]
        if not any(item.status == "planned" for item in items):
            self.log.info("Nothing to apply: every document is refused, done or under way already")
            ti.xcom_push(key="results", value=[i.as_dict() for i in items])
            return [i.as_dict() for i in items]
        owner = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/try{ti.try_number}"
        outcome = apply_voids(
            KoyweHook(self.koywe_conn_id),
            KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger(),
            items,
            owner=owner,
            reason=None if self.reason in (None, "") else str(self.reason),
            run_id=context["run_id"],
            task=ti.task_id,
            policy=IssuancePolicy.from_config(),
        )
        results = [item.as_dict() for item in outcome.items]
        ti.xcom_push(key="results", value=results)
        _log_items(self.log, outcome.items)
        if outcome.transient:
            raise KoyweTransientError(
                f"{len(outcome.transient)} document(s) hit a transient Koywe error; applying again is safe: "
                + "; ".join(outcome.transient)
            )
        return results


class KoyweVoidCheckOperator(BaseOperator):
    """The run's last task (``trigger_rule="all_done"``): fail the run, in one line, when any document's
    action was refused or failed, or a task failed; log where every original stands afterwards (issued,
    credited in part and how much, voided) from the ledger.

    Reads the apply task's ``results`` XCom, else the plan's (when apply never ran). XCom (key
    ``run_check`` too): ``{"ok", "problems", "counts", "positions"}``.
    """

    template_fields: Sequence[str] = ("koywe_ledger_conn_id",)

    def __init__(
        self,
        *,
        plan_task_id: str = "plan",
        apply_task_id: str = "apply",
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.apply_task_id = apply_task_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        failed_tasks = {
            t: s for t, s in sorted(states.items()) if t != ti.task_id and s in ("failed", "upstream_failed")
        }
        results = ti.xcom_pull(task_ids=self.apply_task_id, key="results", default=None)
        if results is None:
            results = ti.xcom_pull(task_ids=self.plan_task_id, default=None) or []
        summary = summarize(results)
        problems = list(summary["problems"])
        not_applied = [
            r["reference"]
            for r in results
            if r.get("status") == "planned" and self.apply_task_id in failed_tasks
        ]
        if not_applied:
            problems.append(f"not applied: {', '.join(not_applied)}")
        problems += [f"task {t} {s.replace('_', ' ')}" for t, s in failed_tasks.items()]
        positions = self._positions(results)
        for position in positions:
            self.log.info(
                "%s: %s (total %s, credited %s, in progress %s, debited %s, left to credit %s)",
                position["reference"],
                position["status"],
                position["total"],
                position["credited"],
                position["credit_in_progress"],
                position["debited"],
                position["remaining"],
            )
        result = {
            "ok": not problems,
            "problems": problems,
            "counts": summary["counts"],
            "positions": positions,
        }
        ti.xcom_push(key="run_check", value=result)
        if problems:
            total = len(results)
            failed = sum(1 for r in results if r.get("status") in ("refused", "failed"))
            message = f"Koywe void run failed ({failed} of {total} document(s)): " + "; ".join(problems)
            self.log.error(message)
            raise AirflowFailException(message)
        self.log.info("Koywe void run OK: %s", summary["counts"])
        return result

    def _positions(self, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [r["ledger_id"] for r in results if r.get("ledger_id") is not None]
        if not ids:
            return []
        ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
        keep = ("reference", "status", "total", "credited", "credit_in_progress", "debited", "remaining")
        out = []
        for pk in dict.fromkeys(ids):
            position = ledger.credit_position(pk).as_dict()
            out.append(
                {k: position[k] for k in keep} | {"cancellation_status": position["cancellation_status"]}
            )
        return out
