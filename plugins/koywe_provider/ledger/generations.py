"""Generations of a document: what was sent under each Koywe reference, and starting the next one.

A row's current generation lives on the row (``generation``, ``generation_sends``, the Koywe fields);
``koywe_document_generations`` keeps one record per (row, generation) with what Koywe said about it.
A ``rejected`` row that is re-queued or corrected starts generation ``n + 1``: the row forgets the
refused document (its record keeps it) and is sent under the Koywe reference ``<reference>~<n + 1>``,
so a lookup never adopts the refused document back.

Every function here runs inside the caller's transaction, on rows the caller has locked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from koywe_provider.ledger._sql import DOCS, GENERATIONS, KOYWE_FIELDS, Executor, chunks
from koywe_provider.ledger.models import GenerationOutcome
from koywe_provider.models.references import koywe_reference

#: Columns a generation record shares with the row (what Koywe said about that generation's document).
RECORD_FIELDS: tuple[str, ...] = KOYWE_FIELDS


@dataclass(frozen=True, slots=True)
class GenerationRow:
    """What starting the next generation needs to know about a row."""

    id: int
    reference: str
    generation: int
    payload_hash: str | None
    created_at: datetime


def record_for(ex: Executor, pk: int, generation: int, *, lock: bool = False) -> Any:
    """The record of ``(pk, generation)`` (all columns) or ``None``; ``lock``: ``FOR UPDATE``."""
    stmt = sa.select(GENERATIONS).where(
        GENERATIONS.c.document_pk == pk, GENERATIONS.c.generation == generation
    )
    if lock:
        stmt = stmt.with_for_update()
    return ex.execute(stmt).first()


def upsert_record(
    ex: Executor,
    *,
    pk: int,
    reference: str,
    generation: int,
    values: Mapping[str, Any],
    started_at: datetime,
) -> None:
    """Update the record of ``(pk, generation)`` with ``values``, or create it (``started_at`` is used
    only then). ``values`` are record columns (:data:`RECORD_FIELDS`, ``payload_hash``, ``outcome``,
    ``ended_at``)."""
    existing = record_for(ex, pk, generation, lock=True)
    if existing is not None:
        if values:
            ex.execute(sa.update(GENERATIONS).where(GENERATIONS.c.id == existing.id).values(**values))
        return
    ex.execute(
        sa.insert(GENERATIONS).values(
            document_pk=pk,
            generation=generation,
            koywe_reference=koywe_reference(reference, generation),
            started_at=started_at,
            **values,
        )
    )


def new_generation_values(generation: int) -> dict[str, Any]:
    """Row columns of a row that moves from ``generation`` to the next one: counters reset, the Koywe
    fields of the earlier document cleared (its record keeps them)."""
    return {
        "generation": generation + 1,
        "generation_sends": 0,
        "issued_at": None,
        **dict.fromkeys(KOYWE_FIELDS),
    }


def start_next_generations(
    ex: Executor, rows: Sequence[GenerationRow], now: datetime, *, row_values: Mapping[str, Any]
) -> None:
    """Move every row of ``rows`` (locked by the caller) to its next generation, in bulk.

    The current generation's record is closed (``ended_at`` = ``now``; ``outcome`` ``superseded``
    unless Koywe's outcome is recorded) or created closed when it never had one; the row gets
    :func:`new_generation_values` plus ``row_values``; and the new generation's record is opened with
    the row's ``payload_hash``.
    """
    for chunk in chunks(rows, 500):
        ids = [r.id for r in chunk]
        ex.execute(
            sa.update(GENERATIONS)
            .where(GENERATIONS.c.document_pk.in_(ids), GENERATIONS.c.ended_at.is_(None))
            .values(ended_at=now)
        )
        ex.execute(
            sa.update(GENERATIONS)
            .where(GENERATIONS.c.document_pk.in_(ids), GENERATIONS.c.outcome.is_(None))
            .values(outcome=GenerationOutcome.SUPERSEDED.value)
        )
        recorded = {
            (r.document_pk, r.generation)
            for r in ex.execute(
                sa.select(GENERATIONS.c.document_pk, GENERATIONS.c.generation).where(
                    GENERATIONS.c.document_pk.in_(ids)
                )
            )
        }
        missing = [
            {
                "document_pk": r.id,
                "generation": r.generation,
                "koywe_reference": koywe_reference(r.reference, r.generation),
                "payload_hash": None,
                "outcome": GenerationOutcome.SUPERSEDED.value,
                "started_at": r.created_at if r.generation == 1 else now,
                "ended_at": now,
            }
            for r in chunk
            if (r.id, r.generation) not in recorded
        ]
        if missing:
            ex.execute(sa.insert(GENERATIONS), missing)
        for generation in sorted({r.generation for r in chunk}):
            same = [r.id for r in chunk if r.generation == generation]
            ex.execute(
                sa.update(DOCS)
                .where(DOCS.c.id.in_(same))
                .values(**new_generation_values(generation), **row_values)
            )
        ex.execute(
            sa.insert(GENERATIONS),
            [
                {
                    "document_pk": r.id,
                    "generation": r.generation + 1,
                    "koywe_reference": koywe_reference(r.reference, r.generation + 1),
                    "payload_hash": r.payload_hash,
                    "started_at": now,
                }
                for r in chunk
            ],
        )


def holder_of(ex: Executor, koywe_document_id: str, *, pk: int, generation: int) -> str | None:
    """A description of who else holds Koywe document ``koywe_document_id`` (another row, or another
    generation of row ``pk``), or ``None`` when nobody but ``(pk, generation)`` does."""
    other = ex.execute(
        sa.select(DOCS.c.id, DOCS.c.account_id, DOCS.c.reference).where(
            DOCS.c.koywe_document_id == koywe_document_id, DOCS.c.id != pk
        )
    ).first()
    if other is not None:
        return f"reference {other.reference!r} (account {other.account_id!r}, ledger id {other.id})"
    record = ex.execute(
        sa.select(GENERATIONS.c.document_pk, GENERATIONS.c.generation, GENERATIONS.c.koywe_reference)
        .where(
            GENERATIONS.c.koywe_document_id == koywe_document_id,
            sa.or_(GENERATIONS.c.document_pk != pk, GENERATIONS.c.generation != generation),
        )
        .limit(1)
    ).first()
    if record is not None:
        return (
            f"Koywe reference {record.koywe_reference!r} (generation {record.generation} of ledger id "
            f"{record.document_pk})"
        )
    return None


__all__ = [
    "RECORD_FIELDS",
    "GenerationRow",
    "holder_of",
    "new_generation_values",
    "record_for",
    "start_next_generations",
    "upsert_record",
]
