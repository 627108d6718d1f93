"""The legal archive's records: which files of which Koywe document were written where, with their SHA-256.

The files themselves (the XML and PDF Koywe returns base64-encoded in ``electronic_document``) are written
by :mod:`koywe_provider.services.archive` under ``[koywe] archive_root``; the ledger keeps one
``koywe_archive_files`` row per file (kind, full ``ObjectStoragePath`` URL, SHA-256, size, source), so
the archive is checked and completed from the ledger, never from XCom. Functions on a
:class:`~koywe_provider.ledger.Ledger`, like :mod:`~koywe_provider.ledger.status_updates`.

Pure SQLAlchemy: nothing here imports Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from koywe_provider.ledger._sql import DOCS
from koywe_provider.ledger.errors import DocumentNotFoundError
from koywe_provider.ledger.models import ISSUED_STATES, ArchiveFile, ArchiveFileKind
from koywe_provider.ledger.reconciliation import issue_date_between

if TYPE_CHECKING:
    from koywe_provider.ledger.ledger import Ledger

ARCHIVE = ArchiveFile.__table__
#: The files a document's archive must hold; a document lacking one of them is fetched (once).
REQUIRED_KINDS: tuple[str, ...] = (ArchiveFileKind.XML.value, ArchiveFileKind.PDF.value)
ARCHIVE_SOURCES = ("create", "lookup", "fetch")


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    """One file written to the archive: ``kind`` (:class:`ArchiveFileKind`), its full ``path`` (an
    ``ObjectStoragePath`` URL), the hex ``sha256`` of its bytes and ``size_bytes``."""

    kind: str
    path: str
    sha256: str
    size_bytes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ArchiveFileKind(self.kind).value)
        if len(self.sha256) != 64:
            raise ValueError(f"sha256 must be 64 hex characters, got {self.sha256!r}")


@dataclass(frozen=True, slots=True)
class ArchiveCandidate:
    """A ledger row whose Koywe document lacks a required archive file (``missing`` kinds): what a fetch
    needs to place its files (account, ``issue_date`` and document type come from the payload)."""

    pk: int
    account_id: str
    reference: str
    generation: int
    koywe_document_id: str
    document_number: str | None
    issue_date: str | None
    document_type_id: Any
    missing: tuple[str, ...]


def record_archive_files(
    ledger: Ledger,
    pk: int,
    *,
    generation: int,
    koywe_document_id: str,
    files: Iterable[ArchivedFile],
    source: str,
) -> int:
    """Record ``files`` of Koywe document ``koywe_document_id`` (row ``pk``, ``generation``) in ONE
    transaction; a file of the same (Koywe id, kind) already recorded is replaced (written again: its
    new path, checksum and size). Returns the number of files recorded.

    :param source: ``create`` (the POST answer), ``lookup`` (adopted with its files) or ``fetch``
        (``GET /documents/{id}``).
    :raises ValueError: an unknown ``source``. :raises DocumentNotFoundError: unknown ``pk``.
    """
    if source not in ARCHIVE_SOURCES:
        raise ValueError(f"source must be one of {ARCHIVE_SOURCES}, got {source!r}")
    files = list(files)
    if not files:
        return 0
    now = ledger._now()
    rows = [
        {
            "document_pk": pk,
            "generation": int(generation),
            "koywe_document_id": str(koywe_document_id),
            "kind": f.kind,
            "path": f.path,
            "sha256": f.sha256,
            "size_bytes": int(f.size_bytes),
            "source": source,
            "archived_at": now,
        }
        for f in files
    ]
    if ledger.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(ARCHIVE)
    stmt = stmt.on_conflict_do_update(
        index_elements=["koywe_document_id", "kind"],
        set_={
            name: stmt.excluded[name]
            for name in ("document_pk", "generation", "path", "sha256", "size_bytes", "source", "archived_at")
        },
    )
    with ledger._write.begin() as session:
        if session.scalar(sa.select(DOCS.c.id).where(DOCS.c.id == pk)) is None:
            raise DocumentNotFoundError(f"no koywe_documents row with id {pk}")
        session.execute(stmt, rows)
    return len(rows)


def mark_archive_fetched(ledger: Ledger, pk: int, at: datetime | None = None) -> None:
    """Stamp row ``pk``'s ``archive_fetched_at`` (default now): its files were asked of Koywe once, and
    are not asked again automatically (Koywe throttles mass printouts, seed ``002_…``)."""
    with ledger._write.begin() as session:
        session.execute(sa.update(DOCS).where(DOCS.c.id == pk).values(archive_fetched_at=at or ledger._now()))


def archive_files_for(ledger: Ledger, pk: int) -> list[dict[str, Any]]:
    """``koywe_archive_files`` rows of document ``pk`` (all columns), in kind order."""
    stmt = sa.select(ARCHIVE).where(ARCHIVE.c.document_pk == pk).order_by(ARCHIVE.c.kind, ARCHIVE.c.id)
    with ledger._read() as session:
        return [dict(r._mapping) for r in session.execute(stmt)]


def archive_files(ledger: Ledger, *, limit: int = 1_000_000) -> list[dict[str, Any]]:
    """Every ``koywe_archive_files`` row (``document_pk, koywe_document_id, kind, path, sha256,
    size_bytes, source``), in id order, at most ``limit``."""
    cols = (
        ARCHIVE.c.document_pk,
        ARCHIVE.c.koywe_document_id,
        ARCHIVE.c.kind,
        ARCHIVE.c.path,
        ARCHIVE.c.sha256,
        ARCHIVE.c.size_bytes,
        ARCHIVE.c.source,
    )
    with ledger._read() as session:
        return [
            dict(r._mapping) for r in session.execute(sa.select(*cols).order_by(ARCHIVE.c.id).limit(limit))
        ]


def archive_summary(ledger: Ledger) -> dict[str, int]:
    """``{"documents", "files", "bytes"}`` recorded in the archive."""
    stmt = sa.select(
        sa.func.count(sa.distinct(ARCHIVE.c.koywe_document_id)),
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(ARCHIVE.c.size_bytes), 0),
    )
    with ledger._read() as session:
        documents, files, size = session.execute(stmt).one()
    return {"documents": int(documents), "files": int(files), "bytes": int(size)}


def _lacking_where(
    issue_date_from: str | None, issue_date_to: str | None, account_id: str | None, include_fetched: bool
) -> tuple[dict[str, Any], list[Any]]:
    have = {
        kind: sa.exists().where(
            ARCHIVE.c.koywe_document_id == DOCS.c.koywe_document_id, ARCHIVE.c.kind == kind
        )
        for kind in REQUIRED_KINDS
    }
    where = [
        DOCS.c.state.in_(sorted(s.value for s in ISSUED_STATES)),
        DOCS.c.koywe_document_id.is_not(None),
        sa.or_(*(~exists for exists in have.values())),
        issue_date_between(issue_date_from, issue_date_to),
    ]
    if account_id is not None:
        where.append(DOCS.c.account_id == str(account_id))
    if not include_fetched:
        where.append(DOCS.c.archive_fetched_at.is_(None))
    return have, where


def lacking_archive(
    ledger: Ledger,
    *,
    issue_date_from: str | None = None,
    issue_date_to: str | None = None,
    account_id: str | None = None,
    include_fetched: bool = False,
    limit: int = 1000,
) -> list[ArchiveCandidate]:
    """Rows whose Koywe document exists (``issued``, ``draft``, ``not_sent``, with a Koywe id) and lacks
    the XML or the PDF in the archive, within the issue-date window (``YYYY-MM-DD``, from the payload's
    ``header.issue_date``; open ends when ``None``) and ``account_id``, in id order, at most ``limit``.
    Rows already fetched once (``archive_fetched_at``) are left out unless ``include_fetched``."""
    have, where = _lacking_where(issue_date_from, issue_date_to, account_id, include_fetched)
    stmt = (
        sa.select(
            DOCS.c.id,
            DOCS.c.account_id,
            DOCS.c.reference,
            DOCS.c.generation,
            DOCS.c.koywe_document_id,
            DOCS.c.document_number,
            DOCS.c.payload,
            *(exists.label(f"has_{kind}") for kind, exists in have.items()),
        )
        .where(*where)
        .order_by(DOCS.c.id)
        .limit(limit)
    )
    out = []
    with ledger._read() as session:
        for row in session.execute(stmt):
            header = row.payload.get("header") if isinstance(row.payload, dict) else None
            header = header if isinstance(header, dict) else {}
            out.append(
                ArchiveCandidate(
                    pk=row.id,
                    account_id=row.account_id,
                    reference=row.reference,
                    generation=row.generation,
                    koywe_document_id=str(row.koywe_document_id),
                    document_number=row.document_number,
                    issue_date=str(header["issue_date"])[:10] if header.get("issue_date") else None,
                    document_type_id=header.get("document_type_id"),
                    missing=tuple(k for k in REQUIRED_KINDS if not getattr(row, f"has_{k}")),
                )
            )
    return out


def count_lacking_archive(
    ledger: Ledger,
    *,
    issue_date_from: str | None = None,
    issue_date_to: str | None = None,
    account_id: str | None = None,
    include_fetched: bool = False,
) -> int:
    """How many rows :func:`lacking_archive` would return without a limit."""
    _, where = _lacking_where(issue_date_from, issue_date_to, account_id, include_fetched)
    with ledger._read() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(DOCS).where(*where)) or 0)


__all__ = [
    "ARCHIVE_SOURCES",
    "REQUIRED_KINDS",
    "ArchiveCandidate",
    "ArchivedFile",
    "archive_files",
    "archive_files_for",
    "archive_summary",
    "count_lacking_archive",
    "lacking_archive",
    "mark_archive_fetched",
    "record_archive_files",
]
