"""Outcomes: what happened to a claimed row (``mark_*``), re-queueing, and the attempts log.

Every ``mark_*`` locks the row, checks it, writes the new state, the current generation's record and
the optional :class:`AttemptRecord` in ONE transaction: an outcome and its attempt row are never
separated by a crash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from koywe_provider.ledger._sql import ATTEMPTS, CLEAR_LEASE, DOCS, cap, chunks, states_of
from koywe_provider.ledger.claims import ClaimsMixin, lock_row
from koywe_provider.ledger.errors import (
    DocumentNotFoundError,
    DuplicateKoyweDocumentError,
    InvalidTransitionError,
)
from koywe_provider.ledger.generations import (
    GenerationRow,
    holder_of,
    record_for,
    start_next_generations,
    upsert_record,
)
from koywe_provider.ledger.models import (
    ISSUED_STATES,
    AttemptKind,
    AttemptOutcome,
    DocumentState,
    GenerationOutcome,
    as_utc,
)
from koywe_provider.ledger.values import (
    STATUS_COLUMNS,
    TAXBUREAU_REJECTED_CLASS,
    DocumentFacts,
    exists_state,
    generation_outcome,
    merge_statuses,
    taxbureau_rejection_message,
)
from koywe_provider.models.statuses import ResultStatus

_REQUEUEABLE = frozenset(
    {DocumentState.REJECTED, DocumentState.DEAD, DocumentState.RETRYABLE, DocumentState.UNKNOWN}
)
#: Row columns that hold what Koywe said (written by mark_issued, mirrored on the generation record).
_FACT_COLUMNS = ("document_number", *STATUS_COLUMNS, "result_status", "result_error_message")


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One call made for a document, for the ``koywe_attempts`` log.

    :param kind: :class:`AttemptKind` (``create`` POST, ``lookup`` GET, ``status_update`` PUT).
    :param outcome: an :class:`AttemptOutcome` value (``issued``, ``rejected``, ``not_found`` …).
    :param http_status: Koywe's HTTP status (``None``: no answer).
    :param duration_ms: how long the call took, in milliseconds.
    :param error: what went wrong (a failure ``mark_*`` fills it with its ``error`` when ``None``).
    :param run_id: / :param task: the Airflow run and task that made the call.

    Raises ``ValueError`` for an unknown kind or outcome.
    """

    kind: AttemptKind
    outcome: str
    http_status: int | None = None
    duration_ms: int = 0
    error: str | None = None
    run_id: str | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", AttemptKind(self.kind))
        object.__setattr__(self, "outcome", AttemptOutcome(self.outcome))
        object.__setattr__(self, "duration_ms", max(0, int(self.duration_ms or 0)))

    def row(
        self, pk: int, *, at: datetime, generation: int | None, error: str | None = None
    ) -> dict[str, Any]:
        """The ``koywe_attempts`` row of this attempt on document ``pk`` (``error``: used when the
        attempt carries none)."""
        return {
            "document_pk": pk,
            "attempted_at": at,
            "kind": self.kind.value,
            "outcome": str(self.outcome),
            "http_status": self.http_status,
            "duration_ms": self.duration_ms,
            "error": self.error if self.error is not None else error,
            "run_id": self.run_id,
            "task": self.task,
            "generation": generation,
        }


def _insert_attempt(
    session: Session, row: Any, attempt: AttemptRecord | None, now: datetime, error: str | None = None
) -> None:
    if attempt is not None:
        session.execute(
            sa.insert(ATTEMPTS).values(**attempt.row(row.id, at=now, generation=row.generation, error=error))
        )


def _duplicate(row: Any, koywe_document_id: str, holder: str) -> DuplicateKoyweDocumentError:
    return DuplicateKoyweDocumentError(
        f"Koywe document {koywe_document_id} is already recorded for {holder}; refusing to record it "
        f"for reference {row.reference!r} (account {row.account_id!r}, ledger id {row.id}): possible "
        f"duplicate issuance, a person must decide",
        koywe_document_id=koywe_document_id,
        reference=row.reference,
        other_reference=holder,
    )


