"""Small SQL building blocks shared by the ledger modules (tables, state and due clauses, chunking).

Private: nothing outside ``koywe_provider.ledger`` should import this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from koywe_provider.ledger.models import (
    Attempt,
    Document,
    DocumentGeneration,
    DocumentState,
    IngestConflict,
    PayloadHistory,
)

DOCS = Document.__table__
ATTEMPTS = Attempt.__table__
CONFLICTS = IngestConflict.__table__
GENERATIONS = DocumentGeneration.__table__
PAYLOAD_HISTORY = PayloadHistory.__table__

#: A session or a connection: both run Core statements the same way.
Executor = Session | Connection

#: Column values that end a claim.
CLEAR_LEASE: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "claimed_from": None}

#: Row columns holding what Koywe said about the current generation's document; cleared when a new
#: generation starts (the generation record keeps them).
KOYWE_FIELDS: tuple[str, ...] = (
    "koywe_document_id",
    "document_number",
    "document_status",
    "counterparty_status",
    "taxbureau_sending_status",
    "taxbureau_validation_status",
    "taxbureau_validation_comments",
    "result_status",
    "result_error_message",
)


def cap(value: Any, limit: int) -> str | None:
    """``str(value)`` cut to ``limit`` characters; ``None`` stays ``None``."""
    if value is None:
        return None
    value = str(value)
    return value if len(value) <= limit else value[:limit]


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size`` (the last one shorter), consumed lazily."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def key_in(table: sa.Table, keys: set[tuple[str, str]]) -> sa.ColumnElement[bool]:
    """``account_id IN (...) AND reference IN (...)``: a superset of ``keys`` (filter the rows in Python)
    that both backends answer from the unique (account_id, reference) index; SQLite scans the whole
    table for a row-value ``(a, b) IN (VALUES ...)``."""
    return sa.and_(
        table.c.account_id.in_(sorted({k[0] for k in keys})),
        table.c.reference.in_(sorted({k[1] for k in keys})),
    )


def states_of(states: Iterable[str | DocumentState] | str | DocumentState) -> tuple[DocumentState, ...]:
    """``states`` as distinct :class:`DocumentState` members, in order. Raises ``ValueError`` for an
    unknown state or an empty selection."""
    if isinstance(states, str):
        states = (states,)
    result = tuple(dict.fromkeys(DocumentState(s) for s in states))
    if not result:
        raise ValueError("states must not be empty")
    return result


def state_clause(states: Sequence[DocumentState], now: datetime) -> sa.ColumnElement[bool]:
    """Rows in ``states``; ``in_flight`` only when its lease has expired (or was never set)."""
    plain = [s.value for s in states if s is not DocumentState.IN_FLIGHT]
    conds: list[sa.ColumnElement[bool]] = []
    if plain:
        conds.append(DOCS.c.state.in_(plain))
    if DocumentState.IN_FLIGHT in states:
        conds.append(
            sa.and_(
                DOCS.c.state == DocumentState.IN_FLIGHT.value,
                sa.or_(DOCS.c.lease_expires_at.is_(None), DOCS.c.lease_expires_at < now),
            )
        )
    return sa.or_(*conds)


def due_clause(due_before: datetime) -> sa.ColumnElement[bool]:
    """Rows due at ``due_before``: ``next_attempt_at`` null or not later."""
    return sa.or_(DOCS.c.next_attempt_at.is_(None), DOCS.c.next_attempt_at <= due_before)


def insert_ignoring_conflicts(executor: Executor, dialect: str, table: sa.Table, rows: list[dict]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` of ``rows`` (a plain INSERT on other backends)."""
    if not rows:
        return
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # pragma: no cover - other backends are not supported, plain INSERT
        executor.execute(sa.insert(table), rows)
        return
    executor.execute(dialect_insert(table).on_conflict_do_nothing(), rows)
