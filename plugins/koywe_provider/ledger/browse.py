"""Reading the ledger the way a person browses it: counts per account, country and day; a search by
reference, folio or Koywe id; one document's whole story; the runs that touched the ledger and a run's
failures.

Functions on a :class:`~koywe_provider.ledger.Ledger` (like :mod:`~koywe_provider.ledger.status_updates`),
each reading in one short transaction (a deferred ``BEGIN`` on SQLite: no write lock) and returning
plain values with aware UTC datetimes. Used by the Koywe page in Airflow's UI (``koywe_provider.ui``).
Nothing here returns a payload whole: :func:`payload_summary` picks the fields a person needs.

Pure SQLAlchemy: nothing here imports Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from koywe_provider.ledger._sql import ATTEMPTS, CONFLICTS, DOCS, GENERATIONS, PAYLOAD_HISTORY
from koywe_provider.ledger.models import ISSUED_STATES, DocumentState
from koywe_provider.models.references import split_koywe_reference

if TYPE_CHECKING:
    from koywe_provider.ledger.ledger import Ledger

#: States a person must look at (nothing is issued for them yet, and no task will do it on its own
#: without a fix or a re-queue): what :func:`run_failures` lists.
FAILED_STATES: tuple[str, ...] = tuple(
    s.value
    for s in (
        DocumentState.REJECTED,
        DocumentState.INVALID,
        DocumentState.DEAD,
        DocumentState.UNKNOWN,
        DocumentState.RETRYABLE,
        DocumentState.IN_FLIGHT,
    )
)
#: Every state in the order the page shows them (issued first, the ones that need a person last).
STATE_ORDER: tuple[str, ...] = (
    DocumentState.ISSUED.value,
    DocumentState.DRAFT.value,
    DocumentState.NOT_SENT.value,
    DocumentState.PENDING.value,
    DocumentState.IN_FLIGHT.value,
    DocumentState.RETRYABLE.value,
    DocumentState.UNKNOWN.value,
    DocumentState.REJECTED.value,
    DocumentState.INVALID.value,
    DocumentState.DEAD.value,
)
#: Label of rows whose payload names no country / no day.
UNKNOWN = ""

#: Columns of a document row that a listing shows (never the payload or the raw line).
_LISTED = (
    DOCS.c.id,
    DOCS.c.reference,
    DOCS.c.account_id,
    DOCS.c.state,
    DOCS.c.generation,
    DOCS.c.koywe_document_id,
    DOCS.c.document_number,
    DOCS.c.last_error_class,
    DOCS.c.last_error,
    DOCS.c.error_field,
    DOCS.c.source,
    DOCS.c.line_no,
    DOCS.c.attempts,
    DOCS.c.run_id,
    DOCS.c.updated_at,
)


def _country_expr() -> sa.ColumnElement[Any]:
    """``header.issuer_country_id`` of the payload as text (``NULL`` without a payload)."""
    # CAST: SQLite's JSON_EXTRACT gives an integer, which never equals the text a filter compares with.
    return sa.cast(DOCS.c.payload[("header", "issuer_country_id")].as_string(), sa.String)


def _day_expr(dialect: str) -> sa.ColumnElement[Any]:
    """The document's day as ``YYYY-MM-DD`` text: its ``header.issue_date``, else the UTC day the ledger
    recorded it (an invalid line has no payload)."""
    issue_date = sa.func.substr(DOCS.c.payload[("header", "issue_date")].as_string(), 1, 10)
    if dialect == "postgresql":
        recorded = sa.func.to_char(sa.func.timezone("UTC", DOCS.c.created_at), "YYYY-MM-DD")
    else:  # SQLite keeps UTC datetimes as ``YYYY-MM-DD HH:MM:SS.ffffff`` text
        recorded = sa.func.substr(DOCS.c.created_at, 1, 10)
    return sa.func.coalesce(issue_date, recorded)


@dataclass(frozen=True, slots=True)
class CountRow:
    """Documents of one (account, country, day): ``states`` maps every state of :data:`STATE_ORDER` to
    a count (0 when none). ``country_id`` is Koywe's id as text, ``""`` when the payload names none;
    ``day`` is ``YYYY-MM-DD``."""

    account_id: str
    country_id: str
    day: str
    states: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.states.values())


@dataclass(frozen=True, slots=True)
class Overview:
    """:func:`overview`'s answer: ``rows`` newest day first, ``totals`` per state over those rows,
    ``truncated`` when more groups matched than ``limit``, and the distinct accounts and countries of
    the whole ledger (for filters)."""

    rows: list[CountRow]
    totals: dict[str, int]
    truncated: bool
    accounts: list[str] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)


def overview(
    ledger: Ledger,
    *,
    account_id: str | None = None,
    country_id: str | int | None = None,
    day_from: str | None = None,
    day_to: str | None = None,
    limit: int = 500,
) -> Overview:
    """Counts by state per (account, country, day), newest day first, at most ``limit`` groups.

    :param account_id: only this Koywe account. :param country_id: only this Koywe ``country_id``
        (``issuer_country_id`` of the payload; ``""`` for documents without one).
    :param day_from: / :param day_to: ``YYYY-MM-DD``, inclusive. The day is the document's
        ``header.issue_date``, or the UTC day the ledger recorded it when the payload has none.
    """
    country = _country_expr().label("country_id")
    day = _day_expr(ledger.dialect).label("day")
    conditions: list[sa.ColumnElement[bool]] = []
    if account_id:
        conditions.append(DOCS.c.account_id == str(account_id))
    if country_id is not None and str(country_id) != "":
        conditions.append(country == str(country_id))
    elif country_id == "":
        conditions.append(country.is_(None))
    if day_from:
        conditions.append(day >= day_from)
    if day_to:
        conditions.append(day <= day_to)
    groups = (
        sa.select(DOCS.c.account_id, country, day)
        .where(*conditions)
        .group_by(DOCS.c.account_id, country, day)
        .order_by(day.desc(), DOCS.c.account_id, country)
        .limit(limit + 1)
        .subquery()
    )
    counted = sa.select(DOCS.c.account_id, country, day, DOCS.c.state, sa.func.count()).where(*conditions)
    counted = counted.group_by(DOCS.c.account_id, country, day, DOCS.c.state)
    with ledger._read() as session:
        keys = [(a, c or UNKNOWN, d or UNKNOWN) for a, c, d in session.execute(sa.select(groups))]
        truncated = len(keys) > limit
        keys = keys[:limit]
        wanted = set(keys)
        found: dict[tuple[str, str, str], dict[str, int]] = {}
        if keys:
            for account, ctry, d, state, n in session.execute(counted):
                key = (account, ctry or UNKNOWN, d or UNKNOWN)
                if key in wanted:
                    found.setdefault(key, dict.fromkeys(STATE_ORDER, 0))[state] = int(n)
        accounts = sorted(session.scalars(sa.select(DOCS.c.account_id).distinct()))
        countries = sorted(
            {c or UNKNOWN for c in session.scalars(sa.select(_country_expr()).distinct())}, key=str
        )
    rows = [CountRow(a, c, d, found.get((a, c, d), dict.fromkeys(STATE_ORDER, 0))) for a, c, d in keys]
    totals = dict.fromkeys(STATE_ORDER, 0)
    for row in rows:
        for state, n in row.states.items():
            totals[state] = totals.get(state, 0) + n
    return Overview(rows=rows, totals=totals, truncated=truncated, accounts=accounts, countries=countries)


def search(ledger: Ledger, text: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """Documents matching ``text`` (trimmed), best match first, at most ``limit``: dicts of the listed
    columns (``id, reference, account_id, state, generation, koywe_document_id, document_number,
    last_error_class, last_error, error_field, source, line_no, attempts, run_id, updated_at``) plus
    ``matched`` (``reference``, ``folio``, ``koywe_id``, ``reference_prefix``).

    Matches, in this order: the ledger reference, or a Koywe reference of a later generation
    (``INV-1~2``); a folio (``document_number``) or a Koywe ``document_id`` of the current or of an
    earlier generation; then references that start with ``text``. ``[]`` for an empty text.
    """
    text = (text or "").strip()
    if not text:
        return []
    base, _generation = split_koywe_reference(text)

    def in_a_generation(column: sa.Column) -> sa.ColumnElement[bool]:
        holders = sa.select(GENERATIONS.c.document_pk).where(column == text).scalar_subquery()
        return DOCS.c.id.in_(holders)

    like = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    probes: list[tuple[str, sa.ColumnElement[bool]]] = [
        ("reference", DOCS.c.reference.in_({text, base})),
        (
            "koywe_id",
            sa.or_(DOCS.c.koywe_document_id == text, in_a_generation(GENERATIONS.c.koywe_document_id)),
        ),
        ("folio", sa.or_(DOCS.c.document_number == text, in_a_generation(GENERATIONS.c.document_number))),
        ("reference_prefix", DOCS.c.reference.like(like, escape="\\")),
    ]
    found: dict[int, dict[str, Any]] = {}
    with ledger._read() as session:
        for matched, condition in probes:
            if len(found) >= limit:
                break
            stmt = sa.select(*_LISTED).where(condition).order_by(DOCS.c.id).limit(limit)
            for row in session.execute(stmt):
                if row.id not in found and len(found) < limit:
                    found[row.id] = {**row._mapping, "matched": matched}
    return list(found.values())


@dataclass(frozen=True, slots=True)
class DocumentStory:
    """Everything the ledger knows about one document: ``row`` (every column but ``payload`` and
    ``raw_line``), ``summary`` (:func:`payload_summary`), ``generations`` and ``attempts`` (oldest
    first), ``payload_history`` (payloads a correction replaced) and ``conflicts`` (lines with the same
    key and other content that were not applied)."""

    row: dict[str, Any]
    summary: dict[str, Any]
    generations: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    payload_history: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]


def document_story(ledger: Ledger, pk: int) -> DocumentStory | None:
    """:class:`DocumentStory` of document ``pk`` (``None`` when there is none), read in one
    transaction."""
    with ledger._read() as session:
        found = session.execute(sa.select(DOCS).where(DOCS.c.id == pk)).first()
        if found is None:
            return None
        row = dict(found._mapping)
        payload = row.pop("payload", None)
        row.pop("raw_line", None)
        generations = [
            dict(r._mapping)
            for r in session.execute(
                sa.select(GENERATIONS)
                .where(GENERATIONS.c.document_pk == pk)
                .order_by(GENERATIONS.c.generation)
            )
        ]
        attempts = [
            dict(r._mapping)
            for r in session.execute(
                sa.select(ATTEMPTS).where(ATTEMPTS.c.document_pk == pk).order_by(ATTEMPTS.c.id)
            )
        ]
        history = [
            dict(r._mapping)
            for r in session.execute(
                sa.select(PAYLOAD_HISTORY)
                .where(PAYLOAD_HISTORY.c.document_pk == pk)
                .order_by(PAYLOAD_HISTORY.c.id)
            )
        ]
        conflicts = [
            dict(r._mapping)
            for r in session.execute(
                sa.select(CONFLICTS)
                .where(CONFLICTS.c.account_id == row["account_id"], CONFLICTS.c.reference == row["reference"])
                .order_by(CONFLICTS.c.id)
            )
        ]
    return DocumentStory(
        row=row,
        summary=payload_summary(payload),
        generations=generations,
        attempts=attempts,
        payload_history=history,
        conflicts=conflicts,
    )


def payload_summary(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of a Koywe document payload a person needs to recognise it: ``document_type_id``,
    ``issue_date``, ``issuer_country_id``, ``issuer_legal_name``, ``issuer_tax_id_code``,
    ``receiver_legal_name``, ``receiver_tax_id_code``, ``currency_id``, ``net_amount``,
    ``taxes_amount``, ``total_amount`` and ``lines`` (how many detail lines). Absent fields are left
    out; contact data (addresses, e-mails, phones) and free text never are in it. ``{}`` without a
    payload."""
    if not isinstance(payload, Mapping):
        return {}
    header = payload.get("header") if isinstance(payload.get("header"), Mapping) else {}
    totals = payload.get("totals") if isinstance(payload.get("totals"), Mapping) else {}
    summary: dict[str, Any] = {}
    for key in (
        "document_type_id",
        "issue_date",
        "issuer_country_id",
        "issuer_legal_name",
        "issuer_tax_id_code",
        "receiver_legal_name",
        "receiver_tax_id_code",
        "currency_id",
    ):
        if header.get(key) not in (None, ""):
            summary[key] = header[key]
    for key in ("net_amount", "taxes_amount", "total_amount"):
        if totals.get(key) is not None:
            summary[key] = totals[key]
    details = payload.get("details")
    if isinstance(details, list):
        summary["lines"] = len(details)
    return summary


