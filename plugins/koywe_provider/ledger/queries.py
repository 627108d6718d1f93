"""Reading the ledger: counts, failures, conflicts, rows, attempts, generations, follow-up lists.

Every method reads in its own short transaction (a deferred ``BEGIN`` on SQLite: no write lock) and
returns plain dicts with aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from koywe_provider.ledger._sql import ATTEMPTS, CONFLICTS, DOCS, GENERATIONS, PAYLOAD_HISTORY
from koywe_provider.ledger.database import LedgerDatabase
from koywe_provider.ledger.models import ISSUED_STATES, CancellationStatus, DocumentState
from koywe_provider.ledger.values import TAXBUREAU_REJECTED_CLASS
from koywe_provider.models.statuses import TaxBureauValidationStatus

#: States left out of :meth:`QueriesMixin.failures`: done (a Koywe document exists) or not tried yet.
_FAILURE_EXCLUDED = (
    *sorted(s.value for s in ISSUED_STATES),
    DocumentState.PENDING.value,
    DocumentState.DELETED.value,
    DocumentState.EXTERNAL.value,
)
#: Ledger states whose Koywe statuses are followed until the tax bureau's validation is final.
FOLLOWED_STATES: tuple[str, ...] = tuple(sorted(s.value for s in ISSUED_STATES))
#: States a document should leave on its own (issuance, retries, tax-bureau follow-up): one that has not
#: changed for long is *stuck* (:meth:`QueriesMixin.stuck`).
STUCK_STATES: tuple[str, ...] = tuple(
    s.value
    for s in (
        DocumentState.PENDING,
        DocumentState.IN_FLIGHT,
        DocumentState.RETRYABLE,
        DocumentState.UNKNOWN,
        DocumentState.NOT_SENT,
    )
)
#: The columns :meth:`QueriesMixin.rows` returns: every column of ``koywe_documents`` but the payload and
#: the raw inbox line.
ROW_COLUMNS: tuple[str, ...] = tuple(c.name for c in DOCS.c if c.name not in ("payload", "raw_line"))
_FINAL_VALIDATION = sorted(int(s) for s in TaxBureauValidationStatus.terminal_statuses())


@dataclass(frozen=True, slots=True)
class AwaitingDocuments:
    """Documents whose tax-bureau validation is not final yet: how many, and the ``issue_date`` window
    (``YYYY-MM-DD``, from each payload's ``header.issue_date``; ``None`` when no row carries one)."""

    count: int
    issue_date_from: str | None
    issue_date_to: str | None
    koywe_document_ids: tuple[str, ...]


class QueriesMixin(LedgerDatabase):
    """Read-only views of the ledger."""

    def counts_by_state(self, *, run_id: str | None = None) -> dict[str, int]:
        """``{state: number of documents}`` with every :class:`DocumentState` value as a key (0 when none);
        only documents ingested by ``run_id`` when given."""
        stmt = sa.select(DOCS.c.state, sa.func.count()).group_by(DOCS.c.state)
        if run_id is not None:
            stmt = stmt.where(DOCS.c.run_id == run_id)
        result = {s.value: 0 for s in DocumentState}
        with self._read() as session:
            for state, n in session.execute(stmt):
                result[state] = int(n)
        return result

    def failures(self, *, run_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Documents that are neither done nor untried — in_flight, rejected, retryable, unknown,
        invalid, dead (not issued/draft/not_sent/pending/deleted/external) — in id order, at most ``limit``: dicts with
        ``id, reference, account_id, state, last_error_class, last_error, error_field, source, line_no,
        attempts, generation``."""
        cols = (
            DOCS.c.id,
            DOCS.c.reference,
            DOCS.c.account_id,
            DOCS.c.state,
            DOCS.c.last_error_class,
            DOCS.c.last_error,
            DOCS.c.error_field,
            DOCS.c.source,
            DOCS.c.line_no,
            DOCS.c.attempts,
            DOCS.c.generation,
        )
        stmt = sa.select(*cols).where(DOCS.c.state.not_in(_FAILURE_EXCLUDED)).order_by(DOCS.c.id).limit(limit)
        if run_id is not None:
            stmt = stmt.where(DOCS.c.run_id == run_id)
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]

    def conflicts(self, *, run_id: str | None = None) -> list[dict[str, Any]]:
        """``koywe_ingest_conflicts`` rows (all columns) in id order, only those of ``run_id`` when given."""
        stmt = sa.select(CONFLICTS).order_by(CONFLICTS.c.id)
        if run_id is not None:
            stmt = stmt.where(CONFLICTS.c.run_id == run_id)
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]

    def get(self, pk: int) -> dict[str, Any] | None:
        """Every column of document ``pk`` as a dict (aware UTC datetimes), or ``None``."""
        with self._read() as session:
            row = session.execute(sa.select(DOCS).where(DOCS.c.id == pk)).first()
        return None if row is None else dict(row._mapping)

    def get_by_reference(self, account_id: str, reference: str) -> dict[str, Any] | None:
        """As :meth:`get`, by the ``(account_id, reference)`` key."""
        stmt = sa.select(DOCS).where(DOCS.c.account_id == account_id, DOCS.c.reference == reference)
        with self._read() as session:
            row = session.execute(stmt).first()
        return None if row is None else dict(row._mapping)

    def find_by_reference(self, reference: str, *, account_id: str | None = None) -> dict[str, Any] | None:
        """The one row with ledger ``reference`` (within ``account_id`` when given); ``None`` when there is
        none or, without an account, when several accounts use the reference."""
        if account_id is not None:
            return self.get_by_reference(str(account_id), reference)
        stmt = sa.select(DOCS).where(DOCS.c.reference == reference).limit(2)
        with self._read() as session:
            rows = session.execute(stmt).all()
        return dict(rows[0]._mapping) if len(rows) == 1 else None

    def attempts_for(self, pk: int) -> list[dict[str, Any]]:
        """``koywe_attempts`` rows of document ``pk`` (all columns), oldest first."""
        stmt = sa.select(ATTEMPTS).where(ATTEMPTS.c.document_pk == pk).order_by(ATTEMPTS.c.id)
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]

    def generations_for(self, pk: int) -> list[dict[str, Any]]:
        """``koywe_document_generations`` records of document ``pk`` (all columns: ``generation``,
        ``koywe_reference``, ``payload_hash``, the Koywe id and statuses, ``outcome``, ``started_at``,
        ``ended_at`` …), oldest generation first; ``[]`` when Koywe never said anything about it."""
        stmt = (
            sa.select(GENERATIONS).where(GENERATIONS.c.document_pk == pk).order_by(GENERATIONS.c.generation)
        )
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]

    def reissued(self, *, run_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Rows in their second generation or later (re-issued after a refusal), in id order, at most
        ``limit``: ``id, reference, account_id, state, generation`` and ``generations``, every generation
        record oldest first (``generation, koywe_reference, koywe_document_id, document_number,
        taxbureau_validation_status, result_status, outcome``). ``run_id``: rows last ingested by it."""
        stmt = (
            sa.select(DOCS.c.id, DOCS.c.reference, DOCS.c.account_id, DOCS.c.state, DOCS.c.generation)
            .where(DOCS.c.generation > 1)
            .order_by(DOCS.c.id)
            .limit(limit)
        )
        if run_id is not None:
            stmt = stmt.where(DOCS.c.run_id == run_id)
        shown = (
            "generation",
            "koywe_reference",
            "koywe_document_id",
            "document_number",
            "taxbureau_validation_status",
            "result_status",
            "outcome",
        )
        with self._read() as session:
            rows = [dict(r._mapping) for r in session.execute(stmt)]
            if rows:
                records = session.execute(
                    sa.select(GENERATIONS)
                    .where(GENERATIONS.c.document_pk.in_([r["id"] for r in rows]))
                    .order_by(GENERATIONS.c.document_pk, GENERATIONS.c.generation)
                )
                by_row: dict[int, list[dict[str, Any]]] = {}
                for record in records:
                    by_row.setdefault(record.document_pk, []).append({k: getattr(record, k) for k in shown})
                for row in rows:
                    row["generations"] = by_row.get(row["id"], [])
        return rows

    def payload_history_for(self, pk: int) -> list[dict[str, Any]]:
        """``koywe_payload_history`` rows of document ``pk`` (payloads a correction replaced:
        ``payload_hash``, ``source``, ``line_no``, ``replaced_at``, ``generation``), oldest first."""
        stmt = (
            sa.select(PAYLOAD_HISTORY)
            .where(PAYLOAD_HISTORY.c.document_pk == pk)
            .order_by(PAYLOAD_HISTORY.c.id)
        )
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]

    def find_by_koywe_document_id(
        self, koywe_document_id: str | int, *, include_earlier_generations: bool = False
    ) -> dict[str, Any] | None:
        """Every column of the row whose current generation holds Koywe document ``koywe_document_id``,
        or ``None``. With ``include_earlier_generations`` the row whose earlier generation held it is
        returned too (its own Koywe columns then describe its current generation, not this id)."""
        wanted = str(koywe_document_id)
        with self._read() as session:
            row = session.execute(sa.select(DOCS).where(DOCS.c.koywe_document_id == wanted)).first()
            if row is None and include_earlier_generations:
                holder = (
                    sa.select(GENERATIONS.c.document_pk)
                    .where(GENERATIONS.c.koywe_document_id == wanted)
                    .limit(1)
                    .scalar_subquery()
                )
                row = session.execute(sa.select(DOCS).where(DOCS.c.id == holder)).first()
        return None if row is None else dict(row._mapping)

    def awaiting_taxbureau(self, *, limit: int = 100_000) -> AwaitingDocuments:
        """Rows in ``issued``/``draft``/``not_sent`` with a ``koywe_document_id`` and a validation status
        that is not final (``NULL``, 0 or 1) or a Mexico cancellation still open (``requested``,
        ``pending_acceptance``), at most ``limit``: what a polling pass must ask Koywe about."""
        stmt = (
            sa.select(DOCS.c.koywe_document_id, DOCS.c.payload)
            .where(
                DOCS.c.state.in_(FOLLOWED_STATES),
                DOCS.c.koywe_document_id.is_not(None),
                sa.or_(
                    DOCS.c.taxbureau_validation_status.is_(None),
                    DOCS.c.taxbureau_validation_status.not_in(_FINAL_VALIDATION),
                    DOCS.c.cancellation_status.in_(
                        sorted(s.value for s in CancellationStatus.open_statuses())
                    ),
                ),
            )
            .order_by(DOCS.c.id)
            .limit(limit)
        )
        ids: list[str] = []
        dates: list[str] = []
        with self._read() as session:
            for koywe_id, payload in session.execute(stmt):
                ids.append(str(koywe_id))
                header = payload.get("header") if isinstance(payload, dict) else None
                if isinstance(header, dict) and header.get("issue_date"):
                    dates.append(str(header["issue_date"])[:10])
        return AwaitingDocuments(
            count=len(ids),
            issue_date_from=min(dates) if dates else None,
            issue_date_to=max(dates) if dates else None,
            koywe_document_ids=tuple(ids),
        )

    def taxbureau_rejections(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Rows the tax bureau rejected (state ``rejected``, ``last_error_class`` ``taxbureau_rejected``),
        in id order: ``id, reference, account_id, generation, koywe_document_id, document_number,
        taxbureau_validation_status, taxbureau_validation_comments``."""
        stmt = (
            sa.select(
                DOCS.c.id,
                DOCS.c.reference,
                DOCS.c.account_id,
                DOCS.c.generation,
                DOCS.c.koywe_document_id,
                DOCS.c.document_number,
                DOCS.c.taxbureau_validation_status,
                DOCS.c.taxbureau_validation_comments,
            )
            .where(
                DOCS.c.state == DocumentState.REJECTED.value,
                DOCS.c.last_error_class == TAXBUREAU_REJECTED_CLASS,
            )
            .order_by(DOCS.c.id)
            .limit(limit)
        )
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]

    def stuck(self, *, idle_seconds: float, limit: int = 1000) -> tuple[int, list[dict[str, Any]]]:
        """Rows that should still move (:data:`STUCK_STATES`) but have not changed for ``idle_seconds``
        (``updated_at`` older than the ledger clock minus that), oldest change first: ``(how many, the
        first limit rows as dicts with id, reference, account_id, state, attempts, last_error_class,
        updated_at)``. A row that keeps retrying changes at each attempt; a stuck one does not."""
        cutoff = self._now() - timedelta(seconds=idle_seconds)
        where = (DOCS.c.state.in_(STUCK_STATES), DOCS.c.updated_at < cutoff)
        cols = (
            DOCS.c.id,
            DOCS.c.reference,
            DOCS.c.account_id,
            DOCS.c.state,
            DOCS.c.attempts,
            DOCS.c.last_error_class,
            DOCS.c.updated_at,
        )
        with self._read() as session:
            count = int(session.execute(sa.select(sa.func.count()).select_from(DOCS).where(*where)).scalar())
            rows = [
                dict(r._mapping)
                for r in session.execute(
                    sa.select(*cols).where(*where).order_by(DOCS.c.updated_at, DOCS.c.id).limit(limit)
                )
            ]
        return count, rows

    def rows(
        self,
        *,
        states: Sequence[str] = (),
        account_id: str | None = None,
        run_id: str | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """One page of documents in id order (keyset: ids above ``after_id``), without payloads or raw
        lines: every other column. Filters: ``states`` (any of), ``account_id``, ``run_id`` (ingested by)."""
        stmt = (
            sa.select(*(DOCS.c[name] for name in ROW_COLUMNS))
            .where(DOCS.c.id > after_id)
            .order_by(DOCS.c.id)
            .limit(limit)
        )
        if states:
            stmt = stmt.where(DOCS.c.state.in_([str(s) for s in states]))
        if account_id is not None:
            stmt = stmt.where(DOCS.c.account_id == str(account_id))
        if run_id is not None:
            stmt = stmt.where(DOCS.c.run_id == run_id)
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]


__all__ = ["FOLLOWED_STATES", "ROW_COLUMNS", "STUCK_STATES", "AwaitingDocuments", "QueriesMixin"]
