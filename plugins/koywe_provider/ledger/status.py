"""Document and tax-bureau statuses in the issuance ledger, moved only forwards.

Koywe reports a document's life in three fields (API_NOTES, "Documents"): ``document_status`` (0 draft,
1 issued, 2 cancelled), ``taxbureau_sending_status`` (0 sending, 1XX retrying, 2XX rejected, 1 received,
2 closed without sending, 3 imported) and ``taxbureau_validation_status`` (0/1 in process, 2 sending
rejected, 3 accepted, 4 accepted with warnings, 5 content rejected). The same news can arrive twice and
out of order (a ``DOCUMENT.STATUSUPDATE`` callback, a polling pass, a sensor), so every write here keeps
the most advanced value of each field: a repeated or late message never moves a document backwards.

A document the tax bureau rejected (validation 2 or 5) becomes ledger state ``rejected`` with the
bureau's comments in ``last_error`` (Koywe: fix it and issue it again); a ``draft`` whose
``document_status`` becomes 1 becomes ``issued``. No schema change: only columns of ``koywe_documents``
that exist since revision 0001, plus ``koywe_attempts`` rows for status changes sent to Koywe.

Pure SQLAlchemy: nothing here imports Airflow or another part of ``koywe_provider`` above the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from koywe_provider.ledger.core import DocumentNotFoundError, Ledger, _chunks
from koywe_provider.ledger.models import Attempt, AttemptKind, Document, DocumentState

_DOCS = Document.__table__
_ATTEMPTS = Attempt.__table__

#: ``taxbureau_validation_status`` values that end the tax bureau's validation.
VALIDATION_ACCEPTED: frozenset[int] = frozenset({3, 4})
VALIDATION_REJECTED: frozenset[int] = frozenset({2, 5})
VALIDATION_FINAL: frozenset[int] = VALIDATION_ACCEPTED | VALIDATION_REJECTED
#: ``document_status`` values (Koywe): 0 draft (Chile), 1 issued, 2 cancelled (Mexico).
DOCUMENT_DRAFT, DOCUMENT_ISSUED, DOCUMENT_CANCELLED = 0, 1, 2

#: ``koywe_attempts.kind`` of a ``PUT /documents/{id}`` (the column is a plain string; the
#: :class:`~koywe_provider.ledger.models.AttemptKind` enum names only create and lookup).
ATTEMPT_KIND_STATUS = AttemptKind.STATUS_UPDATE
#: ``last_error_class`` of a document the tax bureau rejected.
TAXBUREAU_REJECTED_CLASS = "taxbureau_rejected"

#: Ledger states whose Koywe statuses are followed (a Koywe document exists).
FOLLOWED_STATES = (DocumentState.ISSUED.value, DocumentState.DRAFT.value)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What Koywe says about one document (any field may be ``None``: unknown, keep the ledger's)."""

    koywe_document_id: str
    document_status: int | None = None
    taxbureau_sending_status: int | None = None
    taxbureau_validation_status: int | None = None
    taxbureau_validation_comments: str | None = None


@dataclass(slots=True)
class ApplyCounts:
    """Outcome of :func:`apply_status_reports`: reports ``matched`` to a ledger row (``unmatched``
    otherwise), rows ``changed``/``unchanged``, and rows that became ``accepted`` or ``rejected`` by the
    tax bureau, or went from ``draft`` to ``issued`` (``drafts_issued``) in this call."""

    matched: int = 0
    unmatched: int = 0
    changed: int = 0
    unchanged: int = 0
    accepted: int = 0
    rejected: int = 0
    drafts_issued: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _sending_rank(value: int | None) -> int:
    """0 sending < 1XX retrying < everything else (received, closed, imported, 2XX rejected: final)."""
    if value is None:
        return -1
    if value == 0:
        return 0
    if 100 <= value < 200:
        return 1
    return 2


def _validation_rank(value: int | None) -> int:
    """0/1 in process < 2/3/4/5 final."""
    if value is None:
        return -1
    return 1 if value in VALIDATION_FINAL else 0


