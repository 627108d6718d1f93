"""Notes in the ledger: credit and debit note rows tied to their original, what is left to credit, Mexico
cancellations asked for, deleted drafts and originals issued elsewhere.

A note is a row of its own (state machine of ``docs/DESIGN.md``: ``pending`` → … → ``issued``), issued
by the same engine as any document, with ``original_pk`` naming the row it modifies and ``note_kind``
(``credit_note`` | ``debit_note``). Its reference derives from the original's: ``INV-1/NC-1``,
``INV-1/NC-2``, ``INV-1/ND-1`` (:func:`~koywe_provider.models.notes.note_reference`).

What is left to credit on an original is its ``totals.total_amount`` minus the totals of its credit
notes that exist at Koywe or may come to (:data:`COUNTED_STATES`: every state but ``rejected``,
``invalid`` and ``deleted``); :meth:`NotesMixin.create_note` checks it and inserts the note in ONE
transaction holding the original's row lock, so two runs can never credit more than the total between
them. Amounts are Decimals in the original's currency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from koywe_provider.ledger._sql import ATTEMPTS, CLEAR_LEASE, DOCS, GENERATIONS, cap
from koywe_provider.ledger.database import LedgerDatabase
from koywe_provider.ledger.errors import DocumentNotFoundError, InvalidTransitionError
from koywe_provider.ledger.ingestion import payload_hash_of
from koywe_provider.ledger.models import (
    ISSUED_STATES,
    CancellationStatus,
    DocumentState,
    GenerationOutcome,
    NoteKind,
)
from koywe_provider.ledger.outcomes import AttemptRecord
from koywe_provider.models.notes import note_reference, payload_total
from koywe_provider.models.statuses import DocumentStatus

#: Note states that count against what is left to credit: the note exists at Koywe (issued, draft,
#: not_sent), is on its way (pending, in_flight, retryable, unknown) or may exist (dead: held for a person).
COUNTED_STATES: frozenset[str] = frozenset(
    s.value
    for s in DocumentState
    if s not in (DocumentState.REJECTED, DocumentState.INVALID, DocumentState.DELETED, DocumentState.EXTERNAL)
)
#: Note states whose note exists at Koywe.
EXISTING_STATES: frozenset[str] = frozenset(s.value for s in ISSUED_STATES)
#: ``source`` of a note row: ``note:<request key>`` (a retried request finds its note again).
NOTE_SOURCE_PREFIX = "note:"
#: Row states a note may be written against: a document the tax bureau has, or one issued elsewhere.
ORIGINAL_STATES: frozenset[str] = frozenset({DocumentState.ISSUED.value, DocumentState.EXTERNAL.value})


class NoteExceedsRemainingError(InvalidTransitionError):
    """A credit note of ``requested`` would credit more than is ``remaining`` on its original (the total
    minus the credit notes issued or in progress). Nothing was written."""

    def __init__(self, message: str, *, requested: Decimal, remaining: Decimal) -> None:
        super().__init__(message)
        self.requested = requested
        self.remaining = remaining


@dataclass(frozen=True, slots=True)
class NoteRecord:
    """One note of an original, as the ledger holds it (``total`` tax included)."""

    id: int
    reference: str
    kind: str
    state: str
    total: Decimal
    koywe_document_id: str | None
    document_number: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reference": self.reference,
            "kind": self.kind,
            "state": self.state,
            "total": str(self.total),
            "koywe_document_id": self.koywe_document_id,
            "document_number": self.document_number,
        }


@dataclass(frozen=True, slots=True)
class CreditPosition:
    """Where a document stands after issuance, from the ledger alone.

    :ivar total: the document's ``totals.total_amount``.
    :ivar credited: / :ivar debited: totals of its credit / debit notes that exist at Koywe.
    :ivar credit_in_progress: / :ivar debit_in_progress: of those on their way (pending … unknown, dead).
    :ivar remaining: what is left to credit: ``total - credited - credit_in_progress``.
    :ivar status: ``voided`` (cancelled in Mexico, or credited in full), ``cancellation_pending``,
        ``credited_in_part``, ``credit_in_progress``, ``issued`` (nothing against it), or the row's own
        state when it is not a legal document yet (``pending``, ``rejected``, ``draft``, ``deleted`` …).
    """

    id: int
    reference: str
    account_id: str
    state: str
    total: Decimal
    credited: Decimal
    credit_in_progress: Decimal
    debited: Decimal
    debit_in_progress: Decimal
    remaining: Decimal
    status: str
    document_status: int | None
    cancellation_status: str | None
    notes: tuple[NoteRecord, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (amounts as text, exact)."""
        return {
            "id": self.id,
            "reference": self.reference,
            "account_id": self.account_id,
            "state": self.state,
            "status": self.status,
            "total": str(self.total),
            "credited": str(self.credited),
            "credit_in_progress": str(self.credit_in_progress),
            "debited": str(self.debited),
            "debit_in_progress": str(self.debit_in_progress),
            "remaining": str(self.remaining),
            "document_status": self.document_status,
            "cancellation_status": self.cancellation_status,
            "notes": [n.as_dict() for n in self.notes],
        }


