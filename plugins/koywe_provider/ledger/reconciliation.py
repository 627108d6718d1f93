"""What the ledger says, for a reconciliation with Koywe's own list of documents.

Read-only views over an issue-date window (``YYYY-MM-DD``, the payload's ``header.issue_date``, read with
the database's JSON functions on SQLite and PostgreSQL alike): which Koywe ids the ledger knows (a row's
current generation, or an earlier generation's record), the rows that hold a document Koywe should
list, rows by reference, rows stuck in a state longer than a threshold, and rows whose status news came
by polling while no callback delivered it. Functions on a :class:`~koywe_provider.ledger.Ledger`.

Pure SQLAlchemy: nothing here imports Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from koywe_provider.ledger._sql import ATTEMPTS, DOCS, GENERATIONS, chunks
from koywe_provider.ledger.models import ISSUED_STATES, AttemptKind, DocumentState
from koywe_provider.models.statuses import TaxBureauValidationStatus

if TYPE_CHECKING:
    from koywe_provider.ledger.ledger import Ledger

#: ``header.issue_date`` of a row's payload (text ``YYYY-MM-DD``; ``NULL`` when absent).
ISSUE_DATE = DOCS.c.payload[("header", "issue_date")].as_string()
_ISSUED = sorted(s.value for s in ISSUED_STATES)
_FINAL_VALIDATION = sorted(int(s) for s in TaxBureauValidationStatus.terminal_statuses())
#: Columns of a row that a reconciliation reads (never the payload).
_ROW = (
    DOCS.c.id,
    DOCS.c.account_id,
    DOCS.c.reference,
    DOCS.c.state,
    DOCS.c.generation,
    DOCS.c.koywe_document_id,
    DOCS.c.document_number,
    DOCS.c.document_status,
    DOCS.c.counterparty_status,
    DOCS.c.taxbureau_sending_status,
    DOCS.c.taxbureau_validation_status,
    DOCS.c.taxbureau_validation_comments,
    DOCS.c.result_status,
    DOCS.c.issued_at,
    DOCS.c.last_error_class,
)

#: Kinds of stuck rows (:func:`stuck_rows`).
STUCK_KINDS = ("unknown", "in_flight", "not_sent", "bureau_pending")


def issue_date_between(issue_date_from: str | None, issue_date_to: str | None) -> sa.ColumnElement[bool]:
    """Rows whose payload ``header.issue_date`` is within ``[issue_date_from, issue_date_to]`` (text
    comparison of ``YYYY-MM-DD``; an open end when ``None``; true when both are ``None``)."""
    conds: list[sa.ColumnElement[bool]] = []
    if issue_date_from:
        conds.append(sa.func.substr(ISSUE_DATE, 1, 10) >= issue_date_from)
    if issue_date_to:
        conds.append(sa.func.substr(ISSUE_DATE, 1, 10) <= issue_date_to)
    return sa.and_(sa.true(), *conds)


def _in_scope(issue_date_from: str | None, issue_date_to: str | None, account_id: str | None) -> list[Any]:
    where: list[Any] = [issue_date_between(issue_date_from, issue_date_to)]
    if account_id is not None:
        where.append(DOCS.c.account_id == str(account_id))
    return where


@dataclass(frozen=True, slots=True)
class KnownDocument:
    """A Koywe id the ledger knows: the ``row`` (every column in :data:`_ROW`) whose current generation
    holds it, or (``earlier_generation`` set) the row one of whose earlier generations held it."""

    row: dict[str, Any]
    earlier_generation: int | None = None


def known_documents(ledger: Ledger, koywe_document_ids: Iterable[str]) -> dict[str, KnownDocument]:
    """``{koywe id: KnownDocument}`` for the ids the ledger holds, on a row's current generation first,
    else on an earlier generation's record; ids the ledger does not know are absent."""
    wanted = [str(i) for i in dict.fromkeys(koywe_document_ids) if i is not None]
    found: dict[str, KnownDocument] = {}
    with ledger._read() as session:
        for chunk in chunks(wanted, 500):
            for row in session.execute(sa.select(*_ROW).where(DOCS.c.koywe_document_id.in_(chunk))):
                found[str(row.koywe_document_id)] = KnownDocument(dict(row._mapping))
            rest = [i for i in chunk if i not in found]
            if not rest:
                continue
            stmt = (
                sa.select(GENERATIONS.c.koywe_document_id, GENERATIONS.c.generation, *_ROW)
                .join(DOCS, DOCS.c.id == GENERATIONS.c.document_pk)
                .where(GENERATIONS.c.koywe_document_id.in_(rest))
                .order_by(GENERATIONS.c.id)
            )
            for record in session.execute(stmt):
                koywe_id = str(record[0])
                if koywe_id not in found:
                    row = {c.name: record._mapping[c] for c in _ROW}
                    found[koywe_id] = KnownDocument(row, earlier_generation=int(record[1]))
    return found