def merged_values(row: Any, report: StatusReport) -> dict[str, Any]:
    """The column values ``report`` changes on ``row`` (``{}`` when it brings nothing newer).

    ``row`` needs ``state``, ``document_status``, ``taxbureau_sending_status``,
    ``taxbureau_validation_status``, ``taxbureau_validation_comments``. A field is taken only when it is
    more advanced than the stored one: ``document_status`` only grows (0 → 1 → 2); a final validation
    status is never replaced; the sending status only moves 0 → 1XX → final.
    """
    values: dict[str, Any] = {}
    new_doc = report.document_status
    if new_doc is not None and (row.document_status is None or new_doc > row.document_status):
        values["document_status"] = new_doc
    new_send = report.taxbureau_sending_status
    if new_send is not None and new_send != row.taxbureau_sending_status:
        current, new = _sending_rank(row.taxbureau_sending_status), _sending_rank(new_send)
        if new > current or new == current == 1:  # a later retry (1XX) replaces an earlier one
            values["taxbureau_sending_status"] = new_send
    new_val = report.taxbureau_validation_status
    validation = row.taxbureau_validation_status
    if new_val is not None and new_val != validation and _validation_rank(validation) < 1:
        if _validation_rank(new_val) >= _validation_rank(validation):
            values["taxbureau_validation_status"] = new_val
            validation = new_val
            if report.taxbureau_validation_comments is not None:
                values["taxbureau_validation_comments"] = report.taxbureau_validation_comments
    elif (
        new_val is not None
        and new_val == validation
        and report.taxbureau_validation_comments
        and not row.taxbureau_validation_comments
    ):
        values["taxbureau_validation_comments"] = report.taxbureau_validation_comments
    rejected = "taxbureau_validation_status" in values and new_val in VALIDATION_REJECTED
    if row.state in FOLLOWED_STATES and rejected:
        comments = values.get("taxbureau_validation_comments") or row.taxbureau_validation_comments
        values["state"] = DocumentState.REJECTED.value
        values["last_error_class"] = TAXBUREAU_REJECTED_CLASS
        values["last_error"] = (
            f"Rejected by the tax bureau (taxbureau_validation_status {new_val})"
            + (f": {comments}" if comments else "")
            + "; fix the document and issue it again"
        )
    if (
        row.state == DocumentState.DRAFT.value
        and "state" not in values
        and values.get("document_status", row.document_status) not in (None, DOCUMENT_DRAFT)
    ):
        values["state"] = DocumentState.ISSUED.value
    return values


def apply_status_reports(ledger: Ledger, reports: Iterable[StatusReport]) -> ApplyCounts:
    """Write ``reports`` into the rows with the same ``koywe_document_id``, forwards only, idempotently.

    One transaction per 500 reports; the matched rows are locked (``FOR UPDATE`` on PostgreSQL, the
    write lock on SQLite) while they are compared and updated, so a callback and a polling pass that
    race cannot move a row backwards. Reports for documents the ledger does not know are counted in
    ``unmatched`` and otherwise ignored. Repeating a call changes nothing (``unchanged``).
    """
    counts = ApplyCounts()
    latest: dict[str, StatusReport] = {}
    for report in reports:
        key = str(report.koywe_document_id)
        previous = latest.get(key)
        if previous is None or _more_final(report, previous):
            latest[key] = report
    now = ledger._now()
    cols = (
        _DOCS.c.id,
        _DOCS.c.state,
        _DOCS.c.koywe_document_id,
        _DOCS.c.document_status,
        _DOCS.c.taxbureau_sending_status,
        _DOCS.c.taxbureau_validation_status,
        _DOCS.c.taxbureau_validation_comments,
    )
    for chunk in _chunks(latest, 500):
        with ledger.engine.begin() as conn:
            stmt = sa.select(*cols).where(_DOCS.c.koywe_document_id.in_(chunk)).with_for_update()
            rows = conn.execute(stmt).all()
            found = set()
            for row in rows:
                found.add(row.koywe_document_id)
                counts.matched += 1
                values = merged_values(row, latest[row.koywe_document_id])
                if not values:
                    counts.unchanged += 1
                    continue
                counts.changed += 1
                if values.get("state") == DocumentState.REJECTED.value:
                    counts.rejected += 1
                elif values.get("taxbureau_validation_status") in VALIDATION_ACCEPTED:
                    counts.accepted += 1
                if row.state == DocumentState.DRAFT.value and values.get("state") == DocumentState.ISSUED:
                    counts.drafts_issued += 1
                conn.execute(sa.update(_DOCS).where(_DOCS.c.id == row.id).values(updated_at=now, **values))
            counts.unmatched += len(set(chunk) - found)
    return counts


def _more_final(a: StatusReport, b: StatusReport) -> bool:
    return (_validation_rank(a.taxbureau_validation_status), a.document_status or -1) > (
        _validation_rank(b.taxbureau_validation_status),
        b.document_status or -1,
    )


