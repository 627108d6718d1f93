"""``KoyweDocumentStatusSensor``: wait until documents reach a final tax-bureau status, deferred."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue

from koywe_provider.exceptions import KoyweError
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.ledger import KoyweLedgerHook
from koywe_provider.ledger import DocumentFacts
from koywe_provider.ledger.status_updates import apply_status_reports
from koywe_provider.models.statuses import TaxBureauValidationStatus
from koywe_provider.triggers.taxbureau import KoyweDocumentStatusTrigger


class KoyweTaxBureauRejectedError(KoyweError):
    """The tax bureau rejected at least one awaited document (``taxbureau_validation_status`` 2 or 5)."""


class KoyweDocumentStatusSensor(BaseSensorOperator):
    """Wait until Koywe documents have a final ``taxbureau_validation_status`` (3/4 accepted, 2/5 rejected).

    Chile's tax bureau answers minutes after Koywe (API_NOTES). With ``deferrable=True`` (default) the
    sensor checks once on the worker, then hands the wait to :class:`KoyweDocumentStatusTrigger` in the
    triggerer (async client, no worker slot held); run it in a pool with ``include_deferred`` (e.g.
    ``koywe_api``) so deferred waits count against the API budget. Give ``issue_date_from``/``_to`` when
    waiting for more than a few documents: each poll then costs one ``GET /documents`` per 100 documents.
    The statuses are written to the ledger (forwards only; rejected → ledger state ``rejected``).

    :param document_ids: Koywe ``document_id`` values (templated; a list or a comma-separated string).
    :param poke_interval: seconds between polls (in the trigger too).
    :param fail_on_rejected: raise :class:`KoyweTaxBureauRejectedError` when a document was rejected.
    XCom: ``{"accepted": [ids], "rejected": [ids]}``.
    """

    template_fields: Sequence[str] = (
        "document_ids",
        "issue_date_from",
        "issue_date_to",
        "koywe_conn_id",
        "koywe_ledger_conn_id",
    )
    ui_color = "#f0e8ff"

    def __init__(
        self,
        *,
        document_ids: Any,
        issue_date_from: str | None = None,
        issue_date_to: str | None = None,
        koywe_conn_id: str = KoyweHook.default_conn_name,
        koywe_ledger_conn_id: str | None = KoyweLedgerHook.default_conn_name,
        fail_on_rejected: bool = False,
        deferrable: bool = True,
        poke_interval: float = 60.0,
        timeout: float = 6 * 3600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.document_ids = document_ids
        self.issue_date_from = issue_date_from
        self.issue_date_to = issue_date_to
        self.koywe_conn_id = koywe_conn_id
        self.koywe_ledger_conn_id = koywe_ledger_conn_id
        self.fail_on_rejected = fail_on_rejected
        self.deferrable = deferrable

    def _ids(self) -> list[str]:
        value = self.document_ids
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").replace("'", "").split(",")]
        ids = [str(v).strip() for v in (value or []) if str(v).strip()]
        if not ids:
            raise KoyweError("KoyweDocumentStatusSensor needs at least one Koywe document_id")
        return list(dict.fromkeys(ids))

    def poke(self, context: Context) -> PokeReturnValue:
        ids = self._ids()
        documents = KoyweHook(self.koywe_conn_id).get_documents(
            ids, issue_date_from=self.issue_date_from or None, issue_date_to=self.issue_date_to or None
        )
        done = [documents[i].status_summary() for i in ids if i in documents and documents[i].bureau_final]
        if len(done) < len(ids):
            self.log.info(
                "%d of %d document(s) still awaiting the tax bureau", len(ids) - len(done), len(ids)
            )
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(done))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        result = self.poke(context)
        if result.is_done:
            return result.xcom_value
        self.defer(
            trigger=KoyweDocumentStatusTrigger(
                document_ids=self._ids(),
                koywe_conn_id=self.koywe_conn_id,
                poll_interval=self.poke_interval,
                issue_date_from=self.issue_date_from or None,
                issue_date_to=self.issue_date_to or None,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, list[str]]:
        """Turn the trigger's event into the XCom, or :class:`KoyweError` for an error event."""
        if not isinstance(event, dict) or event.get("status") != "success":
            message = event.get("message") if isinstance(event, dict) else event
            raise KoyweError(f"Waiting for the tax bureau failed: {message}")
        return self._finish(list(event["documents"]))

    def _finish(self, documents: list[dict[str, Any]]) -> dict[str, list[str]]:
        if self.koywe_ledger_conn_id:
            ledger = KoyweLedgerHook(self.koywe_ledger_conn_id).get_ledger()
            counts = apply_status_reports(
                ledger, [DocumentFacts.from_mapping(d) for d in documents], source="sensor"
            )
            self.log.info("Ledger updated from the tax bureau's answers: %s", counts.as_dict())
        rejected = [
            d
            for d in documents
            if d["taxbureau_validation_status"] in TaxBureauValidationStatus.rejected_statuses()
        ]
        for doc in rejected:
            self.log.warning(
                "Tax bureau rejected Koywe document %s (validation %s): %s",
                doc["document_id"],
                doc["taxbureau_validation_status"],
                doc.get("taxbureau_validation_comments") or "no comments",
            )
        result = {
            "accepted": [d["document_id"] for d in documents if d not in rejected],
            "rejected": [d["document_id"] for d in rejected],
        }
        if rejected and self.fail_on_rejected:
            raise KoyweTaxBureauRejectedError(
                f"The tax bureau rejected {len(rejected)} document(s): {result['rejected']}; fix and issue again"
            )
        return result
