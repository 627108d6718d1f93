"""Daily reconciliation of Koywe's documents with the issuance ledger, and the legal archive's missing files.
Wiring only: the logic lives in koywe_provider."""

from __future__ import annotations

import os

from airflow.sdk import DAG, CronTriggerTimetable, Param

from koywe_provider.assets import KOYWE_RECONCILIATION
from koywe_provider.notifications import KoyweAlertNotifier
from koywe_provider.operators.koywe import KoyweAuthOperator
from koywe_provider.operators.reconciliation import (
    KoyweArchiveMissingOperator,
    KoyweReconcileOperator,
    KoyweReconciliationCheckOperator,
    KoyweReconciliationEventOperator,
)
from koywe_provider.retry_policies import koywe_default_args

DATE_FROM = "{{ params.issue_date_from or macros.ds_add(ds, -1) }}"
DATE_TO = "{{ params.issue_date_to or params.issue_date_from or macros.ds_add(ds, -1) }}"
ACCOUNT = "{{ params.account_id or '' }}"

with DAG(
    dag_id="koywe_reconciliation",
    description="Koywe's documents of a day against the ledger, both ways; the legal archive's missing files",
    doc_md="""
### Koywe reconciliation
Every day for the day before (by hand: any issue-date window, one account, `adopt`):

1. **authenticate** once (pool `koywe_auth`);
2. **reconcile**: list Koywe's documents of the window, 100 per page (one `GET /documents` per hundred,
   never one per document) and compare them with the ledger, both ways: documents at Koywe carrying an
   internal reference that the ledger lacks (out of band, or lost by a crash: `adopt` adopts those whose
   content matches the row), ledger documents Koywe does not have, several Koywe documents for one
   reference, statuses that differ (written forwards into the ledger), rows stuck `unknown`/`in_flight`/
   `not_sent`/waiting for the tax bureau longer than `[koywe] stuck_after_seconds` (6 h), and status news
   polling found that no callback brought. Report: `$AIRFLOW_HOME/koywe_reports/koywe_reconciliation/`;
3. **archive_missing**: the window's documents lacking their XML or PDF in the legal archive are fetched
   (`GET /documents/{id}`, once each, at most `[koywe] archive_fetch_max_per_run`);
4. **publish** the `koywe_reconciliation` asset event (counts in `extra`), differences or not;
5. **check_run** fails the run, in one line naming the differences and the report, unless there are none.
""",
    # A cron *trigger* without start_date: unpausing creates no run for a past tick nobody asked for.
    schedule=CronTriggerTimetable(os.environ.get("KOYWE_RECONCILIATION_CRON", "30 7 * * *"), timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["koywe", "invoicing", "reconciliation"],
    default_args=koywe_default_args(),
    on_failure_callback=KoyweAlertNotifier(),
    params={
        "issue_date_from": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Issue date from",
            description="First issue date of the window; empty = the day before the run's date.",
        ),
        "issue_date_to": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Issue date to",
            description="Last issue date of the window (included); empty = the first one.",
        ),
        "account_id": Param(
            None,
            type=["null", "string"],
            title="Koywe account",
            description="Only this account; empty = all.",
        ),
        "adopt": Param(
            False,
            type="boolean",
            title="Adopt lost documents",
            description="Record in the ledger the Koywe documents whose row lost them (content must match).",
        ),
        "archive_missing": Param(
            True,
            type="boolean",
            title="Fetch missing archive files",
            description="GET the XML/PDF of the window's documents that lack them (once each, capped).",
        ),
    },
) as dag:
    authenticate = KoyweAuthOperator(task_id="authenticate", pool="koywe_auth")
    reconcile = KoyweReconcileOperator(
        task_id="reconcile",
        pool="koywe_api",
        issue_date_from=DATE_FROM,
        issue_date_to=DATE_TO,
        account_id=ACCOUNT,
        adopt="{{ params.adopt }}",
    )
    archive_missing = KoyweArchiveMissingOperator(
        task_id="archive_missing",
        pool="koywe_api",
        issue_date_from=DATE_FROM,
        issue_date_to=DATE_TO,
        account_id=ACCOUNT,
        enabled="{{ params.archive_missing }}",
        summary=reconcile.output,
    )
    publish = KoyweReconciliationEventOperator(
        task_id="publish",
        summary=reconcile.output,
        archive=archive_missing.output,
        outlets=[KOYWE_RECONCILIATION],
        trigger_rule="all_done",
    )
    check_run = KoyweReconciliationCheckOperator(
        task_id="check_run", summary=reconcile.output, trigger_rule="all_done"
    )
    authenticate >> reconcile >> archive_missing >> publish >> check_run