def record_status_change(
    ledger: Ledger,
    pk: int,
    report: StatusReport,
    *,
    outcome: str,
    http_status: int | None = None,
    duration_ms: int = 0,
    note: str | None = None,
    run_id: str | None = None,
    task: str | None = None,
) -> ApplyCounts:
    """Record a ``PUT /documents/{id}`` on row ``pk``: one ``koywe_attempts`` row (kind
    ``status_update``; ``outcome`` e.g. ``issued``, ``cancelled``, ``already_applied``, ``rejected``;
    ``note`` in its ``error`` column, e.g. the operator's reason) and, through
    :func:`apply_status_reports`, the statuses Koywe answered (forwards only).

    Raises :class:`~koywe_provider.ledger.core.DocumentNotFoundError` for an unknown ``pk``.
    """
    with ledger.engine.begin() as conn:
        koywe_id = conn.scalar(sa.select(_DOCS.c.koywe_document_id).where(_DOCS.c.id == pk))
        if koywe_id is None and conn.scalar(sa.select(_DOCS.c.id).where(_DOCS.c.id == pk)) is None:
            raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
        if koywe_id is None:
            conn.execute(
                sa.update(_DOCS)
                .where(_DOCS.c.id == pk)
                .values(koywe_document_id=str(report.koywe_document_id))
            )
        conn.execute(
            sa.insert(_ATTEMPTS).values(
                document_pk=pk,
                attempted_at=ledger._now(),
                kind=ATTEMPT_KIND_STATUS,
                outcome=outcome[:32],
                http_status=http_status,
                duration_ms=int(duration_ms),
                error=note,
                run_id=run_id,
                task=task,
            )
        )
    return apply_status_reports(ledger, [report])


def _reading(ledger: Ledger) -> sa.Connection:
    # A deferred BEGIN on SQLite (the ledger's default is BEGIN IMMEDIATE, for writers).
    return ledger.engine.execution_options(koywe_sqlite_begin="DEFERRED").connect()


def find_by_koywe_document_id(ledger: Ledger, koywe_document_id: str | int) -> dict[str, Any] | None:
    """Every column of the row holding Koywe document ``koywe_document_id``, or ``None``."""
    stmt = sa.select(_DOCS).where(_DOCS.c.koywe_document_id == str(koywe_document_id))
    with _reading(ledger) as conn:
        row = conn.execute(stmt).first()
    return None if row is None else dict(row._mapping)


@dataclass(frozen=True, slots=True)
class AwaitingDocuments:
    """Documents whose tax-bureau validation is not final yet: how many, and the ``issue_date`` window
    (``YYYY-MM-DD``, from each payload's ``header.issue_date``; ``None`` when no row carries one)."""

    count: int
    issue_date_from: str | None
    issue_date_to: str | None
    koywe_document_ids: tuple[str, ...]


def awaiting_taxbureau(ledger: Ledger, *, limit: int = 100_000) -> AwaitingDocuments:
    """Rows in ``issued``/``draft`` with a ``koywe_document_id`` and a validation status that is not
    final (``NULL``, 0 or 1), at most ``limit``; what a polling pass must ask Koywe about."""
    stmt = (
        sa.select(_DOCS.c.koywe_document_id, _DOCS.c.payload)
        .where(
            _DOCS.c.state.in_(FOLLOWED_STATES),
            _DOCS.c.koywe_document_id.is_not(None),
            sa.or_(
                _DOCS.c.taxbureau_validation_status.is_(None),
                _DOCS.c.taxbureau_validation_status.not_in(sorted(VALIDATION_FINAL)),
            ),
        )
        .order_by(_DOCS.c.id)
        .limit(limit)
    )
    ids: list[str] = []
    dates: list[str] = []
    with _reading(ledger) as conn:
        for koywe_id, payload in conn.execute(stmt):
            ids.append(str(koywe_id))
            header = (payload or {}).get("header") if isinstance(payload, dict) else None
            if isinstance(header, dict) and header.get("issue_date"):
                dates.append(str(header["issue_date"])[:10])
    return AwaitingDocuments(
        count=len(ids),
        issue_date_from=min(dates) if dates else None,
        issue_date_to=max(dates) if dates else None,
        koywe_document_ids=tuple(ids),
    )


def taxbureau_rejections(ledger: Ledger, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Rows the tax bureau rejected (state ``rejected``, ``last_error_class`` ``taxbureau_rejected``), in id
    order: ``id, reference, account_id, koywe_document_id, document_number,
    taxbureau_validation_status, taxbureau_validation_comments``."""
    stmt = (
        sa.select(
            _DOCS.c.id,
            _DOCS.c.reference,
            _DOCS.c.account_id,
            _DOCS.c.koywe_document_id,
            _DOCS.c.document_number,
            _DOCS.c.taxbureau_validation_status,
            _DOCS.c.taxbureau_validation_comments,
        )
        .where(
            _DOCS.c.state == DocumentState.REJECTED.value,
            _DOCS.c.last_error_class == TAXBUREAU_REJECTED_CLASS,
        )
        .order_by(_DOCS.c.id)
        .limit(limit)
    )
    with _reading(ledger) as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


__all__ = [
    "ATTEMPT_KIND_STATUS",
    "VALIDATION_ACCEPTED",
    "VALIDATION_FINAL",
    "VALIDATION_REJECTED",
    "ApplyCounts",
    "AwaitingDocuments",
    "StatusReport",
    "apply_status_reports",
    "awaiting_taxbureau",
    "find_by_koywe_document_id",
    "merged_values",
    "record_status_change",
    "taxbureau_rejections",
]
