"""Ingestion: inbox lines into ``koywe_documents`` (new rows, corrections, conflicts, invalid lines).

Rules per line, keyed by ``(account_id, reference)`` (see :class:`IngestCounts`):

- new key: a ``pending`` row (``invalid`` when the line failed validation);
- same payload hash again: nothing changes;
- a new payload for a row that cannot be at Koywe under its current generation — ``invalid``,
  ``pending``/``retryable`` without a send in the current generation, or ``rejected`` — is a
  *correction*: the payload is replaced (the old hash goes to ``koywe_payload_history``; ``attempts``
  kept), the row becomes ``pending``, and a ``rejected`` row starts a new generation (sent under a new
  Koywe reference);
- a new payload for any other row (``in_flight``, ``unknown``, sent ``pending``/``retryable``,
  ``issued``, ``draft``, ``not_sent``, ``dead``) is a conflict: recorded in ``koywe_ingest_conflicts``,
  the row is left alone.

Isolation: each chunk of lines is one transaction, written under a SAVEPOINT; when the database
refuses something of the chunk, the chunk is rolled back to its savepoint and written again line by
line, each line under its own savepoint, and a line the database still refuses is recorded as an
``invalid`` row naming its file, line and the database's error (class ``storage``): one line never
stops the others. Errors of the database itself (connection lost, locked) are raised.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from koywe_provider.ledger._sql import (
    CLEAR_LEASE,
    CONFLICTS,
    DOCS,
    GENERATIONS,
    PAYLOAD_HISTORY,
    cap,
    chunks,
    insert_ignoring_conflicts,
    key_in,
)
from koywe_provider.ledger.database import LedgerDatabase
from koywe_provider.ledger.generations import GenerationRow, start_next_generations
from koywe_provider.ledger.models import RAW_LINE_MAX, DocumentState

#: Items per transaction chunk in :meth:`IngestionMixin.ingest_many`.
INGEST_CHUNK = 1_000

#: States whose payload a new line replaces when the current generation was never sent.
_CORRECTABLE_UNSENT = frozenset({DocumentState.PENDING.value, DocumentState.RETRYABLE.value})


@dataclass(slots=True)
class IngestItem:
    """One line of an inbox file, as handed to :meth:`IngestionMixin.ingest_many`.

    ``error is None``: a valid document; ``payload`` is the JSON object to POST and ``payload_hash`` its
    hash (computed with :func:`payload_hash_of` when ``None``). ``error`` set: the line failed local
    validation; ``error_field`` names the field, ``raw_line`` keeps the original text (capped to
    10,000 characters), ``payload`` may hold the parsed object or ``None`` when the line was not JSON.
    ``reference`` ``None``/``""`` (or longer than 128 characters) on an invalid line: the synthetic
    reference ``f"{source}#L{line_no}"`` and ``account_id ""`` are used.
    """

    reference: str | None
    account_id: str
    payload: dict[str, Any] | None
    payload_hash: str | None
    source: str
    line_no: int | None
    error: str | None = None
    error_field: str | None = None
    raw_line: str | None = None
    #: ``last_error_class`` stored for an invalid line.
    error_class: str = "validation"


@dataclass(slots=True)
class IngestCounts:
    """What :meth:`IngestionMixin.ingest_many` did, per input line.

    ``added``: new ``pending`` rows; ``unchanged``: key already present with the same hash (or an
    invalid line for a row that is invalid already); ``replaced``: a correction — a valid line with a
    new payload for an ``invalid`` row, an unsent ``pending``/``retryable`` row, or a ``rejected`` row
    (which starts a new generation); the row is now ``pending``; ``conflicts``: valid line whose key
    exists with another hash on a row that may be at Koywe (a conflict row is recorded once; the
    document is not overwritten); ``invalid``: new ``invalid`` rows; ``invalid_ignored``: invalid line
    for a key that already holds a valid document (recorded as a conflict row with the invalid line's
    ``payload_hash``, usually ``None``).
    """

    added: int = 0
    unchanged: int = 0
    replaced: int = 0
    conflicts: int = 0
    invalid: int = 0
    invalid_ignored: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: IngestCounts) -> None:
        """Add ``other``'s counts to these."""
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    @property
    def total(self) -> int:
        return sum(asdict(self).values())