def _status(row: Any, total: Decimal, credited: Decimal, in_progress: Decimal) -> str:
    if row.state not in ORIGINAL_STATES:
        return str(row.state)
    if (
        row.document_status == DocumentStatus.CANCELLED
        or row.cancellation_status == CancellationStatus.CANCELLED
    ):
        return "voided"
    if total > 0 and credited >= total:
        return "voided"
    if row.cancellation_status in CancellationStatus.open_statuses():
        return "cancellation_pending"
    if credited > 0:
        return "credited_in_part"
    if in_progress > 0:
        return "credit_in_progress"
    return "issued"


_NOTE_COLUMNS = (
    DOCS.c.id,
    DOCS.c.reference,
    DOCS.c.note_kind,
    DOCS.c.state,
    DOCS.c.payload,
    DOCS.c.source,
    DOCS.c.koywe_document_id,
    DOCS.c.document_number,
)


def _notes(session: Session, original_pk: int) -> list[Any]:
    return session.execute(
        sa.select(*_NOTE_COLUMNS).where(DOCS.c.original_pk == original_pk).order_by(DOCS.c.id)
    ).all()


def _record(note: Any) -> NoteRecord:
    return NoteRecord(
        id=note.id,
        reference=note.reference,
        kind=note.note_kind,
        state=note.state,
        total=payload_total(note.payload),
        koywe_document_id=note.koywe_document_id,
        document_number=note.document_number,
    )


def _sums(notes: list[NoteRecord]) -> dict[str, Decimal]:
    sums = {k: Decimal(0) for k in ("credited", "credit_in_progress", "debited", "debit_in_progress")}
    for note in notes:
        if note.state not in COUNTED_STATES:
            continue
        done = note.state in EXISTING_STATES
        if note.kind == NoteKind.CREDIT_NOTE:
            sums["credited" if done else "credit_in_progress"] += note.total
        else:
            sums["debited" if done else "debit_in_progress"] += note.total
    return sums


