"""The ledger's errors: one hierarchy for documents and accounts.

::

    LedgerError
    ├── RowNotFoundError (also a LookupError)
    │   ├── DocumentNotFoundError      no koywe_documents row with that primary key
    │   └── AccountNotFoundError       no koywe_accounts row with that primary key
    └── InvalidTransitionError         the change is not allowed from the row's current state
        ├── LeaseLostError             the caller no longer holds the row: do NOT send
        └── DuplicateKoyweDocumentError another row (or generation) already holds that Koywe document

Pure module: no SQLAlchemy, no Airflow.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of the ledger's own errors."""


class RowNotFoundError(LedgerError, LookupError):
    """No row has that primary key (``except LookupError`` catches it too)."""


class DocumentNotFoundError(RowNotFoundError):
    """No ``koywe_documents`` row has that primary key."""


class AccountNotFoundError(RowNotFoundError):
    """No ``koywe_accounts`` row has that primary key."""


class InvalidTransitionError(LedgerError):
    """The requested state change is not allowed from the row's current state (e.g. downgrading an
    ``issued`` document, or issuing it again under another Koywe ``document_id``)."""


class LeaseLostError(InvalidTransitionError):
    """The caller no longer holds the row: it is not ``in_flight``, its ``lease_owner`` is someone else,
    or (for :meth:`~koywe_provider.ledger.Ledger.mark_sent`) its lease has expired. Do NOT send the POST
    after this: another run may be handling the row."""


class DuplicateKoyweDocumentError(InvalidTransitionError):
    """The Koywe ``document_id`` being recorded is already held by another ledger row (or by another
    generation of the same row): two ledger documents cannot be the same Koywe document. Nothing was
    written; the row keeps its state (an ``in_flight`` row stays held by the caller).

    ``koywe_document_id`` is the contested id; ``reference``/``other_reference`` name the row being
    written and the row (or generation) that holds the id already.
    """

    def __init__(
        self,
        message: str,
        *,
        koywe_document_id: str | None = None,
        reference: str | None = None,
        other_reference: str | None = None,
    ) -> None:
        super().__init__(message)
        self.koywe_document_id = koywe_document_id
        self.reference = reference
        self.other_reference = other_reference


__all__ = [
    "AccountNotFoundError",
    "DocumentNotFoundError",
    "DuplicateKoyweDocumentError",
    "InvalidTransitionError",
    "LeaseLostError",
    "LedgerError",
    "RowNotFoundError",
]
