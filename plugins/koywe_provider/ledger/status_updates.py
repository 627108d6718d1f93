"""Koywe's status news applied to ledger rows and generation records, forwards only.

News arrives as :class:`~koywe_provider.ledger.values.DocumentFacts` from a ``DOCUMENT.STATUSUPDATE``
callback, a polling pass, a sensor or the answer to a ``PUT /documents/{id}``; the same news can arrive
twice and out of order, so every field keeps its most advanced value
(:func:`~koywe_provider.ledger.values.merge_statuses`): a repeated or late message never moves a
document backwards.

A report is matched by ``koywe_document_id``: to the row whose current generation holds it (the row
and its generation record are updated, and its state may move), else to the record of an earlier
generation (only that record is updated; the row, which has moved on, is left alone). State moves of a
row whose Koywe document exists (``issued``, ``draft``, ``not_sent``):

- tax bureau rejected it (validation 2/5) → ``rejected``, ``last_error_class`` ``taxbureau_rejected``,
  the bureau's comments in ``last_error`` (Koywe: fix it and issue it again, a new generation);
- ``not_sent`` whose bureau received (sending 1) or accepted (validation 3/4) it → ``issued``;
- ``draft`` whose ``document_status`` became 1 → ``issued``;
- ``issued`` stays ``issued``; a cancellation (``document_status`` 2) is recorded, and a Mexico
  cancellation's progress (``cancellation_status``: requested → pending_acceptance → refused | cancelled)
  moves forwards only (:func:`~koywe_provider.ledger.values.merge_cancellation`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from koywe_provider.ledger._sql import ATTEMPTS, DOCS, GENERATIONS, chunks
from koywe_provider.ledger.errors import DocumentNotFoundError
from koywe_provider.ledger.generations import holder_of, upsert_record
from koywe_provider.ledger.models import AttemptKind, CancellationStatus, DocumentState, GenerationOutcome
from koywe_provider.ledger.outcomes import AttemptRecord
from koywe_provider.ledger.queries import FOLLOWED_STATES, AwaitingDocuments
from koywe_provider.ledger.values import (
    STATUS_COLUMNS,
    TAXBUREAU_REJECTED_CLASS,
    DocumentFacts,
    exists_state,
    generation_outcome,
    is_validation_accepted,
    is_validation_rejected,
    merge_cancellation,
    merge_statuses,
    taxbureau_rejection_message,
)
from koywe_provider.models.statuses import DocumentStatus

if TYPE_CHECKING:
    from koywe_provider.ledger.ledger import Ledger

#: ``koywe_attempts.kind`` of a ``PUT /documents/{id}``.
ATTEMPT_KIND_STATUS = AttemptKind.STATUS_UPDATE
#: Columns a report may change (row and record alike).
_MERGED = ("document_number", *STATUS_COLUMNS, "result_status", "result_error_message")
#: Generation outcomes that a later tax-bureau rejection overrides.
_OPEN_OUTCOMES = (
    None,
    GenerationOutcome.ISSUED.value,
    GenerationOutcome.NOT_SENT.value,
    GenerationOutcome.DRAFT.value,
)


@dataclass(slots=True)
class ApplyCounts:
    """Outcome of :func:`apply_status_reports`: Koywe documents ``matched`` to a ledger row or an
    earlier generation's record (``unmatched`` otherwise; ``earlier_generations`` of the matched were
    earlier generations), documents ``changed``/``unchanged``, rows the tax bureau ``accepted`` or
    ``rejected`` in this call, and rows that went from ``draft`` (``drafts_issued``) or ``not_sent``
    (``not_sent_issued``) to ``issued``."""

    matched: int = 0
    unmatched: int = 0
    changed: int = 0
    unchanged: int = 0
    accepted: int = 0
    rejected: int = 0
    drafts_issued: int = 0
    not_sent_issued: int = 0
    earlier_generations: int = 0
    #: Mexico cancellations that became ``cancelled`` / ``refused`` in this call.
    cancelled: int = 0
    cancellation_refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _fold(stored: dict[str, Any], facts: list[DocumentFacts]) -> dict[str, Any]:
    """Every change ``facts`` (in order) make to ``stored``, forwards only."""
    current = dict(stored)
    for item in facts:
        current.update(merge_statuses(current, item))
    return {k: v for k, v in current.items() if v != stored.get(k)}


def state_values(state: str, merged: dict[str, Any]) -> dict[str, Any]:
    """The state columns a row in ``state`` gets once its statuses are ``merged`` (``{}``: no move)."""
    if state not in FOLLOWED_STATES:
        return {}
    validation = merged.get("taxbureau_validation_status")
    if is_validation_rejected(validation):
        return {
            "state": DocumentState.REJECTED.value,
            "last_error_class": TAXBUREAU_REJECTED_CLASS,
            "last_error": taxbureau_rejection_message(
                validation, merged.get("taxbureau_validation_comments")
            ),
        }
    if state == DocumentState.NOT_SENT:
        target = exists_state(merged)
        if target in (DocumentState.ISSUED, DocumentState.DRAFT):
            return {"state": target.value}
    if state == DocumentState.DRAFT and merged.get("document_status") not in (None, DocumentStatus.DRAFT):
        return {"state": DocumentState.ISSUED.value}
    return {}


#: ``source`` of :func:`apply_status_reports` whose news a ``DOCUMENT.STATUSUPDATE`` callback should have
#: brought first (stamped ``last_polled_news_at``: the reconciliation counts callbacks that never came).
POLLING_SOURCES = frozenset({"polling", "sensor"})
CALLBACK_SOURCE = "callback"


def _source_stamps(source: str | None, changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    """``last_callback_at`` for every callback (news or not), ``last_polled_news_at`` when polling
    brought status news."""
    if source == CALLBACK_SOURCE:
        return {"last_callback_at": now}
    if source in POLLING_SOURCES and any(name in changes for name in STATUS_COLUMNS):
        return {"last_polled_news_at": now}
    return {}


def _apply_to_row(
    session: Session,
    row: Any,
    facts: list[DocumentFacts],
    now: datetime,
    counts: ApplyCounts,
    source: str | None = None,
) -> None:
    stored = {name: getattr(row, name) for name in _MERGED}
    changes = _fold(stored, facts)
    merged = {**stored, **changes}
    values = {**changes, **state_values(row.state, merged)}
    cancellation = merge_cancellation(
        row.cancellation_status, merged.get("document_status"), [f.cancellation_status for f in facts]
    )
    if cancellation is not None:
        values["cancellation_status"] = cancellation
        counts.cancelled += cancellation == CancellationStatus.CANCELLED
        counts.cancellation_refused += cancellation == CancellationStatus.REFUSED
    stamps = _source_stamps(source, changes, now)
    if not values:
        counts.unchanged += 1
        if stamps:
            session.execute(sa.update(DOCS).where(DOCS.c.id == row.id).values(**stamps))
        return
    values.update(stamps)
    counts.changed += 1
    new_state = values.get("state", row.state)
    if new_state == DocumentState.REJECTED and row.state != DocumentState.REJECTED:
        counts.rejected += 1
    elif is_validation_accepted(changes.get("taxbureau_validation_status")):
        counts.accepted += 1
    if new_state == DocumentState.ISSUED and row.state == DocumentState.DRAFT:
        counts.drafts_issued += 1
    if new_state == DocumentState.ISSUED and row.state == DocumentState.NOT_SENT:
        counts.not_sent_issued += 1
    session.execute(sa.update(DOCS).where(DOCS.c.id == row.id).values(updated_at=now, **values))
    record = {"koywe_document_id": row.koywe_document_id, **merged, "payload_hash": row.payload_hash}
    outcome = generation_outcome(new_state, values.get("last_error_class", row.last_error_class))
    if outcome is not None:
        record["outcome"] = outcome.value
    if new_state == DocumentState.REJECTED and row.state != DocumentState.REJECTED:
        record["ended_at"] = now
    upsert_record(
        session,
        pk=row.id,
        reference=row.reference,
        generation=row.generation,
        values=record,
        started_at=row.created_at if row.generation == 1 else now,
    )


def _apply_to_record(session: Session, record: Any, facts: list[DocumentFacts], counts: ApplyCounts) -> None:
    stored = {name: getattr(record, name) for name in _MERGED}
    changes = _fold(stored, facts)
    merged = {**stored, **changes}
    if record.outcome in _OPEN_OUTCOMES and is_validation_rejected(merged.get("taxbureau_validation_status")):
        changes["outcome"] = GenerationOutcome.TAXBUREAU_REJECTED.value
    if not changes:
        counts.unchanged += 1
        return
    counts.changed += 1
    session.execute(sa.update(GENERATIONS).where(GENERATIONS.c.id == record.id).values(**changes))


def _apply(
    session: Session,
    grouped: dict[str, list[DocumentFacts]],
    now: datetime,
    counts: ApplyCounts,
    source: str | None = None,
) -> None:
    for chunk in chunks(grouped, 500):
        rows = session.execute(
            sa.select(*(c for c in DOCS.c if c.name not in ("payload", "raw_line")))
            .where(DOCS.c.koywe_document_id.in_(chunk))
            .order_by(DOCS.c.id)
            .with_for_update()
        ).all()
        found: set[str] = set()
        for row in rows:
            found.add(row.koywe_document_id)
            counts.matched += 1
            _apply_to_row(session, row, grouped[row.koywe_document_id], now, counts, source)
        rest = [koywe_id for koywe_id in chunk if koywe_id not in found]
        if rest:
            records = session.execute(
                sa.select(GENERATIONS)
                .where(GENERATIONS.c.koywe_document_id.in_(rest))
                .order_by(GENERATIONS.c.id)
                .with_for_update()
            ).all()
            for record in records:
                if record.koywe_document_id in found:
                    continue  # the same Koywe id on two records: the first one is enough
                found.add(record.koywe_document_id)
                counts.matched += 1
                counts.earlier_generations += 1
                _apply_to_record(session, record, grouped[record.koywe_document_id], counts)
        counts.unmatched += len(set(chunk) - found)


def _group(facts: Iterable[DocumentFacts], counts: ApplyCounts) -> dict[str, list[DocumentFacts]]:
    grouped: dict[str, list[DocumentFacts]] = {}
    for item in facts:
        if not item.has_document_id:
            counts.unmatched += 1
            continue
        grouped.setdefault(str(item.koywe_document_id), []).append(item)
    return grouped


def apply_status_reports(
    ledger: Ledger, facts: Iterable[DocumentFacts], *, source: str | None = None
) -> ApplyCounts:
    """Write ``facts`` into the rows (or earlier generations) holding the same ``koywe_document_id``,
    forwards only, idempotently (see the module docstring for the state moves).

    One transaction per 500 Koywe documents; the matched rows and records are locked (``FOR UPDATE``
    in id order on PostgreSQL, the write lock on SQLite) while they are compared and updated, so a
    callback and a polling pass that race cannot move a row backwards. Several reports for the same
    document are merged in order. Reports for documents the ledger does not know (or without a
    document id) are counted in ``unmatched`` and otherwise ignored. Repeating a call changes nothing
    (``unchanged``).

    ``source`` says where the news came from: ``"callback"`` stamps the rows' ``last_callback_at``
    (news or not); ``"polling"``/``"sensor"`` stamp ``last_polled_news_at`` on rows whose statuses they
    changed (news a callback should have brought: the reconciliation counts those no callback followed);
    ``None`` or any other source stamps nothing.
    """
    counts = ApplyCounts()
    grouped = _group(facts, counts)
    now = ledger._now()
    for chunk in chunks(grouped, 500):
        with ledger._write.begin() as session:
            _apply(session, {k: grouped[k] for k in chunk}, now, counts, source)
    return counts


def record_status_change(
    ledger: Ledger, pk: int, facts: DocumentFacts, attempt: AttemptRecord
) -> ApplyCounts:
    """Record a ``PUT /documents/{id}`` on row ``pk``, in ONE transaction: the ``attempt`` row (kind
    ``status_update``; outcome e.g. ``issued``, ``cancelled``, ``already_applied``, ``rejected``; the
    operator's reason in its ``error``) and the statuses KOYWE ANSWERED (``facts``; never the requested
    target), merged forwards only as in :func:`apply_status_reports` into whichever row or generation
    holds ``facts.koywe_document_id``.

    A row found by reference that holds no Koywe id gets ``facts.koywe_document_id`` when no row or
    generation holds it yet. Raises :class:`DocumentNotFoundError` for an unknown ``pk``.
    """
    counts = ApplyCounts()
    now = ledger._now()
    with ledger._write.begin() as session:
        row = session.execute(
            sa.select(DOCS.c.id, DOCS.c.generation, DOCS.c.koywe_document_id)
            .where(DOCS.c.id == pk)
            .with_for_update()
        ).first()
        if row is None:
            raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
        if row.koywe_document_id is None and facts.has_document_id:
            koywe_id = str(facts.koywe_document_id)
            if holder_of(session, koywe_id, pk=pk, generation=row.generation) is None:
                session.execute(
                    sa.update(DOCS).where(DOCS.c.id == pk).values(koywe_document_id=koywe_id, updated_at=now)
                )
        session.execute(sa.insert(ATTEMPTS).values(**attempt.row(pk, at=now, generation=row.generation)))
        grouped = _group([facts], counts)
        if grouped:
            _apply(session, grouped, now, counts)
    return counts


def find_by_koywe_document_id(
    ledger: Ledger, koywe_document_id: str | int, *, include_earlier_generations: bool = False
) -> dict[str, Any] | None:
    """:meth:`Ledger.find_by_koywe_document_id <koywe_provider.ledger.queries.QueriesMixin.find_by_koywe_document_id>`."""
    return ledger.find_by_koywe_document_id(
        koywe_document_id, include_earlier_generations=include_earlier_generations
    )


def awaiting_taxbureau(ledger: Ledger, *, limit: int = 100_000) -> AwaitingDocuments:
    """:meth:`Ledger.awaiting_taxbureau <koywe_provider.ledger.queries.QueriesMixin.awaiting_taxbureau>`."""
    return ledger.awaiting_taxbureau(limit=limit)


def taxbureau_rejections(ledger: Ledger, *, limit: int = 1000) -> list[dict[str, Any]]:
    """:meth:`Ledger.taxbureau_rejections <koywe_provider.ledger.queries.QueriesMixin.taxbureau_rejections>`."""
    return ledger.taxbureau_rejections(limit=limit)


__all__ = [
    "ATTEMPT_KIND_STATUS",
    "CALLBACK_SOURCE",
    "POLLING_SOURCES",
    "FOLLOWED_STATES",
    "TAXBUREAU_REJECTED_CLASS",
    "ApplyCounts",
    "AwaitingDocuments",
    "DocumentFacts",
    "apply_status_reports",
    "awaiting_taxbureau",
    "find_by_koywe_document_id",
    "record_status_change",
    "state_values",
    "taxbureau_rejections",
]
