"""A document's life after issuance: status changes by hand, tax-bureau follow-up on a schedule. Wiring only."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, CronTriggerTimetable, Param

from koywe_provider.assets import KOYWE_DOCUMENT_STATUS
from koywe_provider.notifications import KoyweAlertNotifier
from koywe_provider.operators.document_status import (
    KoyweTaxBureauPollOperator,
    KoyweUpdateDocumentStatusOperator,
)
from koywe_provider.retry_policies import koywe_default_args

DEFAULT_ARGS = koywe_default_args()

with DAG(
    dag_id="koywe_document_status",
    description="Issue a Chile draft or cancel a Mexico invoice (PUT /documents/{id})",
    doc_md="""
### Koywe document status change (manual)
Trigger from the UI with **either** `document_id` (Koywe's id) **or** `reference` (the internal
transaction id; `account_id` narrows the lookup), an `action` and a `reason`:

- `issue_draft`: a Chile draft (`document_status` 0) becomes issued (1) and goes to the tax bureau;
- `cancel`: a Mexico invoice (1) becomes cancelled (2). Other countries cancel with a credit note.

Country and current status are checked before anything is sent; a change that is already applied
succeeds without a call. The ledger records the new status and the attempt (with the reason).
""",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["koywe", "invoicing"],
    default_args=DEFAULT_ARGS,
    on_failure_callback=KoyweAlertNotifier(),
    params={
        "document_id": Param(None, type=["null", "string"], title="Koywe document id"),
        "reference": Param(None, type=["null", "string"], title="Internal reference (reference_code 5)"),
        "account_id": Param(None, type=["null", "string"], title="Koywe account id (narrows a reference)"),
        "action": Param("issue_draft", type="string", enum=["issue_draft", "cancel"], title="Action"),
        "reason": Param("", type="string", title="Reason", description="Recorded with the attempt."),
    },
):
    KoyweUpdateDocumentStatusOperator(
        task_id="update_status",
        pool="koywe_api",
        document_id="{{ params.document_id }}",
        reference="{{ params.reference }}",
        account_id="{{ params.account_id }}",
        action="{{ params.action }}",
        reason="{{ params.reason }}",
    )  # retrying is safe: the current status is read first and an applied change is not re-sent

with DAG(
    dag_id="koywe_taxbureau_followup",
    description="Late tax-bureau answers: batch-poll Koywe for documents still in validation",
    doc_md="""
### Koywe tax-bureau follow-up (scheduled)
Callbacks (`DOCUMENT.STATUSUPDATE`, received by the `koywe_callbacks` plugin) are the primary source;
this DAG catches what they missed. **poll_taxbureau** lists the documents of the issue-date window of
every ledger row whose validation is not final — one `GET /documents` per 100 documents, never one per
document — and writes the statuses forwards only. Documents rejected by the tax bureau become
`rejected` with the bureau's comments (fix them and issue again). Emits `koywe_document_status`.
""",
    # A cron *trigger* without start_date: unpausing creates no run for a past tick nobody asked for.
    schedule=CronTriggerTimetable(
        os.environ.get("KOYWE_TAXBUREAU_FOLLOWUP_CRON", "*/30 * * * *"), timezone="UTC"
    ),
    catchup=False,
    max_active_runs=1,
    tags=["koywe", "invoicing"],
    default_args=DEFAULT_ARGS,
    on_failure_callback=KoyweAlertNotifier(),
):
    KoyweTaxBureauPollOperator(task_id="poll_taxbureau", pool="koywe_api", outlets=[KOYWE_DOCUMENT_STATUS])
