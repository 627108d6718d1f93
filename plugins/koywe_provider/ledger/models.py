"""SQLAlchemy models of the issuance ledger (tables ``koywe_documents``, ``koywe_attempts``,
``koywe_ingest_conflicts``) and the enumerations their string columns hold.

Pure SQLAlchemy 2.x: nothing here imports Airflow or another part of ``koywe_provider``.
Every datetime is timezone-aware UTC in Python; SQLite stores it as naive UTC text and
:class:`UTCDateTime` re-attaches ``UTC`` on read, so comparisons behave the same on both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: Alembic version table of the ledger (the same database may also hold Airflow's ``alembic_version``).
VERSION_TABLE = "koywe_alembic_version"
#: Every ledger table starts with this prefix; migrations and schema comparisons ignore other tables.
TABLE_PREFIX = "koywe_"

#: Longest ``raw_line`` stored for an invalid line (characters).
RAW_LINE_MAX = 10_000


class DocumentState(StrEnum):
    """``koywe_documents.state`` (see docs/DESIGN.md, "Issuance state machine")."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    ISSUED = "issued"
    REJECTED = "rejected"
    RETRYABLE = "retryable"
    UNKNOWN = "unknown"
    INVALID = "invalid"
    DEAD = "dead"
    DRAFT = "draft"


#: States a document can be claimed from. ``in_flight`` only counts once its lease has expired.
CLAIMABLE: frozenset[DocumentState] = frozenset(
    {DocumentState.PENDING, DocumentState.RETRYABLE, DocumentState.UNKNOWN, DocumentState.IN_FLIGHT}
)
#: Final states that prove a legal document exists at Koywe: never downgraded, never re-queued.
ISSUED_STATES: frozenset[DocumentState] = frozenset({DocumentState.ISSUED, DocumentState.DRAFT})


class AttemptKind(StrEnum):
    """``koywe_attempts.kind``."""

    CREATE = "create"
    LOOKUP = "lookup"
    STATUS_UPDATE = "status_update"  # PUT /documents/{id} (issue a draft, cancel)


class AttemptOutcome(StrEnum):
    """``koywe_attempts.outcome``."""

    ISSUED = "issued"
    REJECTED = "rejected"
    RETRYABLE = "retryable"
    UNKNOWN = "unknown"
    RATE_LIMITED = "rate_limited"
    ADOPTED = "adopted"
    NOT_FOUND = "not_found"
    DUPLICATE_ALARM = "duplicate_alarm"
    AUTH_ERROR = "auth_error"
    CANCELLED = "cancelled"
    ALREADY_APPLIED = "already_applied"


def utcnow() -> datetime:
    """Timezone-aware ``datetime.now(UTC)``."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always binds and returns aware UTC datetimes.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones: values are stored as naive UTC
    (``YYYY-MM-DD HH:MM:SS.ffffff``, which sorts and compares correctly as text) and read back with
    ``tzinfo=UTC``. Naive input is interpreted as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        value = as_utc(value)
        if value is not None and dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return as_utc(value)


#: JSON on SQLite, JSONB on PostgreSQL; Python ``None`` is SQL NULL (not JSON ``null``).
JSONType = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of the ledger; ``Base.metadata`` is what the migrations must produce."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Document(Base):
    """One tax document: a line of an inbox file, keyed by ``(account_id, reference)``."""

    __tablename__ = "koywe_documents"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "reference", name="uq_koywe_documents_account_id_reference"),
        sa.Index("ix_koywe_documents_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    reference: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False, index=True)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    raw_line: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    payload_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    source: Mapped[str] = mapped_column(sa.String(512), nullable=False)
    line_no: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(250), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    koywe_document_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    document_number: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    document_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    taxbureau_sending_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    taxbureau_validation_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    taxbureau_validation_comments: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    result_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    last_error_class: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    error_field: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(250), nullable=True)
    #: State the row was claimed from while it is ``in_flight`` (what :meth:`Ledger.release` restores).
    claimed_from: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Attempt(Base):
    """Append-only log of every call made for a document (a create POST or a lookup GET)."""

    __tablename__ = "koywe_attempts"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    document_pk: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("koywe_documents.id"), nullable=False, index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    http_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    duration_ms: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(250), nullable=True)
    task: Mapped[str | None] = mapped_column(sa.String(250), nullable=True)


class IngestConflict(Base):
    """A line whose key exists already with other content; the existing document is not overwritten."""

    __tablename__ = "koywe_ingest_conflicts"
    __table_args__ = (
        sa.UniqueConstraint(
            "account_id",
            "reference",
            "payload_hash",
            name="uq_koywe_ingest_conflicts_account_id_reference_payload_hash",
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    reference: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    source: Mapped[str] = mapped_column(sa.String(512), nullable=False)
    line_no: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    payload_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    existing_payload_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    run_id: Mapped[str | None] = mapped_column(sa.String(250), nullable=True)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: only the ledger's own tables (other apps may share the database)."""
    if type_ == "table":
        return bool(name) and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
    return True
