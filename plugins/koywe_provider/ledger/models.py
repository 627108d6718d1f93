"""SQLAlchemy models of the issuance ledger (tables ``koywe_documents``, ``koywe_attempts``,
``koywe_ingest_conflicts``, ``koywe_document_generations``, ``koywe_payload_history``,
``koywe_archive_files``) and the enumerations their string columns hold.

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
    #: Koywe generated the document (it has a ``document_id`` and a folio) but has not sent it to the tax
    #: bureau yet (``result.status == 2``): it exists, is never sent again under the same reference, and
    #: its statuses are followed until the bureau's answer makes it ``issued`` or ``rejected``.
    NOT_SENT = "not_sent"
    #: A Chile draft deleted at Koywe (``DELETE /documents/{id}``): no document exists any more.
    DELETED = "deleted"
    #: A document issued elsewhere (not through this ledger), recorded so that a credit or debit note can
    #: reference it by its folio; never sent.
    EXTERNAL = "external"


#: States a document can be claimed from. ``in_flight`` only counts once its lease has expired.
CLAIMABLE: frozenset[DocumentState] = frozenset(
    {DocumentState.PENDING, DocumentState.RETRYABLE, DocumentState.UNKNOWN, DocumentState.IN_FLIGHT}
)
#: States that prove a legal document exists at Koywe under the row's current generation: never
#: downgraded by a failure, never re-queued, never sent again, followed for status news.
ISSUED_STATES: frozenset[DocumentState] = frozenset(
    {DocumentState.ISSUED, DocumentState.DRAFT, DocumentState.NOT_SENT}
)
#: Alias of :data:`ISSUED_STATES` that says what it means.
KOYWE_DOCUMENT_STATES = ISSUED_STATES


class AttemptKind(StrEnum):
    """``koywe_attempts.kind``."""

    CREATE = "create"
    LOOKUP = "lookup"
    STATUS_UPDATE = "status_update"  # PUT /documents/{id} (issue a draft, cancel)
    DELETE = "delete"  # DELETE /documents/{id} (a Chile draft)


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
    CONTENT_MISMATCH = "content_mismatch"
    NOT_SENT = "not_sent"
    PENDING = "pending"  # a status change Koywe accepted but has not reached its target yet
    DELETED = "deleted"  # a draft Koywe deleted (or had deleted already)


class NoteKind(StrEnum):
    """``koywe_documents.note_kind``: what a note row is to its original (``original_pk``)."""

    CREDIT_NOTE = "credit_note"
    DEBIT_NOTE = "debit_note"


class CancellationStatus(StrEnum):
    """``koywe_documents.cancellation_status``: a Mexico cancellation (``PUT`` ``document_status`` 2) as
    Koywe reports it. ``requested`` (sent, no answer read yet) → ``pending_acceptance`` (Koywe took it;
    the receiver has not accepted yet) → ``cancelled`` (``document_status`` 2) or ``refused`` (the
    receiver refused; the invoice stands). ``cancelled`` and ``refused`` are final; a new request after a
    refusal starts again at ``requested``."""

    REQUESTED = "requested"
    PENDING_ACCEPTANCE = "pending_acceptance"
    CANCELLED = "cancelled"
    REFUSED = "refused"

    @classmethod
    def open_statuses(cls) -> frozenset[CancellationStatus]:
        return frozenset({cls.REQUESTED, cls.PENDING_ACCEPTANCE})

    @property
    def rank(self) -> int:
        """Progress order for "forwards only" merges: requested 0 < pending 1 < refused 2 < cancelled 3."""
        return {"requested": 0, "pending_acceptance": 1, "refused": 2, "cancelled": 3}[self.value]


class GenerationOutcome(StrEnum):
    """``koywe_document_generations.outcome``: how one generation of a document ended (``NULL`` while
    Koywe has said nothing about it)."""

    ISSUED = "issued"
    NOT_SENT = "not_sent"
    DRAFT = "draft"
    REJECTED = "rejected"  # Koywe refused it (400 or result.status 1)
    TAXBUREAU_REJECTED = "taxbureau_rejected"  # validation 2/5 after Koywe issued it
    DELETED = "deleted"  # a Chile draft deleted at Koywe
    SUPERSEDED = "superseded"  # a new generation started before Koywe said anything


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
        # One Koywe document is one ledger document: a second row recording it is a duplicate alarm.
        sa.Index("uq_koywe_documents_koywe_document_id", "koywe_document_id", unique=True),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    reference: Mapped[str] = mapped_column(sa.String(128), nullable=False, index=True)
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False, index=True)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    raw_line: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    payload_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    source: Mapped[str] = mapped_column(sa.String(512), nullable=False)
    line_no: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(250), nullable=True, index=True)
    #: POSTs sent for this row, every generation together.
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    #: Current generation (1 = the ledger reference itself; see ``models.references.koywe_reference``).
    generation: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=1, server_default="1")
    #: POSTs sent in the current generation: > 0 means one may be at Koywe (look it up before resending).
    generation_sends: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0, server_default="0")
    # What Koywe says about the current generation's document (earlier ones: koywe_document_generations).
    koywe_document_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    document_number: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    #: Top-level ``document_status`` (0 draft, 1 issued, 2 cancelled).
    document_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    #: ``header.document_status`` (0 draft, 1 issued, 2 sent to the counterparty, 3 accepted by it).
    counterparty_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    taxbureau_sending_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    taxbureau_validation_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    taxbureau_validation_comments: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    result_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    result_error_message: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
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
    #: Last ``DOCUMENT.STATUSUPDATE`` callback about the current generation's document (news or not).
    last_callback_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Last time polling (not a callback) brought status news about it: a callback that never came.
    last_polled_news_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: When the legal archive last fetched its files from Koywe (``GET /documents/{id}``): fetched once.
    archive_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: A credit or debit note: the ledger id of the document it modifies (no foreign key constraint:
    #: SQLite could not drop a referencing column in place on downgrade), and :class:`NoteKind`.
    original_pk: Mapped[int | None] = mapped_column(sa.Integer, nullable=True, index=True)
    note_kind: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    #: :class:`CancellationStatus` of a Mexico cancellation, and when it was last asked for.
    cancellation_status: Mapped[str | None] = mapped_column(sa.String(24), nullable=True)
    cancellation_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


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
    #: The document's generation when the call was made (``NULL``: not known).
    generation: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)


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


class DocumentGeneration(Base):
    """One generation of a document: what was sent under one Koywe reference and what Koywe said.

    Generation 1 uses the ledger reference (``INV-1``), generation ``n`` the Koywe reference ``INV-1~n``
    (:func:`koywe_provider.models.references.koywe_reference`). A rejected document that is re-queued
    or corrected starts a new generation; the earlier records keep their Koywe ids and statuses, so a
    late callback for an earlier document still finds where it belongs.
    """

    __tablename__ = "koywe_document_generations"
    __table_args__ = (
        sa.UniqueConstraint(
            "document_pk", "generation", name="uq_koywe_document_generations_document_pk_generation"
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    document_pk: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("koywe_documents.id", ondelete="CASCADE"), nullable=False
    )
    generation: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    koywe_reference: Mapped[str] = mapped_column(sa.String(160), nullable=False)
    payload_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    koywe_document_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True)
    document_number: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    document_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    counterparty_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    taxbureau_sending_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    taxbureau_validation_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    taxbureau_validation_comments: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    result_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    result_error_message: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    #: :class:`GenerationOutcome` value, ``NULL`` while open and unanswered.
    outcome: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    #: Set when the generation was closed (rejected) or replaced by the next one.
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PayloadHistory(Base):
    """A payload that an ingested correction replaced (its hash and where it came from)."""

    __tablename__ = "koywe_payload_history"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    document_pk: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("koywe_documents.id", ondelete="CASCADE"), nullable=False, index=True
    )
    payload_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    source: Mapped[str] = mapped_column(sa.String(512), nullable=False)
    line_no: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    #: The generation the replaced payload belonged to.
    generation: Mapped[int] = mapped_column(sa.Integer, nullable=False)


class ArchiveFileKind(StrEnum):
    """``koywe_archive_files.kind``: which ``electronic_document`` field the file came from."""

    XML = "xml"  # document_xml
    PDF = "pdf"  # document_pdf
    STAMP = "stamp"  # stamp_img (when a stamp was asked for)
    TRANSFER_COPY_PDF = "transfer_copy_pdf"  # document_transfer_copy_pdf (Chile's copia cedible)


class ArchiveFile(Base):
    """One file of the legal archive: an XML or PDF that Koywe returned for a document, written under
    ``[koywe] archive_root`` (any ``ObjectStoragePath``), with where it is and its SHA-256."""

    __tablename__ = "koywe_archive_files"
    __table_args__ = (
        sa.UniqueConstraint(
            "koywe_document_id", "kind", name="uq_koywe_archive_files_koywe_document_id_kind"
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    document_pk: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("koywe_documents.id", ondelete="CASCADE"), nullable=False, index=True
    )
    #: The row's generation whose Koywe document this file belongs to.
    generation: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    koywe_document_id: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    #: :class:`ArchiveFileKind` value.
    kind: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    #: Full ``ObjectStoragePath`` URL of the file (``file:///…``, ``s3://bucket/…``).
    path: Mapped[str] = mapped_column(sa.Text, nullable=False)
    #: Hex SHA-256 of the file's bytes (the decoded base64).
    sha256: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    #: ``create`` (the POST answer), ``lookup`` (a document adopted with its files), ``fetch``
    #: (``GET /documents/{id}`` for a document that lacked them).
    source: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    archived_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: only the ledger's own tables (other apps may share the database)."""
    if type_ == "table":
        return bool(name) and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
    return True
