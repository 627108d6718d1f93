"""``KoyweCorrectDocumentOperator``: apply a corrected payload to one ledger row (the retry DAG's form).

Thin: the rules are :func:`koywe_provider.services.corrections.correct_document`'s, the same the
``fix`` command applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from koywe_provider.hooks.ledger import KoyweLedgerHook


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class KoyweCorrectDocumentOperator(BaseOperator):
    """Replace the payload of ledger row ``reference`` by ``document`` before it is issued again.

    The row must be ``invalid``, ``rejected`` or ``pending``/``retryable`` never sent in its current
    generation (a ``rejected`` row then starts a new generation); the document is validated as an inbox
    line is (strict JSON, country rules, arithmetic, today's date). Nothing to do (success, XCom
    ``{"corrected": None}``) when neither is given. A refusal fails the task at once, without retries,
    with one line naming the field; nothing is written.

    :param reference: the row's internal reference (empty: no correction).
    :param document: the corrected ``POST /documents`` body, as an object or JSON text (or a whole inbox
        line ``{"reference", "account_id", "document"}``).
    :param account_id: the row's Koywe account, when several accounts use ``reference``.
    :param dry_run: validate and check the row, change nothing.
    XCom: ``{"corrected", "outcome", "previous_state", "state", "generation", "attempts"}`` — never the
    payload.
    """

    template_fields: Sequence[str] = (
        "reference",
        "document",
        "account_id",
        "dry_run",
        "koywe_ledger_conn_id",
    )
    ui_color = "#fff4e0"

    def __init__(
        self,
        *,
        reference: str | None = None,
        document: Any = None,
        account_id: str | int | None = None,
        dry_run: bool | str = False,
        koywe_ledger_conn_id: str = KoyweLedgerHook.default_conn_name,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reference = reference
        self.document = document
        self.account_id = account_id
        self.dry_run = dry_run
        self.koywe_ledger_conn_id = koywe_ledger_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import conf
        from airflow.sdk.exceptions import AirflowFailException

        from koywe_provider.services.corrections import CorrectionRefused, correct_document, load_document
        from koywe_provider.services.ingestion import DEFAULT_MAX_LINE_BYTES

        reference = str(self.reference or "").strip()
        document = self.document
        if isinstance(document, str) and not document.strip():
            document = None
        if not reference and document is None:
            self.log.info("No correction asked (fix_reference and fix_document are empty)")
            return {"corrected": None}
        if not reference or document is None:
            missing = "fix_document" if reference else "fix_reference"
            raise AirflowFailException(f"Correction refused: {missing} is empty; give both or neither")
        ti = context["ti"]
        source = f"{ti.dag_id}/{context['run_id']} form"
        try:
            if isinstance(document, str):
                max_bytes = conf.getint("koywe", "max_line_bytes", fallback=DEFAULT_MAX_LINE_BYTES)
                document = load_document(document, source="fix_document", max_bytes=max_bytes)
            done = correct_document(
                KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger(),
                reference=reference,
                document=document,
                account_id=self.account_id,
                source=source,
                run_id=context["run_id"],
                dry_run=_flag(self.dry_run),
            )
        except CorrectionRefused as err:
            message = f"Correction of {reference} refused, nothing changed: {err.message}"
            self.log.error(message)
            raise AirflowFailException(message) from None
        result = {
            "corrected": done.reference,
            **{k: v for k, v in done.as_dict().items() if k != "reference"},
        }
        result.pop("payload_hash", None)
        self.log.info("Correction of %s: %s", reference, result)
        return result
