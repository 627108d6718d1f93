"""The issuance ledger API (:class:`Ledger`).

Every method opens its own short-lived session and commits before returning: no transaction is ever
held across an HTTP call. Writes on SQLite start with ``BEGIN IMMEDIATE`` (the write lock is taken up
front, so concurrent writers queue on ``busy_timeout`` instead of failing with ``SQLITE_BUSY``); reads
use a deferred ``BEGIN``. On PostgreSQL the claim queries use ``FOR UPDATE SKIP LOCKED``.

Pure SQLAlchemy: nothing here imports Airflow or another part of ``koywe_provider``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from koywe_provider.ledger.models import (
    CLAIMABLE,
    ISSUED_STATES,
    RAW_LINE_MAX,
    Attempt,
    AttemptKind,
    AttemptOutcome,
    Document,
    DocumentState,
    IngestConflict,
    as_utc,
    utcnow,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: ``pg_advisory_xact_lock`` key serialising concurrent :meth:`Ledger.migrate` calls on PostgreSQL.
MIGRATE_LOCK_KEY = int.from_bytes(b"KOYWLDGR", "big")
#: SQLite ``busy_timeout`` (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Items per transaction chunk in :meth:`Ledger.ingest_many`.
INGEST_CHUNK = 1_000

_DOCS = Document.__table__
_ATTEMPTS = Attempt.__table__
_CONFLICTS = IngestConflict.__table__
_REQUEUEABLE = frozenset(
    {DocumentState.REJECTED, DocumentState.DEAD, DocumentState.RETRYABLE, DocumentState.UNKNOWN}
)
_FAILURE_EXCLUDED = (DocumentState.ISSUED, DocumentState.PENDING, DocumentState.DRAFT)


# --------------------------------------------------------------------------------------------- errors
class LedgerError(Exception):
    """Base class of the ledger's own errors."""


class DocumentNotFoundError(LedgerError, LookupError):
    """No ``koywe_documents`` row has that primary key."""


class InvalidTransitionError(LedgerError):
    """The requested state change is not allowed from the row's current state (e.g. downgrading an
    ``issued`` document, or issuing it again under another Koywe ``document_id``)."""


class LeaseLostError(InvalidTransitionError):
    """The caller no longer holds the row: it is not ``in_flight`` or its ``lease_owner`` is someone else.
    Raised by :meth:`Ledger.mark_sent` (always checks ``in_flight``) and by ``mark_*`` when ``owner`` is given.
    Do NOT send the POST after this."""


