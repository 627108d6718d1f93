"""Daily issuance of electronic tax documents through Koywe. Wiring only: the logic lives in koywe_provider."""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, CronTriggerTimetable, Param

from koywe_provider.assets import KOYWE_ISSUED_DOCUMENTS
from koywe_provider.notifications import KoyweAlertNotifier
from koywe_provider.operators.document_status import KoyweTaxBureauPollOperator
from koywe_provider.operators.koywe import (
    KoyweAuthOperator,
    KoyweIngestInboxOperator,
    KoyweIssuanceReportOperator,
    KoyweIssuedEventOperator,
    KoyweIssueDocumentsOperator,
    KoywePlanBatchesOperator,
    KoyweRunCheckOperator,
)
from koywe_provider.retry_policies import koywe_default_args

PROJECT_DIR = Path(__file__).resolve().parent.parent

with DAG(
    dag_id="koywe_daily_issuance",
    description="Ingest the day's documents, issue them through Koywe exactly once, report",
    doc_md="""
### Koywe daily issuance
1. **ingest** every `*.jsonl` file of the inbox into the issuance ledger (idempotent; bad lines become
   `invalid` rows naming file, line and field);
2. **authenticate** once (pool `koywe_auth`, 1 slot) so every issuing task reuses one token;
3. **plan_batches**: split the due rows into id ranges;
4. **issue** each range (mapped, pool `koywe_api`), claiming each row before its POST;
5. **poll_taxbureau**: one `GET /documents` per 100 documents of the issue-date window updates the
   tax-bureau statuses (Chile validates asynchronously; rejected documents become `rejected`);
6. **report** counts by state and every failure, as a file and in the log (runs even after a failure);
7. **publish** the `koywe_issued_documents` asset event (counts in `extra`), skipped when nothing was issued;
8. **check_run** fails the run, in one line naming what failed and the report, when a task failed or the
   run has dead rows or duplicate alarms (invalid lines fail it only above `[koywe] max_invalid_fraction`,
   default 1.0 = never); the counts are in its log and XCom.

Trigger by hand with `inbox` (folder, file or URL), `issue_date` (default: today in each document's
country, a document is issued on its country's date) and `dry_run` (validate and record, send nothing).
Every line is checked as the tax bureau will check it (country rules: document type, currency, taxes
and rates, dates, receiver) and exactly (sums in the currency's rounding); lines longer than
`[koywe] max_line_bytes` are not read.
""",
    # A cron *trigger* without start_date: unpausing creates no run for a past tick nobody asked for.
    schedule=CronTriggerTimetable(os.environ.get("KOYWE_DAILY_ISSUANCE_CRON", "0 6 * * *"), timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["koywe", "invoicing"],
    default_args=koywe_default_args(),
    on_failure_callback=KoyweAlertNotifier(),
    params={
        "inbox": Param(
            "include/samples/inbox",
            type="string",
            title="Inbox",
            description="Folder or file of JSON Lines documents: a local path (relative to the project) or a URL.",
        ),
        "issue_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Issue date",
            description="Stamped on documents without header.issue_date; empty = today in each document's country.",
        ),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Validate and record only."),
    },
) as dag:
    ingest = KoyweIngestInboxOperator(
        task_id="ingest",
        inbox="{{ params.inbox }}",
        issue_date="{{ params.issue_date or '' }}",
        base_dir=str(PROJECT_DIR),
    )
    authenticate = KoyweAuthOperator(
        task_id="authenticate", pool="koywe_auth", dry_run="{{ params.dry_run }}"
    )
    plan = KoywePlanBatchesOperator(task_id="plan_batches", dry_run="{{ params.dry_run }}")
    issue = KoyweIssueDocumentsOperator.partial(
        task_id="issue",
        pool="koywe_api",
        map_index_template="ids {{ task.batch['first_id'] }}-{{ task.batch['last_id'] }}",
    ).expand(batch=plan.output)
    poll_taxbureau = KoyweTaxBureauPollOperator(
        task_id="poll_taxbureau",
        pool="koywe_api",
        dry_run="{{ params.dry_run }}",
        trigger_rule="all_done",
    )
    report = KoyweIssuanceReportOperator(
        task_id="report",
        ingest=ingest.output,
        outcomes=issue.output,
        dry_run="{{ params.dry_run }}",
        trigger_rule="all_done",
    )
    publish = KoyweIssuedEventOperator(
        task_id="publish", summary=report.output, outlets=[KOYWE_ISSUED_DOCUMENTS]
    )
    check_run = KoyweRunCheckOperator(task_id="check_run", summary=report.output, trigger_rule="all_done")
    ingest >> authenticate >> plan >> issue >> poll_taxbureau >> report >> publish >> check_run