def run_failures(ledger: Ledger, run_id: str, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Documents of run ``run_id`` that are in a :data:`FAILED_STATES` state now, in id order, at most
    ``limit``: rows the run ingested, and rows it made a call for (an attempt with that ``run_id``: a
    retry run ingests nothing). Dicts of the listed columns (see :func:`search`)."""
    touched = sa.select(ATTEMPTS.c.document_pk).where(ATTEMPTS.c.run_id == run_id).scalar_subquery()
    stmt = (
        sa.select(*_LISTED)
        .where(
            DOCS.c.state.in_(FAILED_STATES),
            sa.or_(DOCS.c.run_id == run_id, DOCS.c.id.in_(touched)),
        )
        .order_by(DOCS.c.id)
        .limit(limit)
    )
    with ledger._read() as session:
        return [dict(r._mapping) for r in session.execute(stmt)]


def run_counts(ledger: Ledger, run_id: str) -> dict[str, int]:
    """``{state: documents}`` (every state of :data:`STATE_ORDER`) of the rows run ``run_id`` ingested or
    made a call for, in their state now."""
    touched = sa.select(ATTEMPTS.c.document_pk).where(ATTEMPTS.c.run_id == run_id).scalar_subquery()
    stmt = (
        sa.select(DOCS.c.state, sa.func.count())
        .where(sa.or_(DOCS.c.run_id == run_id, DOCS.c.id.in_(touched)))
        .group_by(DOCS.c.state)
    )
    counts = dict.fromkeys(STATE_ORDER, 0)
    with ledger._read() as session:
        for state, n in session.execute(stmt):
            counts[state] = int(n)
    return counts


def recent_runs(ledger: Ledger, *, limit: int = 50) -> list[dict[str, Any]]:
    """The Airflow runs that wrote to the ledger, last activity first, at most ``limit``: ``run_id``,
    ``last_seen`` (the latest ingestion or call), ``ingested`` (rows it ingested), ``calls`` (Koywe
    calls it made) and ``failed`` (rows it ingested or called for that are in a :data:`FAILED_STATES`
    state now)."""
    ingested = (
        sa.select(
            DOCS.c.run_id.label("run_id"),
            sa.func.max(DOCS.c.created_at).label("last_seen"),
            sa.func.count().label("ingested"),
            sa.literal(0).label("calls"),
        )
        .where(DOCS.c.run_id.is_not(None))
        .group_by(DOCS.c.run_id)
    )
    called = (
        sa.select(
            ATTEMPTS.c.run_id.label("run_id"),
            sa.func.max(ATTEMPTS.c.attempted_at).label("last_seen"),
            sa.literal(0).label("ingested"),
            sa.func.count().label("calls"),
        )
        .where(ATTEMPTS.c.run_id.is_not(None))
        .group_by(ATTEMPTS.c.run_id)
    )
    both = sa.union_all(ingested, called).subquery()
    stmt = (
        sa.select(
            both.c.run_id,
            sa.func.max(both.c.last_seen).label("last_seen"),
            sa.func.sum(both.c.ingested).label("ingested"),
            sa.func.sum(both.c.calls).label("calls"),
        )
        .group_by(both.c.run_id)
        .order_by(sa.func.max(both.c.last_seen).desc())
        .limit(limit)
    )
    with ledger._read() as session:
        runs = [
            {
                "run_id": r.run_id,
                # max() over a UNION loses the column type: SQLite returns the stored text.
                "last_seen": _as_datetime(r.last_seen),
                "ingested": int(r.ingested or 0),
                "calls": int(r.calls or 0),
            }
            for r in session.execute(stmt)
        ]
        for run in runs:
            touched = (
                sa.select(ATTEMPTS.c.document_pk).where(ATTEMPTS.c.run_id == run["run_id"]).scalar_subquery()
            )
            run["failed"] = int(
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(DOCS)
                    .where(
                        DOCS.c.state.in_(FAILED_STATES),
                        sa.or_(DOCS.c.run_id == run["run_id"], DOCS.c.id.in_(touched)),
                    )
                )
                or 0
            )
    return runs


def _as_datetime(value: Any) -> Any:
    from datetime import datetime

    from koywe_provider.ledger.models import as_utc

    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return as_utc(value) if isinstance(value, datetime) else value


#: States in which a document exists at Koywe (re-exported for the page's labels).
ISSUED = tuple(sorted(s.value for s in ISSUED_STATES))

__all__ = [
    "FAILED_STATES",
    "ISSUED",
    "STATE_ORDER",
    "CountRow",
    "DocumentStory",
    "Overview",
    "document_story",
    "overview",
    "payload_summary",
    "recent_runs",
    "run_counts",
    "run_failures",
    "search",
]