class NotesMixin(LedgerDatabase):
    """Notes (:meth:`create_note`, :meth:`credit_position`), cancellations (:meth:`request_cancellation`),
    deleted drafts (:meth:`mark_deleted`) and originals issued elsewhere (:meth:`register_external`)."""

    def notes_of(self, original_pk: int) -> list[NoteRecord]:
        """The notes written against row ``original_pk``, oldest first (``[]`` when none)."""
        with self._read() as session:
            return [_record(n) for n in _notes(session, original_pk)]

    def credit_position(self, pk: int) -> CreditPosition:
        """What row ``pk`` totals, what was credited and debited against it, what is left, and its status
        (:class:`CreditPosition`). Raises :class:`DocumentNotFoundError`."""
        with self._read() as session:
            row = session.execute(sa.select(DOCS).where(DOCS.c.id == pk)).first()
            if row is None:
                raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
            notes = [_record(n) for n in _notes(session, pk)]
        return self._position(row, notes)

    @staticmethod
    def _position(row: Any, notes: list[NoteRecord]) -> CreditPosition:
        total = payload_total(row.payload)
        sums = _sums(notes)
        remaining = total - sums["credited"] - sums["credit_in_progress"]
        return CreditPosition(
            id=row.id,
            reference=row.reference,
            account_id=row.account_id,
            state=row.state,
            total=total,
            remaining=remaining,
            status=_status(row, total, sums["credited"], sums["credit_in_progress"]),
            document_status=row.document_status,
            cancellation_status=row.cancellation_status,
            notes=tuple(notes),
            **sums,
        )

    def note_for_request(self, original_pk: int, *, kind: str, request_key: str) -> dict[str, Any] | None:
        """The note of ``kind`` that request ``request_key`` recorded against ``original_pk`` (every
        column), or ``None``: what a retried request finds again before building anything."""
        source = cap(f"{NOTE_SOURCE_PREFIX}{request_key}", 512)
        stmt = sa.select(DOCS).where(
            DOCS.c.original_pk == original_pk, DOCS.c.note_kind == kind, DOCS.c.source == source
        )
        with self._read() as session:
            row = session.execute(stmt.order_by(DOCS.c.id).limit(1)).first()
        return None if row is None else dict(row._mapping)

    def create_note(
        self,
        original_pk: int,
        *,
        kind: str,
        payload: dict[str, Any],
        request_key: str,
        run_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Record a ``pending`` note row of ``kind`` against row ``original_pk`` (same account), in ONE
        transaction holding the original's row lock. Returns ``(row, created)``.

        The reference is the original's plus ``/NC-<n>`` or ``/ND-<n>`` (``n``: one more than the notes of
        that kind it has, whatever their state, so references never repeat). ``request_key`` identifies
        the request (e.g. ``<dag_id>/<run_id>``): a note of the same kind and request already recorded is
        returned as it is (``created`` False), so a retried task never writes a second one.

        :raises NoteExceedsRemainingError: a credit note whose ``totals.total_amount`` exceeds what is
            left to credit (another run may have credited it meanwhile); nothing written.
        :raises InvalidTransitionError: the original is itself a note, or not a legal document
            (state other than issued, external).
        :raises DocumentNotFoundError: no row ``original_pk``.
        :raises ValueError: unknown ``kind``.
        """
        kind = NoteKind(kind).value
        source = cap(f"{NOTE_SOURCE_PREFIX}{request_key}", 512)
        total = payload_total(payload)
        now = self._now()
        with self._write.begin() as session:
            original = session.execute(
                sa.select(DOCS).where(DOCS.c.id == original_pk).with_for_update()
            ).first()
            if original is None:
                raise DocumentNotFoundError(f"no koywe_documents row with id {original_pk}")
            if original.original_pk is not None:
                raise InvalidTransitionError(
                    f"{original.reference} is itself a {original.note_kind}: name the original document"
                )
            if original.state not in ORIGINAL_STATES:
                raise InvalidTransitionError(
                    f"{original.reference} is {original.state}, not an issued document: no note can modify it"
                )
            existing = _notes(session, original_pk)
            for note in existing:
                if note.source == source and note.note_kind == kind:
                    row = session.execute(sa.select(DOCS).where(DOCS.c.id == note.id)).first()
                    return dict(row._mapping), False
            if kind == NoteKind.CREDIT_NOTE:
                position = self._position(original, [_record(n) for n in existing])
                if total > position.remaining:
                    raise NoteExceedsRemainingError(
                        f"a credit note of {total} exceeds what is left to credit on {original.reference}: "
                        f"{position.remaining} (total {position.total}, credited {position.credited}, in "
                        f"progress {position.credit_in_progress})",
                        requested=total,
                        remaining=position.remaining,
                    )
            sequence = 1 + sum(1 for n in existing if n.note_kind == kind)
            taken = set(
                session.scalars(
                    sa.select(DOCS.c.reference).where(
                        DOCS.c.account_id == original.account_id,
                        DOCS.c.reference.like(f"{original.reference}/%"),
                    )
                )
            )
            reference = note_reference(original.reference, kind, sequence)
            while reference in taken:
                sequence += 1
                reference = note_reference(original.reference, kind, sequence)
            if len(reference) > 128:
                raise InvalidTransitionError(
                    f"the note reference {reference!r} would be longer than 128 characters"
                )
            session.execute(
                sa.insert(DOCS).values(
                    account_id=original.account_id,
                    reference=reference,
                    state=DocumentState.PENDING.value,
                    payload=payload,
                    payload_hash=payload_hash_of(payload),
                    source=source,
                    run_id=run_id,
                    attempts=0,
                    generation=1,
                    generation_sends=0,
                    original_pk=original_pk,
                    note_kind=kind,
                    created_at=now,
                    updated_at=now,
                )
            )
            row = session.execute(
                sa.select(DOCS).where(DOCS.c.account_id == original.account_id, DOCS.c.reference == reference)
            ).first()
            return dict(row._mapping), True

    def request_cancellation(self, pk: int) -> str | None:
        """A cancellation of row ``pk`` is being asked for (before the ``PUT``): ``cancellation_status``
        becomes ``requested`` (stamped now) unless one is pending or done already. Returns the status it
        had. Raises :class:`DocumentNotFoundError`."""
        now = self._now()
        with self._write.begin() as session:
            current = session.execute(
                sa.select(DOCS.c.cancellation_status).where(DOCS.c.id == pk).with_for_update()
            ).first()
            if current is None:
                raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
            before = current.cancellation_status
            if before not in (CancellationStatus.PENDING_ACCEPTANCE, CancellationStatus.CANCELLED):
                session.execute(
                    sa.update(DOCS)
                    .where(DOCS.c.id == pk)
                    .values(
                        cancellation_status=CancellationStatus.REQUESTED.value,
                        cancellation_requested_at=now,
                        updated_at=now,
                    )
                )
            return before

    def withdraw_cancellation_request(self, pk: int, previous: str | None) -> bool:
        """Koywe certainly did not act on the cancellation asked for (it refused the ``PUT``, or the
        request never reached it): a row still ``requested`` goes back to ``previous`` (what
        :meth:`request_cancellation` returned). Returns whether it changed."""
        now = self._now()
        with self._write.begin() as session:
            changed = session.execute(
                sa.update(DOCS)
                .where(DOCS.c.id == pk, DOCS.c.cancellation_status == CancellationStatus.REQUESTED.value)
                .values(cancellation_status=previous, updated_at=now)
            ).rowcount
        return bool(changed)

    def mark_deleted(self, pk: int, *, attempt: AttemptRecord | None = None) -> bool:
        """Koywe deleted the draft of row ``pk`` (or it was gone already): state ``deleted``, the
        generation's record closed (outcome ``deleted``), the attempt logged, in one transaction. Returns
        False when it was ``deleted`` already (the attempt is still logged).

        :raises InvalidTransitionError: the row is not a ``draft`` (Koywe deletes drafts only).
        :raises DocumentNotFoundError: no row ``pk``.
        """
        now = self._now()
        with self._write.begin() as session:
            row = session.execute(
                sa.select(DOCS.c.id, DOCS.c.state, DOCS.c.generation, DOCS.c.reference)
                .where(DOCS.c.id == pk)
                .with_for_update()
            ).first()
            if row is None:
                raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
            if attempt is not None:
                session.execute(
                    sa.insert(ATTEMPTS).values(**attempt.row(pk, at=now, generation=row.generation))
                )
            if row.state == DocumentState.DELETED:
                return False
            if row.state != DocumentState.DRAFT:
                raise InvalidTransitionError(
                    f"{row.reference} is {row.state}, not a draft: Koywe deletes drafts only"
                )
            session.execute(
                sa.update(DOCS)
                .where(DOCS.c.id == pk)
                .values(
                    state=DocumentState.DELETED.value,
                    last_error=None,
                    last_error_class=None,
                    next_attempt_at=None,
                    updated_at=now,
                    **CLEAR_LEASE,
                )
            )
            session.execute(
                sa.update(GENERATIONS)
                .where(GENERATIONS.c.document_pk == pk, GENERATIONS.c.generation == row.generation)
                .values(outcome=GenerationOutcome.DELETED.value, ended_at=now)
            )
            return True

    def register_external(
        self,
        *,
        account_id: str,
        reference: str,
        payload: dict[str, Any],
        folio: str,
        source: str = "external",
        run_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Record a document issued elsewhere (state ``external``, ``document_number`` = ``folio``) so that
        a note can reference it by folio. Never sent. Returns ``(row, created)``; the same reference and
        folio again is returned as it is.

        :raises InvalidTransitionError: the reference is in the ledger already as another document.
        :raises ValueError: an empty reference or folio, or a reference longer than 128 characters.
        """
        reference, folio, account_id = str(reference).strip(), str(folio).strip(), str(account_id).strip()
        if not reference or len(reference) > 128 or not folio:
            raise ValueError("an external original needs a reference (at most 128 characters) and a folio")
        now = self._now()
        with self._write.begin() as session:
            row = session.execute(
                sa.select(DOCS).where(DOCS.c.account_id == account_id, DOCS.c.reference == reference)
            ).first()
            if row is not None:
                if row.state == DocumentState.EXTERNAL and row.document_number == folio:
                    return dict(row._mapping), False
                raise InvalidTransitionError(
                    f"{reference} (account {account_id}) is in the ledger already as a {row.state} document"
                    + (f" with folio {row.document_number}" if row.document_number else "")
                )
            session.execute(
                sa.insert(DOCS).values(
                    account_id=account_id,
                    reference=reference,
                    state=DocumentState.EXTERNAL.value,
                    payload=payload,
                    payload_hash=payload_hash_of(payload),
                    source=cap(source, 512) or "external",
                    run_id=run_id,
                    attempts=0,
                    generation=1,
                    generation_sends=0,
                    document_number=cap(folio, 64),
                    document_status=DocumentStatus.ISSUED.value,
                    created_at=now,
                    updated_at=now,
                )
            )
            row = session.execute(
                sa.select(DOCS).where(DOCS.c.account_id == account_id, DOCS.c.reference == reference)
            ).first()
            return dict(row._mapping), True


__all__ = [
    "COUNTED_STATES",
    "EXISTING_STATES",
    "NOTE_SOURCE_PREFIX",
    "ORIGINAL_STATES",
    "CreditPosition",
    "NoteExceedsRemainingError",
    "NoteRecord",
    "NotesMixin",
]