@dataclass(slots=True)
class _Known:
    """A key's row as this ingest sees it (updated as the lines of the call are applied)."""

    id: int | None
    state: str
    payload_hash: str | None
    generation: int = 1
    generation_sends: int = 0
    source: str = ""
    line_no: int | None = None
    created_at: datetime | None = None
    reference: str = ""
    pending_insert: dict[str, Any] | None = field(default=None)


@dataclass(slots=True)
class _Correction:
    """A replacement of a stored row's payload, applied only if the row is still as it was read."""

    known: _Known
    expected_state: str
    expected_hash: str | None
    expected_generation: int
    #: Where the replaced payload came from (kept in koywe_payload_history).
    old_source: str
    old_line_no: int | None
    line: dict[str, Any]
    new_generation: bool


def payload_hash_of(payload: Any) -> str:
    """SHA-256 (hex, 64 chars) of the canonical JSON of ``payload`` (sorted keys, compact separators)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def synthetic_reference(source: str, line_no: int | None) -> str:
    """``f"{source}#L{line_no}"``; when longer than 128 characters, ``"<sha256(source)[:12]>~<tail of
    source>#L<line_no>"`` cut to 128 characters."""
    suffix = f"#L{line_no}"
    ref = f"{source}{suffix}"
    if len(ref) <= 128:
        return ref
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
    budget = 128 - len(digest) - 1 - len(suffix)
    return f"{digest}~{source[-budget:] if budget > 0 else ''}{suffix}"[:128]


def _text(value: str | None, limit: int) -> str | None:
    """Capped, without NUL characters (PostgreSQL text cannot hold them)."""
    value = cap(value, limit)
    return None if value is None else value.replace("\x00", "\ufffd")


#: Database errors caused by what a line holds (retried line by line, then recorded as invalid); any
#: other error is the database's own and is raised.
_SERVER_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.InternalError,
    sa_exc.NotSupportedError,
)
_LINE_ERRORS = (sa_exc.StatementError, ValueError, TypeError, OverflowError, RecursionError)


def _is_line_error(exc: BaseException) -> bool:
    return isinstance(exc, _LINE_ERRORS) and not isinstance(exc, _SERVER_ERRORS)


def _unstorable(item: IngestItem, exc: BaseException) -> IngestItem | None:
    """``item`` as an invalid line without payload or raw text, naming what the database refused;
    ``None`` when ``item`` already was one (the database refuses even that: raise)."""
    if item.error_class == "storage":
        return None
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300] if str(exc) else ""
    reference = item.reference if isinstance(item.reference, str) and 0 < len(item.reference) <= 128 else None
    return IngestItem(
        reference=reference,
        account_id=item.account_id if isinstance(item.account_id, str) else "",
        payload=None,
        payload_hash=None,
        source=item.source,
        line_no=item.line_no,
        error=f"{item.source} line {item.line_no}: the ledger could not store this line "
        f"({type(exc).__name__}: {reason})",
        error_field="line",
        error_class="storage",
    )


def _prepare(item: IngestItem, run_id: str | None, now: datetime) -> dict[str, Any]:
    source = cap(item.source or "", 512) or ""
    account_id = "" if item.account_id is None else str(item.account_id)
    reference = "" if item.reference is None else str(item.reference)
    error, error_field, error_class = item.error, item.error_field, item.error_class or "validation"
    payload, payload_hash = item.payload, item.payload_hash
    if error is None:
        if not reference or len(reference) > 128:
            error, error_field = "reference missing or longer than 128 characters", "reference"
        elif len(account_id) > 32:
            error, error_field = "account_id longer than 32 characters", "account_id"
        elif not isinstance(payload, dict):
            error, error_field = "payload is not a JSON object", None
    if error is None:
        state = DocumentState.PENDING
        if payload_hash is None:
            payload_hash = payload_hash_of(payload)
        raw_line = None
    else:
        state = DocumentState.INVALID
        if not reference or len(reference) > 128 or len(account_id) > 32:
            reference, account_id = synthetic_reference(source, item.line_no), ""
        if payload is not None and not isinstance(payload, dict):
            payload = None
        raw_line = _text(item.raw_line, RAW_LINE_MAX)
    return {
        "account_id": account_id,
        "reference": reference,
        "state": state.value,
        "payload": payload,
        "raw_line": raw_line,
        "payload_hash": cap(payload_hash, 64),
        "source": source,
        "line_no": item.line_no,
        "run_id": run_id,
        "attempts": 0,
        "generation": 1,
        "generation_sends": 0,
        "last_error": None if error is None else str(error).replace("\x00", "\ufffd"),
        "last_error_class": None if error is None else cap(error_class, 64),
        "error_field": cap(error_field, 256),
        "next_attempt_at": None,
        "created_at": now,
        "updated_at": now,
    }