# ---------------------------------------------------------------------------------------- data shapes
@dataclass(slots=True)
class IngestItem:
    """One line of an inbox file, as handed to :meth:`Ledger.ingest_many`.

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
    """What :meth:`Ledger.ingest_many` did, per input line.

    ``added``: new ``pending`` rows; ``unchanged``: key already present with the same hash (or an
    invalid line for a row that is invalid already); ``replaced``: an ``invalid`` row replaced by a valid
    line (now ``pending``); ``conflicts``: valid line whose key exists with another hash (a conflict row
    is recorded once; the document is not overwritten); ``invalid``: new ``invalid`` rows;
    ``invalid_ignored``: invalid line for a key that already holds a valid document (recorded as a
    conflict row with the invalid line's ``payload_hash``, usually ``None``).
    """

    added: int = 0
    unchanged: int = 0
    replaced: int = 0
    conflicts: int = 0
    invalid: int = 0
    invalid_ignored: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def total(self) -> int:
        return sum(asdict(self).values())


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
    over). ``attempts`` is the number of POSTs already sent: when it is > 0 the document may exist at
    Koywe and must be looked up by reference before any new POST (:attr:`needs_lookup`).
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

    @property
    def needs_lookup(self) -> bool:
        """True when a POST may already have reached Koywe (``attempts > 0``): look up before resending."""
        return self.attempts > 0


@dataclass(slots=True)
class _Known:
    id: int | None
    state: str
    payload_hash: str | None
    pending_insert: dict[str, Any] | None = field(default=None)


# ---------------------------------------------------------------------------------------------- helpers
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


def _cap(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    value = str(value)
    return value if len(value) <= limit else value[:limit]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _key_in(table: sa.Table, keys: set[tuple[str, str]]) -> sa.ColumnElement[bool]:
    """``account_id IN (...) AND reference IN (...)``: a superset of ``keys`` (filter the rows in Python)
    that both backends answer from the unique (account_id, reference) index; SQLite scans the whole
    table for a row-value ``(a, b) IN (VALUES ...)``."""
    return sa.and_(
        table.c.account_id.in_(sorted({k[0] for k in keys})),
        table.c.reference.in_(sorted({k[1] for k in keys})),
    )


def _states(states: Iterable[str | DocumentState] | str | DocumentState) -> tuple[DocumentState, ...]:
    if isinstance(states, str):
        states = (states,)
    result = tuple(dict.fromkeys(DocumentState(s) for s in states))
    if not result:
        raise ValueError("states must not be empty")
    return result


def _state_clause(states: Sequence[DocumentState], now: datetime) -> sa.ColumnElement[bool]:
    """Rows in ``states``; ``in_flight`` only when its lease has expired (or was never set)."""
    plain = [s.value for s in states if s is not DocumentState.IN_FLIGHT]
    conds: list[sa.ColumnElement[bool]] = []
    if plain:
        conds.append(_DOCS.c.state.in_(plain))
    if DocumentState.IN_FLIGHT in states:
        conds.append(
            sa.and_(
                _DOCS.c.state == DocumentState.IN_FLIGHT.value,
                sa.or_(_DOCS.c.lease_expires_at.is_(None), _DOCS.c.lease_expires_at < now),
            )
        )
    return sa.or_(*conds)


def _due_clause(due_before: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(_DOCS.c.next_attempt_at.is_(None), _DOCS.c.next_attempt_at <= due_before)


def _claim_states(states: Iterable[str | DocumentState] | None) -> tuple[DocumentState, ...]:
    result = _states(CLAIMABLE if states is None else states)
    bad = [s.value for s in result if s not in CLAIMABLE]
    if bad:
        raise ValueError(f"cannot claim documents in state(s) {bad}; claimable: {sorted(CLAIMABLE)}")
    return result


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy (not pysqlite) decide where transactions begin: see _sqlite_on_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("koywe_sqlite_begin", "IMMEDIATE")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"bad koywe_sqlite_begin {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


_CLAIM_RETURNING = (
    _DOCS.c.id,
    _DOCS.c.account_id,
    _DOCS.c.reference,
    _DOCS.c.payload,
    _DOCS.c.attempts,
    _DOCS.c.claimed_from,
    _DOCS.c.koywe_document_id,
    _DOCS.c.lease_owner,
    _DOCS.c.lease_expires_at,
)


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
    )


_CLEAR_LEASE = {"lease_owner": None, "lease_expires_at": None, "claimed_from": None}


# ----------------------------------------------------------------------------------------------- Ledger
class Ledger:
    """The issuance ledger on one database (SQLite file or PostgreSQL).

    ``url``: SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg2://user@host/db``);
    ``engine_kwargs`` go to :func:`sqlalchemy.create_engine` (``pool_pre_ping=True`` by default).
    On SQLite every connection gets ``journal_mode=WAL``, ``busy_timeout=30000`` and ``foreign_keys=ON``.
    Thread-safe: share one instance per process and URL. Call :meth:`migrate` before first use.
    """

    def __init__(self, url: str | URL, **engine_kwargs: Any) -> None:
        engine_kwargs.setdefault("pool_pre_ping", True)
        self.engine: Engine = sa.create_engine(url, **engine_kwargs)
        self.dialect: str = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        self._write: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        self._read: sessionmaker[Session] = sessionmaker(
            self.engine.execution_options(koywe_sqlite_begin="DEFERRED"), expire_on_commit=False
        )

    def __repr__(self) -> str:
        return f"Ledger({self.engine.url.render_as_string(hide_password=True)!r})"

    # The clock; tests may replace it on an instance.
    def _now(self) -> datetime:
        return utcnow()

    # ------------------------------------------------------------------------------------ lifecycle
    def migrate(self) -> None:
        """Upgrade the schema to the newest Alembic revision (version table ``koywe_alembic_version``).

        Idempotent, and safe to call from several processes at once: the whole upgrade runs in one
        transaction that first takes ``pg_advisory_xact_lock`` on PostgreSQL, or the SQLite write lock
        (``BEGIN IMMEDIATE``); a later caller then finds the database at head and does nothing.
        """
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option(
            "sqlalchemy.url", self.engine.url.render_as_string(hide_password=False).replace("%", "%%")
        )
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def current_revision(self) -> str | None:
        """The Alembic revision the database is at (``None`` before :meth:`migrate`)."""
        from alembic.runtime.migration import MigrationContext

        from koywe_provider.ledger.models import VERSION_TABLE

        with self.engine.connect() as conn:
            return MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()

    def dispose(self) -> None:
        """Close every pooled connection (the instance stays usable; new connections open on demand)."""
        self.engine.dispose()

    # ------------------------------------------------------------------------------------ ingestion
    def ingest_many(
        self, items: Iterable[IngestItem], *, run_id: str | None = None, chunk_size: int = INGEST_CHUNK
    ) -> IngestCounts:
        """Record inbox lines (see :class:`IngestItem` and :class:`IngestCounts` for the rules).

        One transaction for the whole call (all or nothing); ``items`` is consumed lazily in chunks of
        ``chunk_size``, each with one query for the existing keys and bulk INSERT/UPDATE statements, so
        memory stays flat for 100,000+ lines. Repeated keys within the input are handled in order.
        ``run_id`` is stored on new/replaced documents and on conflict rows. A concurrent ingest of the
        same new key can make this call fail with ``IntegrityError`` (nothing is written): run it again.
        Raises ``ValueError`` when ``chunk_size < 1``.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        counts = IngestCounts()
        now = self._now()
        with self._write.begin() as session:
            for chunk in _chunks(items, chunk_size):
                self._ingest_chunk(session, chunk, run_id, now, counts)
        return counts

    def _prepare(self, item: IngestItem, run_id: str | None, now: datetime) -> dict[str, Any]:
        source = _cap(item.source or "", 512) or ""
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
            raw_line = _cap(item.raw_line, RAW_LINE_MAX)
        return {
            "account_id": account_id,
            "reference": reference,
            "state": state.value,
            "payload": payload,
            "raw_line": raw_line,
            "payload_hash": _cap(payload_hash, 64),
            "source": source,
            "line_no": item.line_no,
            "run_id": run_id,
            "attempts": 0,
            "last_error": error,
            "last_error_class": None if error is None else _cap(error_class, 64),
            "error_field": _cap(error_field, 256),
            "created_at": now,
            "updated_at": now,
        }

    def _ingest_chunk(
        self,
        session: Session,
        chunk: list[IngestItem],
        run_id: str | None,
        now: datetime,
        counts: IngestCounts,
    ) -> None:
        prepared = [self._prepare(item, run_id, now) for item in chunk]
        keys = {(p["account_id"], p["reference"]) for p in prepared}
        known: dict[tuple[str, str], _Known] = {}
        cols = (_DOCS.c.id, _DOCS.c.account_id, _DOCS.c.reference, _DOCS.c.state, _DOCS.c.payload_hash)
        for row in session.execute(sa.select(*cols).where(_key_in(_DOCS, keys))):
            key = (row.account_id, row.reference)
            if key in keys:
                known[key] = _Known(row.id, row.state, row.payload_hash)

        inserts: list[dict[str, Any]] = []
        updates: dict[int, dict[str, Any]] = {}
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
                known[key] = _Known(None, p["state"], p["payload_hash"], pending_insert=p)
                if valid:
                    counts.added += 1
                else:
                    counts.invalid += 1
            elif valid and existing.state == DocumentState.INVALID:
                replacement = {
                    "payload": p["payload"],
                    "payload_hash": p["payload_hash"],
                    "state": DocumentState.PENDING.value,
                    "raw_line": None,
                    "last_error": None,
                    "last_error_class": None,
                    "error_field": None,
                    "source": p["source"],
                    "line_no": p["line_no"],
                    "run_id": run_id,
                    "updated_at": now,
                }
                if existing.pending_insert is not None:
                    existing.pending_insert.update(replacement)
                else:
                    assert existing.id is not None
                    updates[existing.id] = replacement
                existing.state, existing.payload_hash = DocumentState.PENDING.value, p["payload_hash"]
                counts.replaced += 1
            elif valid and existing.payload_hash == p["payload_hash"]:
                counts.unchanged += 1
            elif valid:
                conflict(p, existing)
                counts.conflicts += 1
            elif existing.state == DocumentState.INVALID:
                counts.unchanged += 1
            else:
                conflict(p, existing)
                counts.invalid_ignored += 1

        if inserts:
            session.execute(sa.insert(_DOCS), inserts)
        if updates:
            stmt = sa.update(_DOCS).where(_DOCS.c.id == sa.bindparam("b_id"))
            session.execute(stmt, [{"b_id": pk, **values} for pk, values in updates.items()])
        if conflicts:
            self._insert_conflicts(session, conflicts)

    def _insert_conflicts(
        self, session: Session, conflicts: dict[tuple[str, str, str | None], dict[str, Any]]
    ) -> None:
        # Unique (account_id, reference, payload_hash) does not stop duplicates when payload_hash is
        # NULL (NULLs are distinct), so filter against the stored rows first; ON CONFLICT DO NOTHING
        # covers the rest (a concurrent ingest of the same conflict).
        pairs = {(k[0], k[1]) for k in conflicts}
        stored = session.execute(
            sa.select(_CONFLICTS.c.account_id, _CONFLICTS.c.reference, _CONFLICTS.c.payload_hash).where(
                _key_in(_CONFLICTS, pairs)
            )
        )
        seen = {(r.account_id, r.reference, r.payload_hash) for r in stored}
        rows = [v for k, v in conflicts.items() if k not in seen]
        if not rows:
            return
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:  # pragma: no cover - other backends are not supported, plain INSERT
            session.execute(sa.insert(_CONFLICTS), rows)
            return
        session.execute(dialect_insert(_CONFLICTS).on_conflict_do_nothing(), rows)

    # ---------------------------------------------------------------------------- planning/claiming
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
        where = [_state_clause(_states(states), now), _due_clause(as_utc(due_before) or now)]
        if run_id is not None:
            where.append(_DOCS.c.run_id == run_id)
        stmt = sa.select(_DOCS.c.id).where(*where).order_by(_DOCS.c.id)
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
            sa.select(_DOCS.c.id)
            .where(
                _DOCS.c.id.between(first_id, last_id),
                _state_clause(_states(states), now),
                _due_clause(as_utc(due_before) or now),
            )
            .order_by(_DOCS.c.id)
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
            for chunk in _chunks(dict.fromkeys(references), 500):
                stmt = sa.select(_DOCS.c.id).where(_DOCS.c.reference.in_(chunk))
                if states is not None:
                    stmt = stmt.where(_state_clause(_states(states), now))
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
            sa.update(_DOCS)
            .where(
                _DOCS.c.id == pk,
                _state_clause(claim_states, now),
                _due_clause(as_utc(due_before) or now),
            )
            .values(
                # SET expressions see the old row: claimed_from receives the previous state.
                claimed_from=_DOCS.c.state,
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
        where = [_state_clause(claim_states, now), _due_clause(as_utc(due_before) or now)]
        if first_id is not None:
            where.append(_DOCS.c.id >= first_id)
        if last_id is not None:
            where.append(_DOCS.c.id <= last_id)
        pick = (
            sa.select(_DOCS.c.id)
            .where(*where)
            .order_by(_DOCS.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._write.begin() as session:
            ids = list(session.scalars(pick))
            if not ids:
                return []
            rows = session.execute(
                sa.update(_DOCS)
                .where(_DOCS.c.id.in_(ids), *where)
                .values(
                    claimed_from=_DOCS.c.state,
                    state=DocumentState.IN_FLIGHT.value,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
                .returning(*_CLAIM_RETURNING)
            ).all()
        return sorted((_claimed(r) for r in rows), key=lambda c: c.pk)

    # ------------------------------------------------------------------------------------- outcomes
    def _transition(
        self,
        pk: int,
        values: Callable[[Any], dict[str, Any]],
        *,
        owner: str | None = None,
        require_in_flight: bool = False,
        forbid: frozenset[DocumentState] = frozenset(),
        attempt: dict[str, Any] | None = None,
    ) -> Any:
        """Lock row ``pk``, check it, apply ``values(row)``, append ``attempt``; one transaction."""
        now = self._now()
        with self._write.begin() as session:
            row = session.execute(
                sa.select(
                    _DOCS.c.id,
                    _DOCS.c.state,
                    _DOCS.c.lease_owner,
                    _DOCS.c.attempts,
                    _DOCS.c.koywe_document_id,
                    _DOCS.c.issued_at,
                    _DOCS.c.claimed_from,
                )
                .where(_DOCS.c.id == pk)
                .with_for_update()
            ).first()
            if row is None:
                raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
            if row.state in forbid:
                raise InvalidTransitionError(f"document {pk} is {row.state}; refusing this change")
            if (require_in_flight or owner is not None) and (
                row.state != DocumentState.IN_FLIGHT or (owner is not None and row.lease_owner != owner)
            ):
                raise LeaseLostError(
                    f"document {pk} is {row.state} held by {row.lease_owner!r}, not in_flight for {owner!r}"
                )
            new_values = values(row)
            new_values["updated_at"] = now
            session.execute(sa.update(_DOCS).where(_DOCS.c.id == pk).values(**new_values))
            if attempt is not None:
                session.execute(sa.insert(_ATTEMPTS).values(document_pk=pk, attempted_at=now, **attempt))
            return row

    @staticmethod
    def _attempt(
        *,
        kind: str,
        outcome: str | None,
        default_outcome: str | None,
        http_status: int | None,
        duration_ms: int | None,
        error: str | None,
        run_id: str | None,
        task: str | None,
    ) -> dict[str, Any] | None:
        if http_status is None and duration_ms is None:
            return None
        outcome = outcome or default_outcome
        if outcome is None:
            raise ValueError("outcome is required to record this attempt")
        return {
            "kind": AttemptKind(kind).value,
            "outcome": AttemptOutcome(outcome).value,
            "http_status": http_status,
            "duration_ms": int(duration_ms or 0),
            "error": error,
            "run_id": run_id,
            "task": task,
        }

    def mark_sent(self, pk: int, *, owner: str | None = None) -> int:
        """Count a POST about to be sent: ``attempts += 1``, committed BEFORE the request goes out (the
        POST may reach Koywe even if the worker dies right after). Returns the new ``attempts``.

        Raises :class:`LeaseLostError` unless the row is ``in_flight`` (and, when ``owner`` is given,
        leased to ``owner``): do not send then. :class:`DocumentNotFoundError` for an unknown ``pk``.
        """
        row = self._transition(
            pk, lambda r: {"attempts": _DOCS.c.attempts + 1}, owner=owner, require_in_flight=True
        )
        return int(row.attempts) + 1

    def mark_issued(
        self,
        pk: int,
        *,
        koywe_document_id: str | int,
        document_number: str | int | None,
        document_status: int | None = None,
        taxbureau_sending_status: int | None = None,
        taxbureau_validation_status: int | None = None,
        taxbureau_validation_comments: str | None = None,
        result_status: int | None = 0,
        adopted: bool = False,
        http_status: int | None = None,
        duration_ms: int | None = None,
        kind: str | None = None,
        outcome: str | None = None,
        run_id: str | None = None,
        task: str | None = None,
    ) -> None:
        """Koywe holds the document: state ``issued`` (``draft`` when ``document_status == 0``), Koywe ids
        and statuses stored, lease/errors/``next_attempt_at`` cleared, ``issued_at`` set (kept if set).

        Allowed from any state (Koywe's answer wins; also used to refresh statuses later). Raises
        :class:`InvalidTransitionError` when the row is already issued/draft under ANOTHER
        ``koywe_document_id`` (a duplicate legal document: alarm, nothing written).
        An attempt row (kind ``lookup`` when ``adopted`` else ``create``; outcome ``adopted``/``issued``)
        is appended when ``http_status`` or ``duration_ms`` is given.
        """
        new_id = str(koywe_document_id)
        state = DocumentState.DRAFT if document_status == 0 else DocumentState.ISSUED

        def values(row: Any) -> dict[str, Any]:
            if row.state in ISSUED_STATES and row.koywe_document_id and row.koywe_document_id != new_id:
                raise InvalidTransitionError(
                    f"document {pk} is already {row.state} as Koywe document {row.koywe_document_id}, "
                    f"not {new_id}: possible duplicate issuance"
                )
            return {
                "state": state.value,
                "koywe_document_id": new_id,
                "document_number": None if document_number is None else str(document_number),
                "document_status": document_status,
                "taxbureau_sending_status": taxbureau_sending_status,
                "taxbureau_validation_status": taxbureau_validation_status,
                "taxbureau_validation_comments": taxbureau_validation_comments,
                "result_status": result_status,
                "last_error": None,
                "last_error_class": None,
                "error_field": None,
                "next_attempt_at": None,
                "issued_at": row.issued_at or self._now(),
                **_CLEAR_LEASE,
            }

        attempt = self._attempt(
            kind=kind or (AttemptKind.LOOKUP if adopted else AttemptKind.CREATE),
            outcome=outcome,
            default_outcome=AttemptOutcome.ADOPTED if adopted else AttemptOutcome.ISSUED,
            http_status=http_status,
            duration_ms=duration_ms,
            error=None,
            run_id=run_id,
            task=task,
        )
        self._transition(pk, values, attempt=attempt)

    def _mark_failed(
        self,
        pk: int,
        state: DocumentState,
        *,
        error: str,
        error_class: str,
        extra: dict[str, Any],
        owner: str | None,
        default_outcome: str | None,
        http_status: int | None,
        duration_ms: int | None,
        kind: str,
        outcome: str | None,
        run_id: str | None,
        task: str | None,
    ) -> None:
        attempt = self._attempt(
            kind=kind,
            outcome=outcome,
            default_outcome=default_outcome,
            http_status=http_status,
            duration_ms=duration_ms,
            error=error,
            run_id=run_id,
            task=task,
        )
        values = {
            "state": state.value,
            "last_error": error,
            "last_error_class": _cap(error_class, 64),
            **_CLEAR_LEASE,
            **extra,
        }
        self._transition(pk, lambda _row: dict(values), owner=owner, forbid=ISSUED_STATES, attempt=attempt)

    def mark_rejected(
        self,
        pk: int,
        *,
        error: str,
        error_class: str,
        koywe_document_id: str | int | None = None,
        result_status: int | None = None,
        error_field: str | None = None,
        owner: str | None = None,
        http_status: int | None = None,
        duration_ms: int | None = None,
        kind: str = AttemptKind.CREATE,
        outcome: str | None = None,
        run_id: str | None = None,
        task: str | None = None,
    ) -> None:
        """Koywe refused it (400, or 2xx with ``result.status != 0``): state ``rejected``; lease and
        ``next_attempt_at`` cleared. ``koywe_document_id`` (kept when ``None``) records a document Koywe
        generated anyway. Raises :class:`InvalidTransitionError` on an issued/draft row,
        :class:`LeaseLostError` when ``owner`` is given and does not hold the row,
        :class:`DocumentNotFoundError`. Attempt outcome ``rejected`` when ``http_status``/``duration_ms`` given.
        """
        extra: dict[str, Any] = {"next_attempt_at": None, "error_field": _cap(error_field, 256)}
        if koywe_document_id is not None:
            extra["koywe_document_id"] = str(koywe_document_id)
        if result_status is not None:
            extra["result_status"] = result_status
        self._mark_failed(
            pk,
            DocumentState.REJECTED,
            error=error,
            error_class=error_class,
            extra=extra,
            owner=owner,
            default_outcome=AttemptOutcome.REJECTED,
            http_status=http_status,
            duration_ms=duration_ms,
            kind=kind,
            outcome=outcome,
            run_id=run_id,
            task=task,
        )

    def mark_retryable(
        self,
        pk: int,
        *,
        error: str,
        error_class: str,
        next_attempt_at: datetime,
        owner: str | None = None,
        http_status: int | None = None,
        duration_ms: int | None = None,
        kind: str = AttemptKind.CREATE,
        outcome: str | None = None,
        run_id: str | None = None,
        task: str | None = None,
    ) -> None:
        """Try again later (429, 5xx, refused before send): state ``retryable`` due at ``next_attempt_at``
        (aware datetime; naive = UTC). Lease cleared. Errors as :meth:`mark_rejected`. Attempt outcome
        ``rate_limited`` for HTTP 429, else ``retryable``."""
        self._mark_failed(
            pk,
            DocumentState.RETRYABLE,
            error=error,
            error_class=error_class,
            extra={"next_attempt_at": as_utc(next_attempt_at)},
            owner=owner,
            default_outcome=AttemptOutcome.RATE_LIMITED if http_status == 429 else AttemptOutcome.RETRYABLE,
            http_status=http_status,
            duration_ms=duration_ms,
            kind=kind,
            outcome=outcome,
            run_id=run_id,
            task=task,
        )

    def mark_unknown(
        self,
        pk: int,
        *,
        error: str,
        error_class: str,
        next_attempt_at: datetime | None = None,
        owner: str | None = None,
        http_status: int | None = None,
        duration_ms: int | None = None,
        kind: str = AttemptKind.CREATE,
        outcome: str | None = None,
        run_id: str | None = None,
        task: str | None = None,
    ) -> None:
        """The POST may or may not have reached Koywe (timeout, dropped connection): state ``unknown``
        (look it up by reference before any resend), due at ``next_attempt_at`` (``None``: at once).
        Lease cleared. Errors as :meth:`mark_rejected`. Attempt outcome ``unknown``."""
        self._mark_failed(
            pk,
            DocumentState.UNKNOWN,
            error=error,
            error_class=error_class,
            extra={"next_attempt_at": as_utc(next_attempt_at)},
            owner=owner,
            default_outcome=AttemptOutcome.UNKNOWN,
            http_status=http_status,
            duration_ms=duration_ms,
            kind=kind,
            outcome=outcome,
            run_id=run_id,
            task=task,
        )

    def mark_dead(
        self,
        pk: int,
        *,
        error: str,
        error_class: str,
        owner: str | None = None,
        http_status: int | None = None,
        duration_ms: int | None = None,
        kind: str = AttemptKind.CREATE,
        outcome: str | None = None,
        run_id: str | None = None,
        task: str | None = None,
    ) -> None:
        """Give up (too many attempts): state ``dead``; lease and ``next_attempt_at`` cleared. Errors as
        :meth:`mark_rejected`. Recording an attempt here needs an explicit ``outcome`` (``ValueError``)."""
        self._mark_failed(
            pk,
            DocumentState.DEAD,
            error=error,
            error_class=error_class,
            extra={"next_attempt_at": None},
            owner=owner,
            default_outcome=None,
            http_status=http_status,
            duration_ms=duration_ms,
            kind=kind,
            outcome=outcome,
            run_id=run_id,
            task=task,
        )

    def release(self, pk: int, *, owner: str | None = None) -> bool:
        """Give back a claimed row that was NOT sent: back to the state it was claimed from (a row taken
        over from an expired ``in_flight`` lease goes to ``unknown`` when ``attempts > 0``, else
        ``pending``), lease cleared. Returns ``False`` (nothing changed) when the row is not ``in_flight``
        or, with ``owner``, not leased to ``owner``. Raises :class:`DocumentNotFoundError`."""

        def values(row: Any) -> dict[str, Any]:
            previous = row.claimed_from or DocumentState.PENDING.value
            if previous == DocumentState.IN_FLIGHT:
                previous = DocumentState.UNKNOWN.value if row.attempts > 0 else DocumentState.PENDING.value
            return {"state": previous, **_CLEAR_LEASE}

        try:
            self._transition(pk, values, owner=owner, require_in_flight=True)
        except LeaseLostError:
            return False
        return True

    def requeue(
        self,
        references: list[str] | None = None,
        *,
        states: Iterable[str | DocumentState] = (DocumentState.REJECTED, DocumentState.DEAD),
        account_id: str | None = None,
    ) -> int:
        """Put rows back to ``pending`` (``attempts`` and ``koywe_document_id`` kept; errors, lease and
        ``next_attempt_at`` cleared). Selects rows in ``states`` and, when given, with those
        ``references`` and/or that ``account_id``. Returns how many rows changed. A requeued row with
        ``attempts > 0`` is looked up before it is POSTed again (``ClaimedDocument.needs_lookup``).
        Raises ``ValueError`` for states other than rejected, dead, retryable, unknown.
        """
        wanted = _states(states)
        bad = [s.value for s in wanted if s not in _REQUEUEABLE]
        if bad:
            raise ValueError(f"cannot requeue state(s) {bad}; allowed: {sorted(_REQUEUEABLE)}")
        now = self._now()
        base = [_DOCS.c.state.in_([s.value for s in wanted])]
        if account_id is not None:
            base.append(_DOCS.c.account_id == account_id)
        values = {
            "state": DocumentState.PENDING.value,
            "last_error": None,
            "last_error_class": None,
            "error_field": None,
            "next_attempt_at": None,
            "updated_at": now,
            **_CLEAR_LEASE,
        }
        changed = 0
        with self._write.begin() as session:
            if references is None:
                changed += session.execute(sa.update(_DOCS).where(*base).values(**values)).rowcount
            else:
                for chunk in _chunks(dict.fromkeys(references), 500):
                    stmt = sa.update(_DOCS).where(*base, _DOCS.c.reference.in_(chunk)).values(**values)
                    changed += session.execute(stmt).rowcount
        return changed

    def record_attempt(
        self,
        pk: int,
        *,
        kind: str,
        outcome: str,
        http_status: int | None = None,
        duration_ms: int = 0,
        error: str | None = None,
        run_id: str | None = None,
        task: str | None = None,
    ) -> None:
        """Append one ``koywe_attempts`` row (e.g. a lookup that found nothing: kind ``lookup``, outcome
        ``not_found``). ``duration_ms`` in milliseconds. Raises ``ValueError`` for an unknown kind/outcome,
        :class:`DocumentNotFoundError` for an unknown ``pk``."""
        values = {
            "document_pk": pk,
            "attempted_at": self._now(),
            "kind": AttemptKind(kind).value,
            "outcome": AttemptOutcome(outcome).value,
            "http_status": http_status,
            "duration_ms": int(duration_ms or 0),
            "error": error,
            "run_id": run_id,
            "task": task,
        }
        with self._write.begin() as session:
            if session.scalar(sa.select(_DOCS.c.id).where(_DOCS.c.id == pk)) is None:
                raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
            session.execute(sa.insert(_ATTEMPTS).values(**values))

    # ------------------------------------------------------------------------------------ reporting
    def counts_by_state(self, *, run_id: str | None = None) -> dict[str, int]:
        """``{state: number of documents}`` with every :class:`DocumentState` value as a key (0 when none);
        only documents ingested by ``run_id`` when given."""
        stmt = sa.select(_DOCS.c.state, sa.func.count()).group_by(_DOCS.c.state)
        if run_id is not None:
            stmt = stmt.where(_DOCS.c.run_id == run_id)
        result = {s.value: 0 for s in DocumentState}
        with self._read() as session:
            for state, n in session.execute(stmt):
                result[state] = int(n)
        return result

    def failures(self, *, run_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Documents not issued/pending/draft (in_flight, rejected, retryable, unknown, invalid, dead), in id
        order, at most ``limit``: dicts with ``id, reference, account_id, state, last_error_class,
        last_error, error_field, source, line_no, attempts``."""
        cols = (
            _DOCS.c.id,
            _DOCS.c.reference,
            _DOCS.c.account_id,
            _DOCS.c.state,
            _DOCS.c.last_error_class,
            _DOCS.c.last_error,
            _DOCS.c.error_field,
            _DOCS.c.source,
            _DOCS.c.line_no,
            _DOCS.c.attempts,
        )
        stmt = (
            sa.select(*cols)
            .where(_DOCS.c.state.not_in([s.value for s in _FAILURE_EXCLUDED]))
            .order_by(_DOCS.c.id)
            .limit(limit)
        )
        if run_id is not None:
            stmt = stmt.where(_DOCS.c.run_id == run_id)
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]

    def conflicts(self, *, run_id: str | None = None) -> list[dict[str, Any]]:
        """``koywe_ingest_conflicts`` rows (all columns) in id order, only those of ``run_id`` when given."""
        stmt = sa.select(_CONFLICTS).order_by(_CONFLICTS.c.id)
        if run_id is not None:
            stmt = stmt.where(_CONFLICTS.c.run_id == run_id)
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]

    def get(self, pk: int) -> dict[str, Any] | None:
        """Every column of document ``pk`` as a dict (aware UTC datetimes), or ``None``."""
        with self._read() as session:
            row = session.execute(sa.select(_DOCS).where(_DOCS.c.id == pk)).first()
        return None if row is None else dict(row._mapping)

    def get_by_reference(self, account_id: str, reference: str) -> dict[str, Any] | None:
        """As :meth:`get`, by the ``(account_id, reference)`` key."""
        stmt = sa.select(_DOCS).where(_DOCS.c.account_id == account_id, _DOCS.c.reference == reference)
        with self._read() as session:
            row = session.execute(stmt).first()
        return None if row is None else dict(row._mapping)

    def attempts_for(self, pk: int) -> list[dict[str, Any]]:
        """``koywe_attempts`` rows of document ``pk`` (all columns), oldest first."""
        stmt = sa.select(_ATTEMPTS).where(_ATTEMPTS.c.document_pk == pk).order_by(_ATTEMPTS.c.id)
        with self._read() as session:
            return [dict(r._mapping) for r in session.execute(stmt)]
