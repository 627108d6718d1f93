"""Planning and claiming: batches of ids, atomic claims under a lease, the send fence, release.

A claim moves a row to ``in_flight`` under ``lease_owner`` until ``lease_expires_at``, committed before
anything is sent. :meth:`ClaimsMixin.mark_sent` is the fence in front of every POST: one conditional
UPDATE that counts the send only while the caller's lease is live, so a worker whose lease expired
(and may have been taken over) never sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from koywe_provider.ledger._sql import (
    CLEAR_LEASE,
    DOCS,
    chunks,
    due_clause,
    state_clause,
    states_of,
)
from koywe_provider.ledger.database import LedgerDatabase
from koywe_provider.ledger.errors import DocumentNotFoundError, LeaseLostError
from koywe_provider.ledger.models import CLAIMABLE, DocumentState, as_utc
from koywe_provider.models.references import koywe_reference


@dataclass(frozen=True, slots=True)
class BatchSpec:
    """A contiguous id range ``first_id..last_id`` (inclusive) holding ``count`` selected rows
    (``count <= batch_size`` when planned). ``index`` is 0-based. Small enough for an XCom."""

    index: int
    first_id: int
    last_id: int
    count: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchSpec:
        return cls(int(data["index"]), int(data["first_id"]), int(data["last_id"]), int(data["count"]))


@dataclass(frozen=True, slots=True)
class ClaimedDocument:
    """A document now ``in_flight`` under the caller's lease.

    ``previous_state`` is the state it was claimed from (``in_flight`` when an expired lease was taken
    over). ``attempts`` counts the POSTs of every generation; ``generation_sends`` those of the current
    ``generation``: when it is > 0 a POST of this generation may be at Koywe and the document must be
    looked up by :attr:`koywe_reference` before any new POST (:attr:`needs_lookup`). A new generation
    starts with no send, so it is POSTed without a lookup.
    """

    pk: int
    account_id: str
    reference: str
    payload: dict[str, Any] | None
    attempts: int
    previous_state: DocumentState
    koywe_document_id: str | None
    lease_owner: str = ""
    lease_expires_at: datetime | None = None
    generation: int = 1
    generation_sends: int = 0

    @property
    def koywe_reference(self) -> str:
        """The reference sent to Koywe for the current generation: ``reference`` for generation 1,
        ``f"{reference}~{generation}"`` after (:func:`koywe_provider.models.references.koywe_reference`)."""
        return koywe_reference(self.reference, self.generation)

    @property
    def needs_lookup(self) -> bool:
        """True when a POST of this generation may already have reached Koywe (``generation_sends >
        0``): look it up by :attr:`koywe_reference` before resending."""
        return self.generation_sends > 0


_CLAIM_RETURNING = (
    DOCS.c.id,
    DOCS.c.account_id,
    DOCS.c.reference,
    DOCS.c.payload,
    DOCS.c.attempts,
    DOCS.c.claimed_from,
    DOCS.c.koywe_document_id,
    DOCS.c.lease_owner,
    DOCS.c.lease_expires_at,
    DOCS.c.generation,
    DOCS.c.generation_sends,
)

#: Every column but the (possibly large) payload and raw line: what a state change needs to see.
_ROW_COLUMNS = tuple(c for c in DOCS.c if c.name not in ("payload", "raw_line"))


def _claimed(row: Any) -> ClaimedDocument:
    return ClaimedDocument(
        pk=row.id,
        account_id=row.account_id,
        reference=row.reference,
        payload=row.payload,
        attempts=row.attempts,
        previous_state=DocumentState(row.claimed_from),
        koywe_document_id=row.koywe_document_id,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        generation=row.generation,
        generation_sends=row.generation_sends,
    )


def _claim_states(states: Iterable[str | DocumentState] | None) -> tuple[DocumentState, ...]:
    result = states_of(CLAIMABLE if states is None else states)
    bad = [s.value for s in result if s not in CLAIMABLE]
    if bad:
        raise ValueError(f"cannot claim documents in state(s) {bad}; claimable: {sorted(CLAIMABLE)}")
    return result


def lock_row(session: Session, pk: int, *, owner: str | None = None, require_in_flight: bool = False) -> Any:
    """Row ``pk`` (every column but payload and raw line), locked for the rest of the transaction
    (``FOR UPDATE``; SQLite's write lock is already held).

    The lease check of every state change: with ``owner`` (or ``require_in_flight``) the row must be
    ``in_flight`` (and leased to ``owner``), else :class:`LeaseLostError`. An expired lease still
    held by ``owner`` passes: recording what Koywe answered is always right; only sending is fenced
    (:meth:`ClaimsMixin.mark_sent`). Raises :class:`DocumentNotFoundError` for an unknown ``pk``.
    """
    row = session.execute(sa.select(*_ROW_COLUMNS).where(DOCS.c.id == pk).with_for_update()).first()
    if row is None:
        raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
    if (require_in_flight or owner is not None) and (
        row.state != DocumentState.IN_FLIGHT or (owner is not None and row.lease_owner != owner)
    ):
        raise LeaseLostError(
            f"document {pk} is {row.state} held by {row.lease_owner!r}, not in_flight for {owner!r}"
        )
    return row


class ClaimsMixin(LedgerDatabase):
    """Planning (:meth:`plan_batches`, :meth:`ids_in_range`, :meth:`ids_for_references`), claiming
    (:meth:`claim`, :meth:`claim_next`), the send fence (:meth:`mark_sent`) and :meth:`release`."""

    def plan_batches(
        self,
        *,
        batch_size: int,
        states: Iterable[str | DocumentState] = (DocumentState.PENDING,),
        due_before: datetime | None = None,
        run_id: str | None = None,
    ) -> list[BatchSpec]:
        """Split the selected rows, in id order, into contiguous id ranges of at most ``batch_size`` rows.

        Selected: ``state in states`` (``in_flight`` only with an expired lease), due
        (``next_attempt_at`` null or ``<= due_before``; ``due_before`` defaults to now) and, when given,
        ingested by ``run_id``. Returns ``[]`` when nothing is selected. Raises ``ValueError`` when
        ``batch_size < 1`` or a state is unknown. Only ids are read (streamed), never payloads.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        now = self._now()
        where = [state_clause(states_of(states), now), due_clause(as_utc(due_before) or now)]
        if run_id is not None:
            where.append(DOCS.c.run_id == run_id)
        stmt = sa.select(DOCS.c.id).where(*where).order_by(DOCS.c.id)
        batches: list[BatchSpec] = []
        first = last = None
        count = 0
        with self._read() as session:
            for (pk,) in session.execute(stmt.execution_options(yield_per=10_000)):
                if count == 0:
                    first = pk
                last, count = pk, count + 1
                if count == batch_size:
                    batches.append(BatchSpec(len(batches), first, last, count))  # type: ignore[arg-type]
                    count = 0
        if count:
            batches.append(BatchSpec(len(batches), first, last, count))  # type: ignore[arg-type]
        return batches

    def ids_in_range(
        self,
        first_id: int,
        last_id: int,
        *,
        states: Iterable[str | DocumentState] = (DocumentState.PENDING,),
        due_before: datetime | None = None,
    ) -> list[int]:
        """Ids ``first_id..last_id`` (inclusive), ascending, of rows selected as in :meth:`plan_batches`."""
        now = self._now()
        stmt = (
            sa.select(DOCS.c.id)
            .where(
                DOCS.c.id.between(first_id, last_id),
                state_clause(states_of(states), now),
                due_clause(as_utc(due_before) or now),
            )
            .order_by(DOCS.c.id)
        )
        with self._read() as session:
            return list(session.scalars(stmt))

    def ids_for_references(
        self, references: Iterable[str], *, states: Iterable[str | DocumentState] | None = None
    ) -> list[int]:
        """Ids, ascending, of the rows whose ``reference`` is one of ``references`` (any account), only
        those in ``states`` when given (``in_flight`` only with an expired lease); due or not."""
        now = self._now()
        ids: set[int] = set()
        with self._read() as session:
            for chunk in chunks(dict.fromkeys(references), 500):
                stmt = sa.select(DOCS.c.id).where(DOCS.c.reference.in_(chunk))
                if states is not None:
                    stmt = stmt.where(state_clause(states_of(states), now))
                ids.update(session.scalars(stmt))
        return sorted(ids)

    def claim(
        self,
        pk: int,
        *,
        owner: str,
        lease_seconds: int = 900,
        states: Iterable[str | DocumentState] | None = None,
        due_before: datetime | None = None,
    ) -> ClaimedDocument | None:
        """Atomically take document ``pk``: one conditional ``UPDATE ... WHERE id = :pk AND <claimable>
        AND <due> ... RETURNING``, committed before returning.

        Claimable: ``state in states`` (default :data:`CLAIMABLE`: pending, retryable, unknown, and
        in_flight whose lease has expired) and due (``next_attempt_at`` null or ``<= due_before``, default
        now). Sets ``in_flight``, ``lease_owner = owner``, ``lease_expires_at = now + lease_seconds`` and
        remembers the previous state. Returns ``None`` when the row is missing, held by someone else,
        not due or not claimable. Raises ``ValueError`` for states outside :data:`CLAIMABLE`.
        """
        claim_states = _claim_states(states)
        now = self._now()
        stmt = (
            sa.update(DOCS)
            .where(
                DOCS.c.id == pk,
                state_clause(claim_states, now),
                due_clause(as_utc(due_before) or now),
            )
            .values(
                # SET expressions see the old row: claimed_from receives the previous state.
                claimed_from=DOCS.c.state,
                state=DocumentState.IN_FLIGHT.value,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(*_CLAIM_RETURNING)
        )
        with self._write.begin() as session:
            row = session.execute(stmt).first()
        return None if row is None else _claimed(row)

    def claim_next(
        self,
        *,
        owner: str,
        limit: int,
        states: Iterable[str | DocumentState] | None = None,
        due_before: datetime | None = None,
        first_id: int | None = None,
        last_id: int | None = None,
        lease_seconds: int = 900,
    ) -> list[ClaimedDocument]:
        """Claim up to ``limit`` due, claimable rows (lowest ids first, optionally within
        ``first_id..last_id``) in one transaction; returns them in id order (``[]`` when none).

        PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` then ``UPDATE`` in the same transaction, so
        concurrent claimers skip each other's rows. SQLite: the transaction starts with ``BEGIN
        IMMEDIATE`` (writers are serialised). Two concurrent claimers never get the same row.
        ``states`` default and errors as in :meth:`claim`.
        """
        if limit < 1:
            return []
        claim_states = _claim_states(states)
        now = self._now()
        where = [state_clause(claim_states, now), due_clause(as_utc(due_before) or now)]
        if first_id is not None:
            where.append(DOCS.c.id >= first_id)
        if last_id is not None:
            where.append(DOCS.c.id <= last_id)
        pick = (
            sa.select(DOCS.c.id)
            .where(*where)
            .order_by(DOCS.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._write.begin() as session:
            ids = list(session.scalars(pick))
            if not ids:
                return []
            rows = session.execute(
                sa.update(DOCS)
                .where(DOCS.c.id.in_(ids), *where)
                .values(
                    claimed_from=DOCS.c.state,
                    state=DocumentState.IN_FLIGHT.value,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
                .returning(*_CLAIM_RETURNING)
            ).all()
        return sorted((_claimed(r) for r in rows), key=lambda c: c.pk)

    def mark_sent(self, pk: int, *, owner: str, lease_seconds: int) -> int:
        """The fence before a POST: count it, committed BEFORE the request goes out (the POST may reach
        Koywe even if the worker dies right after). Returns the new ``attempts`` (every generation).

        One conditional UPDATE: only while the row is ``in_flight``, leased to ``owner`` and the lease
        has not expired (``lease_expires_at > now``), ``attempts`` and ``generation_sends`` grow by one
        and the lease is extended to ``now + lease_seconds`` (seconds; enough for the request and its
        handling). Otherwise nothing changes and :class:`LeaseLostError` is raised: do NOT send then
        (another run may hold the row). :class:`DocumentNotFoundError` for an unknown ``pk``;
        ``ValueError`` for an empty ``owner``.
        """
        if not owner:
            raise ValueError("mark_sent needs the lease owner")
        now = self._now()
        stmt = (
            sa.update(DOCS)
            .where(
                DOCS.c.id == pk,
                DOCS.c.state == DocumentState.IN_FLIGHT.value,
                DOCS.c.lease_owner == owner,
                DOCS.c.lease_expires_at > now,
            )
            .values(
                attempts=DOCS.c.attempts + 1,
                generation_sends=DOCS.c.generation_sends + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(DOCS.c.attempts)
        )
        with self._write.begin() as session:
            attempts = session.scalar(stmt)
            if attempts is not None:
                return int(attempts)
            row = session.execute(
                sa.select(DOCS.c.state, DOCS.c.lease_owner, DOCS.c.lease_expires_at).where(DOCS.c.id == pk)
            ).first()
        if row is None:
            raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
        if row.state == DocumentState.IN_FLIGHT and row.lease_owner == owner:
            reason = (
                f"its lease expired at {row.lease_expires_at.isoformat() if row.lease_expires_at else '?'}"
            )
        else:
            reason = f"it is {row.state} held by {row.lease_owner!r}"
        raise LeaseLostError(f"document {pk} may not be sent by {owner!r}: {reason}")

    def release(self, pk: int, *, owner: str | None = None) -> bool:
        """Give back a claimed row that was NOT sent: back to the state it was claimed from (a row taken
        over from an expired ``in_flight`` lease goes to ``unknown`` when a POST of its generation was
        sent, else ``pending``), lease cleared. Returns ``False`` (nothing changed) when the row is not
        ``in_flight`` or, with ``owner``, not leased to ``owner``. Raises :class:`DocumentNotFoundError`."""
        now = self._now()
        with self._write.begin() as session:
            try:
                row = lock_row(session, pk, owner=owner, require_in_flight=True)
            except LeaseLostError:
                return False
            previous = row.claimed_from or DocumentState.PENDING.value
            if previous == DocumentState.IN_FLIGHT:
                previous = (
                    DocumentState.UNKNOWN.value if row.generation_sends > 0 else DocumentState.PENDING.value
                )
            session.execute(
                sa.update(DOCS).where(DOCS.c.id == pk).values(state=previous, updated_at=now, **CLEAR_LEASE)
            )
        return True


__all__ = ["BatchSpec", "ClaimedDocument", "ClaimsMixin", "lock_row"]