def correction_kind(state: str, generation_sends: int) -> str | None:
    """What a new payload does to a row in ``state`` with ``generation_sends`` POSTs of its current
    generation: ``"replace"`` (``invalid``, or ``pending``/``retryable`` never sent), ``"new_generation"``
    (``rejected``: refused for good, re-issued under a new Koywe reference) or ``None`` — the row may
    be at Koywe, so the new payload is a conflict."""
    if state == DocumentState.INVALID:
        return "replace"
    if state in _CORRECTABLE_UNSENT and generation_sends == 0:
        return "replace"
    if state == DocumentState.REJECTED:
        return "new_generation"
    return None


def _correction_kind(existing: _Known) -> str | None:
    return correction_kind(existing.state, existing.generation_sends)


class IngestionMixin(LedgerDatabase):
    """:meth:`ingest_many`: the only way rows enter the ledger."""

    def ingest_many(
        self, items: Iterable[IngestItem], *, run_id: str | None = None, chunk_size: int = INGEST_CHUNK
    ) -> IngestCounts:
        """Record inbox lines (see the module docstring, :class:`IngestItem` and :class:`IngestCounts`).

        ``items`` is consumed lazily in chunks of ``chunk_size``, one transaction each (with one query
        for the existing keys and bulk INSERT statements), so memory stays flat for 1,000,000 lines and
        no write lock is held for a whole file; a crash keeps the chunks already committed, and
        ingesting the same lines again is idempotent. Within a chunk every line is isolated (see the
        module docstring: a line the database refuses becomes an ``invalid`` row, the others are
        stored). Repeated keys within the input are handled in order. A correction is applied only if
        the row is still in the state it was read in (one conditional UPDATE): a row claimed
        meanwhile turns the line into a conflict. ``run_id`` is stored on new/replaced documents and
        on conflict rows. Raises ``ValueError`` when ``chunk_size < 1``; errors of the database
        itself (``OperationalError``: connection lost, locked) propagate.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        counts = IngestCounts()
        now = self._now()
        for chunk in chunks(items, chunk_size):
            with self._write.begin() as session:
                self._ingest_isolated(session, chunk, run_id, now, counts)
        return counts

    def _ingest_isolated(
        self,
        session: Session,
        chunk: list[IngestItem],
        run_id: str | None,
        now: datetime,
        counts: IngestCounts,
    ) -> None:
        """``chunk`` under a savepoint; on a line-caused error, line by line (see the module docstring)."""
        local = IngestCounts()
        try:
            with session.begin_nested():
                self._ingest_chunk(session, chunk, run_id, now, local)
        except Exception as exc:
            if not _is_line_error(exc):
                raise
            if len(chunk) > 1:
                for item in chunk:
                    self._ingest_isolated(session, [item], run_id, now, counts)
                return
            fallback = _unstorable(chunk[0], exc)
            if fallback is None:
                raise
            local = IngestCounts()
            with session.begin_nested():
                self._ingest_chunk(session, [fallback], run_id, now, local)
        counts.add(local)

    def _ingest_chunk(
        self,
        session: Session,
        chunk: list[IngestItem],
        run_id: str | None,
        now: datetime,
        counts: IngestCounts,
    ) -> None:
        prepared = [_prepare(item, run_id, now) for item in chunk]
        keys = {(p["account_id"], p["reference"]) for p in prepared}
        known: dict[tuple[str, str], _Known] = {}
        cols = (
            DOCS.c.id,
            DOCS.c.account_id,
            DOCS.c.reference,
            DOCS.c.state,
            DOCS.c.payload_hash,
            DOCS.c.generation,
            DOCS.c.generation_sends,
            DOCS.c.source,
            DOCS.c.line_no,
            DOCS.c.created_at,
        )
        for row in session.execute(sa.select(*cols).where(key_in(DOCS, keys))):
            key = (row.account_id, row.reference)
            if key in keys:
                known[key] = _Known(
                    row.id,
                    row.state,
                    row.payload_hash,
                    generation=row.generation,
                    generation_sends=row.generation_sends,
                    source=row.source,
                    line_no=row.line_no,
                    created_at=row.created_at,
                    reference=row.reference,
                )

        inserts: list[dict[str, Any]] = []
        corrections: list[_Correction] = []
        # Replaced payloads of rows inserted by this very chunk: their ids are known after the INSERT.
        early_history: list[tuple[tuple[str, str], dict[str, Any]]] = []
        conflicts: dict[tuple[str, str, str | None], dict[str, Any]] = {}

        def conflict(p: dict[str, Any], existing: _Known) -> None:
            ckey = (p["account_id"], p["reference"], p["payload_hash"])
            conflicts.setdefault(
                ckey,
                {
                    "account_id": p["account_id"],
                    "reference": p["reference"],
                    "source": p["source"],
                    "line_no": p["line_no"],
                    "payload_hash": p["payload_hash"],
                    "existing_payload_hash": existing.payload_hash,
                    "detected_at": now,
                    "run_id": run_id,
                },
            )

        for p in prepared:
            key = (p["account_id"], p["reference"])
            existing = known.get(key)
            valid = p["state"] == DocumentState.PENDING
            if existing is None:
                inserts.append(p)
                known[key] = _Known(
                    None,
                    p["state"],
                    p["payload_hash"],
                    source=p["source"],
                    line_no=p["line_no"],
                    reference=p["reference"],
                    pending_insert=p,
                )
                if valid:
                    counts.added += 1
                else:
                    counts.invalid += 1
            elif (
                valid
                and existing.payload_hash == p["payload_hash"]
                and existing.state != DocumentState.INVALID
            ):
                counts.unchanged += 1
            elif valid and (kind := _correction_kind(existing)) is not None:
                history = {
                    "payload_hash": existing.payload_hash,
                    "source": existing.source,
                    "line_no": existing.line_no,
                    "replaced_at": now,
                    "generation": existing.generation,
                }
                if existing.pending_insert is not None:
                    existing.pending_insert.update(self._replacement(p, run_id, now))
                    early_history.append((key, history))
                else:
                    corrections.append(
                        _Correction(
                            known=existing,
                            expected_state=existing.state,
                            expected_hash=existing.payload_hash,
                            expected_generation=existing.generation,
                            old_source=existing.source,
                            old_line_no=existing.line_no,
                            line=p,
                            new_generation=kind == "new_generation",
                        )
                    )
                if kind == "new_generation":
                    existing.generation += 1
                existing.state, existing.payload_hash = DocumentState.PENDING.value, p["payload_hash"]
                existing.generation_sends = 0
                existing.source, existing.line_no = p["source"], p["line_no"]
                counts.replaced += 1
            elif valid:
                conflict(p, existing)
                counts.conflicts += 1
            elif existing.state == DocumentState.INVALID:
                counts.unchanged += 1
            else:
                conflict(p, existing)
                counts.invalid_ignored += 1

        if inserts:
            session.execute(sa.insert(DOCS), inserts)
        if early_history:
            self._insert_early_history(session, early_history)
        for correction in corrections:
            if not self._apply_correction(session, correction, run_id, now):
                # Claimed (or changed) since it was read: the line becomes a conflict after all.
                counts.replaced -= 1
                counts.conflicts += 1
                conflict(correction.line, correction.known)
        if conflicts:
            self._insert_conflicts(session, conflicts)

    @staticmethod
    def _replacement(p: dict[str, Any], run_id: str | None, now: datetime) -> dict[str, Any]:
        return {
            "payload": p["payload"],
            "payload_hash": p["payload_hash"],
            "state": DocumentState.PENDING.value,
            "raw_line": None,
            "last_error": None,
            "last_error_class": None,
            "error_field": None,
            "next_attempt_at": None,
            "source": p["source"],
            "line_no": p["line_no"],
            "run_id": run_id,
            "updated_at": now,
        }

    def _apply_correction(
        self, session: Session, correction: _Correction, run_id: str | None, now: datetime
    ) -> bool:
        known = correction.known
        assert known.id is not None
        expected_hash = (
            DOCS.c.payload_hash.is_(None)
            if correction.expected_hash is None
            else DOCS.c.payload_hash == correction.expected_hash
        )
        guard = [
            DOCS.c.id == known.id,
            DOCS.c.state == correction.expected_state,
            DOCS.c.generation == correction.expected_generation,
            expected_hash,
        ]
        if correction.expected_state != DocumentState.REJECTED:
            guard.append(DOCS.c.generation_sends == 0)
        changed = session.execute(
            sa.update(DOCS)
            .where(*guard)
            .values(**self._replacement(correction.line, run_id, now), **CLEAR_LEASE)
        ).rowcount
        if changed != 1:
            return False
        session.execute(
            sa.insert(PAYLOAD_HISTORY).values(
                document_pk=known.id,
                payload_hash=correction.expected_hash,
                source=correction.old_source,
                line_no=correction.old_line_no,
                replaced_at=now,
                generation=correction.expected_generation,
            )
        )
        if correction.new_generation:
            start_next_generations(
                session,
                [
                    GenerationRow(
                        id=known.id,
                        reference=known.reference,
                        generation=correction.expected_generation,
                        payload_hash=correction.line["payload_hash"],
                        created_at=known.created_at or now,
                    )
                ],
                now,
                row_values={},
            )
        else:
            # An open record of this generation (a generation > 1 not sent yet) follows the payload.
            session.execute(
                sa.update(GENERATIONS)
                .where(
                    GENERATIONS.c.document_pk == known.id,
                    GENERATIONS.c.generation == correction.expected_generation,
                    GENERATIONS.c.koywe_document_id.is_(None),
                    GENERATIONS.c.ended_at.is_(None),
                )
                .values(payload_hash=correction.line["payload_hash"])
            )
        return True

    @staticmethod
    def _insert_early_history(
        session: Session, entries: list[tuple[tuple[str, str], dict[str, Any]]]
    ) -> None:
        keys = {key for key, _ in entries}
        ids = {
            (r.account_id, r.reference): r.id
            for r in session.execute(
                sa.select(DOCS.c.id, DOCS.c.account_id, DOCS.c.reference).where(key_in(DOCS, keys))
            )
        }
        session.execute(
            sa.insert(PAYLOAD_HISTORY), [{"document_pk": ids[key], **history} for key, history in entries]
        )

    def _insert_conflicts(
        self, session: Session, conflicts: dict[tuple[str, str, str | None], dict[str, Any]]
    ) -> None:
        # Unique (account_id, reference, payload_hash) does not stop duplicates when payload_hash is
        # NULL (NULLs are distinct), so filter against the stored rows first; ON CONFLICT DO NOTHING
        # covers the rest (a concurrent ingest of the same conflict).
        pairs = {(k[0], k[1]) for k in conflicts}
        stored = session.execute(
            sa.select(CONFLICTS.c.account_id, CONFLICTS.c.reference, CONFLICTS.c.payload_hash).where(
                key_in(CONFLICTS, pairs)
            )
        )
        seen = {(r.account_id, r.reference, r.payload_hash) for r in stored}
        rows = [v for k, v in conflicts.items() if k not in seen]
        insert_ignoring_conflicts(session, self.dialect, CONFLICTS, rows)


__all__ = [
    "INGEST_CHUNK",
    "IngestCounts",
    "correction_kind",
    "IngestItem",
    "IngestionMixin",
    "payload_hash_of",
    "synthetic_reference",
]