def _update_holding_koywe_id(session: Session, row: Any, koywe_document_id: str, values: dict) -> None:
    """UPDATE row with ``values`` (which set ``koywe_document_id``), refusing a Koywe id that another
    row or generation holds (:class:`DuplicateKoyweDocumentError`; the unique index catches a concurrent
    writer the check could not see) or a second Koywe document for the same generation
    (:class:`InvalidTransitionError`)."""
    record = record_for(session, row.id, row.generation, lock=True)
    if record is not None and record.koywe_document_id not in (None, koywe_document_id):
        # One generation is one Koywe document: another one needs a new generation (a re-queue).
        raise InvalidTransitionError(
            f"generation {row.generation} of document {row.id} is Koywe document "
            f"{record.koywe_document_id}, not {koywe_document_id}: possible duplicate issuance"
        )
    holder = holder_of(session, koywe_document_id, pk=row.id, generation=row.generation)
    if holder is not None:
        raise _duplicate(row, koywe_document_id, holder)
    try:
        with session.begin_nested():
            session.execute(sa.update(DOCS).where(DOCS.c.id == row.id).values(**values))
    except IntegrityError as exc:
        holder = holder_of(session, koywe_document_id, pk=row.id, generation=row.generation)
        raise _duplicate(row, koywe_document_id, holder or "another ledger row") from exc


