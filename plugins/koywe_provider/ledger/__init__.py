"""Issuance ledger of the Koywe provider: every tax document, its generations and every attempt to issue it.

Pure SQLAlchemy 2.x + Alembic (no Airflow imports; only ``koywe_provider.models`` below it);
``KoyweLedgerHook`` wraps :class:`Ledger`. See ``docs/DESIGN.md`` for the state machine and
:mod:`koywe_provider.ledger.ledger` for the modules.
"""

from koywe_provider.ledger.accounts import Account, AccountLedger, AccountState
from koywe_provider.ledger.claims import BatchSpec, ClaimedDocument
from koywe_provider.ledger.database import MIGRATIONS_DIR
from koywe_provider.ledger.errors import (
    AccountNotFoundError,
    DocumentNotFoundError,
    DuplicateKoyweDocumentError,
    InvalidTransitionError,
    LeaseLostError,
    LedgerError,
    RowNotFoundError,
)
from koywe_provider.ledger.ingestion import (
    INGEST_CHUNK,
    IngestCounts,
    IngestItem,
    payload_hash_of,
    synthetic_reference,
)
from koywe_provider.ledger.ledger import Ledger
from koywe_provider.ledger.models import (
    CLAIMABLE,
    ISSUED_STATES,
    KOYWE_DOCUMENT_STATES,
    VERSION_TABLE,
    ArchiveFile,
    ArchiveFileKind,
    Attempt,
    AttemptKind,
    AttemptOutcome,
    Base,
    CancellationStatus,
    Document,
    DocumentGeneration,
    DocumentState,
    GenerationOutcome,
    IngestConflict,
    NoteKind,
    PayloadHistory,
)
from koywe_provider.ledger.notes import CreditPosition, NoteExceedsRemainingError, NoteRecord
from koywe_provider.ledger.outcomes import AttemptRecord
from koywe_provider.ledger.queries import AwaitingDocuments
from koywe_provider.ledger.status_updates import (
    ApplyCounts,
    apply_status_reports,
    record_status_change,
)
from koywe_provider.ledger.values import DocumentFacts

__all__ = [
    "CLAIMABLE",
    "INGEST_CHUNK",
    "ISSUED_STATES",
    "KOYWE_DOCUMENT_STATES",
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "Account",
    "AccountLedger",
    "AccountNotFoundError",
    "AccountState",
    "ApplyCounts",
    "ArchiveFile",
    "ArchiveFileKind",
    "Attempt",
    "AttemptKind",
    "AttemptOutcome",
    "AttemptRecord",
    "AwaitingDocuments",
    "Base",
    "BatchSpec",
    "CancellationStatus",
    "ClaimedDocument",
    "CreditPosition",
    "Document",
    "DocumentFacts",
    "DocumentGeneration",
    "DocumentNotFoundError",
    "DocumentState",
    "DuplicateKoyweDocumentError",
    "GenerationOutcome",
    "IngestConflict",
    "IngestCounts",
    "IngestItem",
    "InvalidTransitionError",
    "LeaseLostError",
    "Ledger",
    "LedgerError",
    "NoteExceedsRemainingError",
    "NoteKind",
    "NoteRecord",
    "PayloadHistory",
    "RowNotFoundError",
    "apply_status_reports",
    "payload_hash_of",
    "record_status_change",
    "synthetic_reference",
]
