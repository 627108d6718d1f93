"""Assets the Koywe DAGs emit, so data teams can schedule their own DAGs on them.

``schedule=[KOYWE_ISSUED_DOCUMENTS]`` runs a DAG after each issuance run; the event's ``extra`` carries
``run_id``, ``issued`` (documents issued by that run) and ``report`` (the report's path).
"""

from __future__ import annotations

from airflow.sdk import Asset

KOYWE_ISSUED_DOCUMENTS = Asset(name="koywe_issued_documents", uri="koywe://ledger/issued_documents")
#: Emitted when Koywe statuses changed ledger rows (callback or polling); ``extra`` carries ``source``
#: (``callback``/``polling``/``sensor``), ``changed``, ``accepted``, ``rejected`` and, for a callback,
#: ``document_id``.
KOYWE_DOCUMENT_STATUS = Asset(name="koywe_document_status", uri="koywe://ledger/document_status")
#: Emitted by every reconciliation run (``koywe_reconciliation``), differences or not; ``extra`` carries
#: ``run_id``, ``issue_date_from``/``issue_date_to``/``account_id``, one count per difference kind
#: (``missing_in_ledger``, ``missing_at_koywe``, ``duplicates``, ``status_differs``, ``stuck``,
#: ``missed_callbacks``), ``differences``, ``adopted``, ``unresolved``, ``listed``, ``list_calls``,
#: ``archived`` (``documents``, ``files``, ``bytes``, ``still_lacking``) and ``report``.
KOYWE_RECONCILIATION = Asset(name="koywe_reconciliation", uri="koywe://ledger/reconciliation")

__all__ = ["KOYWE_DOCUMENT_STATUS", "KOYWE_ISSUED_DOCUMENTS", "KOYWE_RECONCILIATION"]