class OutcomesMixin(ClaimsMixin):
    """``mark_issued``, ``mark_rejected``, ``mark_retryable``, ``mark_unknown``, ``mark_dead``,
    ``mark_held``, :meth:`requeue` and :meth:`record_attempt`."""

    def mark_issued(
        self,
        pk: int,
        *,
        facts: DocumentFacts,
        owner: str | None = None,
        adopted: bool = False,
        attempt: AttemptRecord | None = None,
    ) -> DocumentState:
        """Koywe holds the document ``facts.koywe_document_id`` for the row's current generation: store
        every fact on the row and on the generation's record; lease, errors and ``next_attempt_at``
        cleared; ``issued_at`` set (kept if set). Returns the new state:

        - ``not_sent`` when ``facts.result_status == 2`` (generated, not sent to the tax bureau) and the
          bureau has neither received nor accepted it;
        - ``draft`` when ``document_status == 0``;
        - ``rejected`` (``last_error_class`` ``taxbureau_rejected``) when the bureau already rejected it
          (validation 2/5: an adopted document can arrive so);
        - ``issued`` otherwise.

        When the row already holds the same Koywe id (a refresh, an adoption after a lost answer) the
        statuses merge forwards only and ``None`` facts keep the stored values; a new Koywe id takes the
        facts as they are. ``adopted``: found by a lookup rather than created by our POST (no
        difference in the row; say so in ``attempt``). ``owner``: when given the row must be
        ``in_flight`` under that lease.

        Raises ``ValueError`` when ``facts.koywe_document_id`` is ``None``/empty (a 2xx without a
        document id must be recorded as unknown, never issued); :class:`InvalidTransitionError` when
        the row already holds ANOTHER Koywe document in issued/draft/not_sent, or its current
        generation's record names another one (a new document needs a new generation);
        :class:`DuplicateKoyweDocumentError` when another row (or another generation) holds this Koywe
        id — nothing is written, the row stays as it was (``in_flight`` and held by the caller);
        :class:`LeaseLostError`; :class:`DocumentNotFoundError`.
        """
        if not facts.has_document_id:
            raise ValueError(
                f"document {pk}: Koywe's answer has no document_id; record it as unknown (look it up "
                "later), never as issued"
            )
        new_id = str(facts.koywe_document_id)
        _ = adopted  # the row is the same either way; the attempt's kind and outcome tell them apart
        now = self._now()
        with self._write.begin() as session:
            row = lock_row(session, pk, owner=owner)
            if row.state in ISSUED_STATES and row.koywe_document_id and row.koywe_document_id != new_id:
                raise InvalidTransitionError(
                    f"document {pk} is already {row.state} as Koywe document {row.koywe_document_id}, "
                    f"not {new_id}: possible duplicate issuance"
                )
            if row.koywe_document_id == new_id:
                stored = {name: getattr(row, name) for name in _FACT_COLUMNS}
                merged = {**stored, **merge_statuses(stored, facts)}
            else:
                merged = {name: getattr(facts, name) for name in _FACT_COLUMNS}
            state = exists_state(merged)
            values: dict[str, Any] = {
                "state": state.value,
                "koywe_document_id": new_id,
                **merged,
                "error_field": None,
                "next_attempt_at": None,
                "issued_at": row.issued_at or now,
                "updated_at": now,
                **CLEAR_LEASE,
            }
            if state is DocumentState.REJECTED:
                values["last_error_class"] = TAXBUREAU_REJECTED_CLASS
                values["last_error"] = taxbureau_rejection_message(
                    merged.get("taxbureau_validation_status"), merged.get("taxbureau_validation_comments")
                )
            else:
                values["last_error_class"] = values["last_error"] = None
            _update_holding_koywe_id(session, row, new_id, values)
            upsert_record(
                session,
                pk=pk,
                reference=row.reference,
                generation=row.generation,
                values={
                    "koywe_document_id": new_id,
                    **merged,
                    "payload_hash": row.payload_hash,
                    "outcome": generation_outcome(state.value, values["last_error_class"]),
                    "ended_at": now if state is DocumentState.REJECTED else None,
                },
                started_at=row.created_at if row.generation == 1 else now,
            )
            _insert_attempt(session, row, attempt, now)
        return state

    def mark_rejected(
        self,
        pk: int,
        *,
        error: str,
        error_class: str,
        owner: str | None = None,
        facts: DocumentFacts | None = None,
        error_field: str | None = None,
        attempt: AttemptRecord | None = None,
    ) -> None:
        """Koywe refused it (HTTP 400, or 2xx with ``result.status == 1``): state ``rejected``; lease and
        ``next_attempt_at`` cleared; the current generation's record is closed (outcome ``rejected``).

        ``facts``: what Koywe said, e.g. the ``document_id`` and ``result_status``/
        ``result_error_message`` of a document it created anyway with ``result.status == 1`` (stored on
        the row and the record; ``None`` fields keep the row's values). ``error_field``: the payload
        field at fault. A re-queue (or an ingested correction) of a rejected row starts a new generation.

        Raises ``ValueError`` when ``facts`` say ``result.status == 2`` with a document id (that
        document exists: record it with :meth:`mark_issued`, state ``not_sent``);
        :class:`InvalidTransitionError` on an issued/draft/not_sent row; :class:`LeaseLostError` when
        ``owner`` is given and does not hold the row; :class:`DuplicateKoyweDocumentError` when another
        row holds ``facts.koywe_document_id``; :class:`DocumentNotFoundError`.
        """
        if facts is not None and facts.has_document_id and facts.result_status == ResultStatus.NOT_SENT:
            raise ValueError(
                f"document {pk}: Koywe generated document {facts.koywe_document_id} (result.status 2, not "
                "sent to the tax bureau yet); it exists: record it with mark_issued (state not_sent)"
            )
        now = self._now()
        with self._write.begin() as session:
            row = lock_row(session, pk, owner=owner)
            self._refuse_downgrade(row)
            values: dict[str, Any] = {
                "state": DocumentState.REJECTED.value,
                "last_error": error,
                "last_error_class": cap(error_class, 64),
                "error_field": cap(error_field, 256),
                "next_attempt_at": None,
                "updated_at": now,
                **CLEAR_LEASE,
            }
            record: dict[str, Any] = {
                "payload_hash": row.payload_hash,
                "outcome": GenerationOutcome.REJECTED.value,
                "ended_at": now,
            }
            if facts is not None:
                known = {
                    name: getattr(facts, name)
                    for name in ("koywe_document_id", *_FACT_COLUMNS)
                    if getattr(facts, name) is not None
                }
                if not facts.has_document_id:
                    known.pop("koywe_document_id", None)
                values.update(known)
                record.update(known)
            if values.get("koywe_document_id"):
                _update_holding_koywe_id(session, row, values["koywe_document_id"], values)
            else:
                session.execute(sa.update(DOCS).where(DOCS.c.id == pk).values(**values))
            upsert_record(
                session,
                pk=pk,
                reference=row.reference,
                generation=row.generation,
                values=record,
                started_at=row.created_at if row.generation == 1 else now,
            )
            _insert_attempt(session, row, attempt, now, error)

    def mark_retryable(
        self,
        pk: int,
        *,
        error: str,
        error_class: str,
        next_attempt_at: datetime,
        owner: str | None = None,
        attempt: AttemptRecord | None = None,
    ) -> None:
        """Try again later (429, 5xx, refused before send): state ``retryable`` due at ``next_attempt_at``
        (aware datetime; naive = UTC). Lease cleared. Errors as :meth:`mark_rejected`."""
        self._mark_failed(
            pk,
            DocumentState.RETRYABLE,
            error=error,
            error_class=error_class,
            extra={"next_attempt_at": as_utc(next_attempt_at)},
            owner=owner,
            attempt=attempt,
        )

    def mark_unknown(
        self,
        pk: int,
        *,
        error: str,
        error_class: str,
        next_attempt_at: datetime | None = None,
        owner: str | None = None,
        attempt: AttemptRecord | None = None,
    ) -> None:
        """The POST may or may not have reached Koywe (timeout, dropped connection, a 2xx without a
        document id): state ``unknown`` (look it up by its Koywe reference before any resend), due at
        ``next_attempt_at`` (``None``: at once). Lease cleared. Errors as :meth:`mark_rejected`."""
        self._mark_failed(
            pk,
            DocumentState.UNKNOWN,
            error=error,
            error_class=error_class,
            extra={"next_attempt_at": as_utc(next_attempt_at)},
            owner=owner,
            attempt=attempt,
        )

    def mark_dead(
        self,
        pk: int,
        *,
        error: str,
        error_class: str,
        owner: str | None = None,
        attempt: AttemptRecord | None = None,
    ) -> None:
        """Give up (too many attempts): state ``dead``; lease and ``next_attempt_at`` cleared. Errors as
        :meth:`mark_rejected`. A person re-queues it (:meth:`requeue`) for one more try."""
        self._mark_failed(
            pk,
            DocumentState.DEAD,
            error=error,
            error_class=error_class,
            extra={"next_attempt_at": None},
            owner=owner,
            attempt=attempt,
        )

    def mark_held(
        self,
        pk: int,
        *,
        error: str,
        error_class: str,
        owner: str | None = None,
        attempt: AttemptRecord | None = None,
    ) -> None:
        """A row a person must look at; nothing will be sent for it automatically (e.g.
        ``error_class`` ``DuplicateAlarm``: several Koywe documents carry its reference;
        ``ContentMismatchAlarm``: the one found is not ours). Stored as state ``dead`` with
        ``last_error_class = error_class`` and ``error`` in ``last_error``; lease and
        ``next_attempt_at`` cleared; the generation is kept (a re-queue looks it up first). Errors as
        :meth:`mark_rejected`."""
        self._mark_failed(
            pk,
            DocumentState.DEAD,
            error=error,
            error_class=error_class,
            extra={"next_attempt_at": None},
            owner=owner,
            attempt=attempt,
        )

    def _refuse_downgrade(self, row: Any) -> None:
        if row.state in ISSUED_STATES:
            raise InvalidTransitionError(
                f"document {row.id} is {row.state} (a Koywe document exists); refusing this change"
            )

    def _mark_failed(
        self,
        pk: int,
        state: DocumentState,
        *,
        error: str,
        error_class: str,
        extra: dict[str, Any],
        owner: str | None,
        attempt: AttemptRecord | None,
    ) -> None:
        now = self._now()
        with self._write.begin() as session:
            row = lock_row(session, pk, owner=owner)
            self._refuse_downgrade(row)
            session.execute(
                sa.update(DOCS)
                .where(DOCS.c.id == pk)
                .values(
                    state=state.value,
                    last_error=error,
                    last_error_class=cap(error_class, 64),
                    updated_at=now,
                    **CLEAR_LEASE,
                    **extra,
                )
            )
            _insert_attempt(session, row, attempt, now, error)

    def requeue(
        self,
        references: list[str] | None = None,
        *,
        states: Iterable[str | DocumentState] = (DocumentState.REJECTED, DocumentState.DEAD),
        account_id: str | None = None,
    ) -> int:
        """Put rows back to ``pending`` (``attempts`` kept; errors, lease and ``next_attempt_at``
        cleared). Selects rows in ``states`` and, when given, with those ``references`` and/or that
        ``account_id``. Returns how many rows changed.

        A ``rejected`` row starts a NEW generation: ``generation += 1``, ``generation_sends = 0``, its
        Koywe id, folio, statuses and result fields cleared on the row (the previous generation's record
        keeps them and gets ``ended_at``); it is POSTed under the new Koywe reference without a lookup.
        A ``dead``/``retryable``/``unknown`` row keeps its generation (a POST of it may be at Koywe):
        with ``generation_sends > 0`` it is looked up before it is POSTed again
        (``ClaimedDocument.needs_lookup``). Raises ``ValueError`` for states other than rejected, dead,
        retryable, unknown.
        """
        wanted = states_of(states)
        bad = [s.value for s in wanted if s not in _REQUEUEABLE]
        if bad:
            raise ValueError(f"cannot requeue state(s) {bad}; allowed: {sorted(_REQUEUEABLE)}")
        now = self._now()
        base = []
        if account_id is not None:
            base.append(DOCS.c.account_id == account_id)
        values = {
            "state": DocumentState.PENDING.value,
            "last_error": None,
            "last_error_class": None,
            "error_field": None,
            "next_attempt_at": None,
            "updated_at": now,
            **CLEAR_LEASE,
        }
        keep = [s.value for s in wanted if s is not DocumentState.REJECTED]
        renew = DocumentState.REJECTED in wanted
        reference_sets: Iterable[list[str] | None] = (
            [None] if references is None else chunks(dict.fromkeys(references), 500)
        )
        changed = 0
        with self._write.begin() as session:
            for chunk in reference_sets:
                where = list(base)
                if chunk is not None:
                    where.append(DOCS.c.reference.in_(chunk))
                if keep:
                    stmt = sa.update(DOCS).where(DOCS.c.state.in_(keep), *where).values(**values)
                    changed += session.execute(stmt).rowcount
                if renew:
                    changed += self._renew_rejected(session, where, now, values)
        return changed

    @staticmethod
    def _renew_rejected(session: Session, where: list[Any], now: datetime, values: dict[str, Any]) -> int:
        rows = [
            GenerationRow(r.id, r.reference, r.generation, r.payload_hash, r.created_at)
            for r in session.execute(
                sa.select(
                    DOCS.c.id, DOCS.c.reference, DOCS.c.generation, DOCS.c.payload_hash, DOCS.c.created_at
                )
                .where(DOCS.c.state == DocumentState.REJECTED.value, *where)
                .order_by(DOCS.c.id)
                .with_for_update()
            )
        ]
        start_next_generations(session, rows, now, row_values=values)
        return len(rows)

    def record_attempt(self, pk: int, attempt: AttemptRecord) -> None:
        """Append one ``koywe_attempts`` row without changing the document (e.g. a lookup that found
        nothing: kind ``lookup``, outcome ``not_found``), stamped with the row's current generation.
        Raises :class:`DocumentNotFoundError` for an unknown ``pk``."""
        now = self._now()
        with self._write.begin() as session:
            generation = session.scalar(sa.select(DOCS.c.generation).where(DOCS.c.id == pk))
            if generation is None:
                raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
            session.execute(sa.insert(ATTEMPTS).values(**attempt.row(pk, at=now, generation=generation)))


__all__ = ["AttemptRecord", "OutcomesMixin"]
