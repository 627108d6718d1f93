"""Voiding and correcting issued documents: credit and debit notes, Mexico cancellations, Chile drafts.
Wiring only: the logic lives in koywe_provider.services.voiding."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from koywe_provider.notifications import KoyweAlertNotifier
from koywe_provider.operators.voiding import (
    KoyweVoidApplyOperator,
    KoyweVoidCheckOperator,
    KoyweVoidPlanOperator,
)
from koywe_provider.retry_policies import koywe_default_args
from koywe_provider.services.voiding import ACTIONS

with DAG(
    dag_id="koywe_void_documents",
    description="Void or correct issued documents: credit/debit notes, Mexico cancellations, Chile drafts",
    doc_md="""
### Koywe: void or correct issued documents (manual)
Name the documents by their ledger `references` and choose an `action`; the right path is chosen per
country, and what the country does not allow is refused, with a clear message, before any call:

| action | Chile | Peru | Colombia | Mexico |
|---|---|---|---|---|
| `cancel` | credit note 61 (exports 112) for what is left | credit note 07 | credit note 91 | `PUT` status 2, followed until cancelled or refused |
| `credit_note` | 61 / 112 | 07 (factura or boleta) | 91 (POS: its own) | CFDI de egreso (E) |
| `debit_note` | 56 / 111 | 08 | 92 | refused (no debit note) |
| `issue_draft` / `delete_draft` | drafts only | refused | refused | refused |

A note credits the whole document by default, or a partial `amount` (tax included) or `lines` (`[1, 3]`
or `[{"line": 1, "quantity": 2}]`), never more than is left to credit; it is a ledger row of its own
(`INV-1/NC-1`, `INV-1/ND-1`) issued exactly once by the issuing engine. `reason` becomes the note's
reference description; `reason_code` overrides the country's default code.

1. **plan** reads the ledger only: resolves each reference, records the notes, refuses the rest;
2. **apply** sends (pool `koywe_api`): notes through the engine, `PUT` / `DELETE` for the others;
3. **check_run** fails the run, in one line, when any document was refused or failed, and logs where
   each original stands (issued, credited in part and how much, voided).

Documents issued elsewhere can be credited by folio: list them in `external_originals`
(`{"reference", "account_id", "folio", "document"}`).
""",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["koywe", "invoicing"],
    default_args=koywe_default_args(),
    on_failure_callback=KoyweAlertNotifier(),
    render_template_as_native_obj=True,
    params={
        "references": Param(
            [],
            type="array",
            items={"type": "string"},
            title="References",
            description="Ledger references of the documents (one per line).",
        ),
        "action": Param("credit_note", type="string", enum=list(ACTIONS), title="Action"),
        "reason": Param("", type="string", title="Reason", description="The note's reference description."),
        "amount": Param(
            None,
            type=["null", "number", "string"],
            title="Amount",
            description="Tax included, in the document's currency; empty = the whole document (what is left).",
        ),
        "lines": Param(
            None,
            type=["null", "array"],
            title="Lines",
            description='Credit these lines only: [1, 3] or [{"line": 1, "quantity": 2}] (1-based).',
        ),
        "reason_code": Param(
            None, type=["null", "string"], title="Reason code", description="Empty = the country's default."
        ),
        "account_id": Param(None, type=["null", "string"], title="Koywe account id (narrows references)"),
        "issue_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Issue date of the notes",
            description="Empty = today in each original's country.",
        ),
        "external_originals": Param(
            None,
            type=["null", "array"],
            title="Originals issued elsewhere",
            description='[{"reference", "account_id", "folio", "document": {header, details, totals}}]',
        ),
    },
):
    plan = KoyweVoidPlanOperator(
        task_id="plan",
        references="{{ params.references }}",
        action="{{ params.action }}",
        reason="{{ params.reason }}",
        reason_code="{{ params.reason_code }}",
        amount="{{ params.amount }}",
        lines="{{ params.lines }}",
        account_id="{{ params.account_id }}",
        issue_date="{{ params.issue_date or '' }}",
        external_originals="{{ params.external_originals }}",
    )
    apply = KoyweVoidApplyOperator(
        task_id="apply", pool="koywe_api", plan=plan.output, reason="{{ params.reason }}"
    )
    check_run = KoyweVoidCheckOperator(task_id="check_run", trigger_rule="all_done")
    plan >> apply >> check_run
