"""Issuance ledger of the Koywe provider: every tax document and every attempt to issue it.

Pure SQLAlchemy 2.x + Alembic (no Airflow imports); ``KoyweLedgerHook`` wraps :class:`Ledger`.
See ``docs/DESIGN.md`` for the state machine.
"""

from koywe_provider.ledger.accounts import Account, AccountLedger, AccountState
from koywe_provider.ledger.core import (
    INGEST_CHUNK,
    MIGRATIONS_DIR,
    BatchSpec,
    ClaimedDocument,
    DocumentNotFoundError,
    IngestCounts,
    IngestItem,
    InvalidTransitionError,
    LeaseLostError,
    Ledger,
    LedgerError,
    payload_hash_of,
    synthetic_reference,
)
from koywe_provider.ledger.models import (
    CLAIMABLE,
    ISSUED_STATES,
    VERSION_TABLE,
    Attempt,
    AttemptKind,
    AttemptOutcome,
    Base,
    Document,
    DocumentState,
    IngestConflict,
)

__all__ = [
    "CLAIMABLE",
    "INGEST_CHUNK",
    "ISSUED_STATES",
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "Account",
    "AccountLedger",
    "AccountState",
    "Attempt",
    "AttemptKind",
    "AttemptOutcome",
    "Base",
    "BatchSpec",
    "ClaimedDocument",
    "Document",
    "DocumentNotFoundError",
    "DocumentState",
    "IngestConflict",
    "IngestCounts",
    "IngestItem",
    "InvalidTransitionError",
    "LeaseLostError",
    "Ledger",
    "LedgerError",
    "payload_hash_of",
    "synthetic_reference",
]
