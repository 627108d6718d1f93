"""Retries of failed Koywe documents, with no duplicate and no loss. Wiring only: logic in koywe_provider."""

from __future__ import annotations

import os

from airflow.sdk import DAG, CronTriggerTimetable, Param

from koywe_provider.assets import KOYWE_ISSUED_DOCUMENTS
from koywe_provider.notifications import KoyweAlertNotifier
from koywe_provider.operators.corrections import KoyweCorrectDocumentOperator
from koywe_provider.operators.koywe import (
    KoyweAuthOperator,
    KoyweIssuanceReportOperator,
    KoyweIssuedEventOperator,
    KoyweIssueDocumentsOperator,
    KoywePlanBatchesOperator,
    KoyweRunCheckOperator,
)
from koywe_provider.retry_policies import koywe_default_args
from koywe_provider.services.issuance import RETRY_STATES

with DAG(
    dag_id="koywe_retry_failed_documents",
    description="Look up and re-issue retryable, unknown and abandoned Koywe documents, exactly once",
    doc_md="""
### Koywe: retry failed documents
Every 30 minutes, picks the ledger rows that are **due** (`next_attempt_at` passed) in state
`retryable` (429/5xx), `unknown` (timeout or dropped connection after the POST) or `in_flight` whose
lease expired (a task that crashed mid-batch):

1. **authenticate** once (pool `koywe_auth`; the cached token is reused when valid);
2. **plan_batches** splits the due rows into id ranges;
3. **issue** each range (mapped, pool `koywe_api`): a row that may already exist at Koywe is first
   looked up by `reference_code=5` + its reference — found: adopted as `issued`, no POST; several
   found: **duplicate alarm** (row `dead`, a person decides); not found: POSTed again. Backoff per
   document 1, 2, 4 … min (6 h cap); after 10 POSTs a still failing row is `dead`;
4. **report**: retried, adopted, dead and duplicate-alarm counts, and every dead row with its last error;
5. **check_run** fails the run on dead rows, duplicate alarms and rows *stuck* (unchanged for more than
   `[koywe] stuck_after_seconds`, default 6 h), and writes the counts into the run's note.

**Manual trigger** (Params): `references` — only these internal references, due or not;
`requeue_rejected` — first put `rejected` and `dead` rows (of those references, or all) back to
`pending`; **`fix_reference` + `fix_document`** — correct one document first (task **apply_fix**):
the corrected `POST /documents` body replaces the payload of that `invalid`, `rejected` or unsent
`pending` row (validated exactly as an inbox line; a `rejected` row is re-issued under a new Koywe
reference; the old payload's hash stays in the row's history), then it is issued in this run; a refused
correction fails the run at once naming the field, and nothing changes (`fix_account_id` when several
accounts use the reference). The same from a shell: `airflow koywe fix --reference R
--file fixed.json`; `… show --reference R` prints a row and its attempts. `dry_run` — validate and log
what would be retried, send and change nothing.

Settings (Airflow config `[koywe]`): `lease_seconds` (900), `retry_base_seconds` (60),
`retry_max_seconds` (21600), `max_attempts` (10). Safe next to the daily DAG: rows are claimed
atomically, so no document is sent twice.
""",
    # A cron *trigger* without start_date: unpausing creates no run for a past tick nobody asked for.
    schedule=CronTriggerTimetable(
        os.environ.get("KOYWE_RETRY_FAILED_DOCUMENTS_CRON", "*/30 * * * *"), timezone="UTC"
    ),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["koywe", "invoicing", "retries"],
    default_args=koywe_default_args(),
    on_failure_callback=KoyweAlertNotifier(),
    params={
        "references": Param(
            [],
            type="array",
            items={"type": "string"},
            title="References",
            description="Only these internal references (one per line), due or not; empty = every due row.",
        ),
        "requeue_rejected": Param(
            False,
            type="boolean",
            title="Re-queue rejected",
            description="Put rejected and dead rows (of the references above, or all) back to pending first.",
        ),
        "fix_reference": Param(
            "",
            type="string",
            title="Correct: reference",
            description="Internal reference of an invalid, rejected or unsent document to correct first.",
        ),
        "fix_document": Param(
            None,
            type=["null", "object"],
            title="Correct: document",
            description="The corrected POST /documents body (JSON object) for the reference above.",
        ),
        "fix_account_id": Param(
            "",
            type="string",
            title="Correct: account",
            description="Koywe account of the reference, only when several accounts use it.",
        ),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Log what would be retried."),
    },
) as dag:
    authenticate = KoyweAuthOperator(
        task_id="authenticate", pool="koywe_auth", dry_run="{{ params.dry_run }}"
    )
    apply_fix = KoyweCorrectDocumentOperator(
        task_id="apply_fix",
        reference="{{ params.fix_reference }}",
        document="{{ params.fix_document }}",
        account_id="{{ params.fix_account_id }}",
        dry_run="{{ params.dry_run }}",
    )
    # A corrected row is pending: named with the references and picked with pending rows.
    plan = KoywePlanBatchesOperator(
        task_id="plan_batches",
        states=RETRY_STATES,
        references="{{ params.references + [params.fix_reference] if params.fix_reference else params.references }}",
        requeue_rejected="{{ params.requeue_rejected or params.fix_reference != '' }}",
        dry_run="{{ params.dry_run }}",
    )
    issue = KoyweIssueDocumentsOperator.partial(
        task_id="issue",
        pool="koywe_api",
        states=RETRY_STATES,
        map_index_template="ids {{ task.batch['first_id'] }}-{{ task.batch['last_id'] }}",
    ).expand(batch=plan.output)
    report = KoyweIssuanceReportOperator(
        task_id="report",
        outcomes=issue.output,
        dry_run="{{ params.dry_run }}",
        trigger_rule="all_done",
    )
    publish = KoyweIssuedEventOperator(
        task_id="publish", summary=report.output, outlets=[KOYWE_ISSUED_DOCUMENTS]
    )
    check_run = KoyweRunCheckOperator(
        task_id="check_run", summary=report.output, fail_on_stuck=True, trigger_rule="all_done"
    )
    authenticate >> apply_fix >> plan >> issue >> report >> publish >> check_run