def rows_by_reference(
    ledger: Ledger, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(account_id, reference): row}`` (columns of :data:`_ROW`) for the keys the ledger holds."""
    wanted = {(str(a), str(r)) for a, r in keys}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    with ledger._read() as session:
        for chunk in chunks(sorted(wanted), 500):
            stmt = sa.select(*_ROW).where(
                DOCS.c.account_id.in_({a for a, _ in chunk}), DOCS.c.reference.in_({r for _, r in chunk})
            )
            for row in session.execute(stmt):
                key = (row.account_id, row.reference)
                if key in wanted:
                    found[key] = dict(row._mapping)
    return found


def documents_koywe_should_list(
    ledger: Ledger,
    *,
    issue_date_from: str | None,
    issue_date_to: str | None,
    account_id: str | None = None,
    issued_before: datetime | None = None,
) -> list[dict[str, Any]]:
    """Rows whose Koywe document exists (``issued``, ``draft``, ``not_sent`` with a Koywe id) in the
    window, recorded before ``issued_before`` (a document issued while Koywe's list was being read is
    not expected in it), in id order: columns of :data:`_ROW`."""
    where = [
        DOCS.c.state.in_(_ISSUED),
        DOCS.c.koywe_document_id.is_not(None),
        *_in_scope(issue_date_from, issue_date_to, account_id),
    ]
    if issued_before is not None:
        where.append(sa.or_(DOCS.c.issued_at.is_(None), DOCS.c.issued_at < issued_before))
    with ledger._read() as session:
        return [dict(r._mapping) for r in session.execute(sa.select(*_ROW).where(*where).order_by(DOCS.c.id))]


def stuck_rows(
    ledger: Ledger,
    *,
    issue_date_from: str | None,
    issue_date_to: str | None,
    older_than: datetime,
    account_id: str | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Rows of the window stuck since before ``older_than``, each with ``stuck`` (its kind, one of
    :data:`STUCK_KINDS`) and ``since``:

    - ``unknown`` / ``in_flight``: since the first POST of its current generation (else since it was
      ingested): nobody knows whether Koywe holds it, or a task holds it far beyond any lease;
    - ``not_sent``: generated by Koywe but not sent to the tax bureau (``result.status`` 2), since issued;
    - ``bureau_pending``: ``issued`` with a tax-bureau validation that is not final (none, 0 or 1), since
      issued.

    In id order, at most ``limit``.
    """
    first_send = (
        sa.select(sa.func.min(ATTEMPTS.c.attempted_at))
        .where(
            ATTEMPTS.c.document_pk == DOCS.c.id,
            ATTEMPTS.c.generation == DOCS.c.generation,
            ATTEMPTS.c.kind == AttemptKind.CREATE.value,
        )
        .scalar_subquery()
    )
    waiting = (DocumentState.UNKNOWN.value, DocumentState.IN_FLIGHT.value)
    since = sa.case(
        (DOCS.c.state.in_(waiting), sa.func.coalesce(first_send, DOCS.c.created_at)),
        else_=sa.func.coalesce(DOCS.c.issued_at, DOCS.c.updated_at),
    ).label("since")
    pending_bureau = sa.and_(
        DOCS.c.state == DocumentState.ISSUED.value,
        sa.or_(
            DOCS.c.taxbureau_validation_status.is_(None),
            DOCS.c.taxbureau_validation_status.not_in(_FINAL_VALIDATION),
        ),
    )
    stmt = (
        sa.select(*_ROW, since)
        .where(
            sa.or_(DOCS.c.state.in_((*waiting, DocumentState.NOT_SENT.value)), pending_bureau),
            *_in_scope(issue_date_from, issue_date_to, account_id),
        )
        .order_by(DOCS.c.id)
    )
    out = []
    with ledger._read() as session:
        for row in session.execute(stmt):
            data = dict(row._mapping)
            if data["since"] is None or _utc(data["since"]) >= older_than:
                continue
            data["since"] = _utc(data["since"])
            data["stuck"] = "bureau_pending" if data["state"] == DocumentState.ISSUED else data["state"]
            out.append(data)
            if len(out) >= limit:
                break
    return out


def missed_callbacks(
    ledger: Ledger,
    *,
    issue_date_from: str | None,
    issue_date_to: str | None,
    older_than: datetime,
    account_id: str | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Rows of the window whose status news polling found (``last_polled_news_at``) before
    ``older_than`` and that no ``DOCUMENT.STATUSUPDATE`` callback has reached since: columns of
    :data:`_ROW` plus ``last_polled_news_at`` and ``last_callback_at``, in id order, at most ``limit``."""
    stmt = (
        sa.select(*_ROW, DOCS.c.last_polled_news_at, DOCS.c.last_callback_at)
        .where(
            DOCS.c.last_polled_news_at.is_not(None),
            DOCS.c.last_polled_news_at < older_than,
            sa.or_(DOCS.c.last_callback_at.is_(None), DOCS.c.last_callback_at < DOCS.c.last_polled_news_at),
            *_in_scope(issue_date_from, issue_date_to, account_id),
        )
        .order_by(DOCS.c.id)
        .limit(limit)
    )
    with ledger._read() as session:
        return [dict(r._mapping) for r in session.execute(stmt)]


def _utc(value: datetime) -> datetime:
    from koywe_provider.ledger.models import as_utc

    result = as_utc(value)
    assert result is not None
    return result


__all__ = [
    "ISSUE_DATE",
    "STUCK_KINDS",
    "KnownDocument",
    "documents_koywe_should_list",
    "issue_date_between",
    "known_documents",
    "missed_callbacks",
    "rows_by_reference",
    "stuck_rows",
]
