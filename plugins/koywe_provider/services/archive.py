"""The legal archive: the XML and PDF Koywe returns for each document, kept under an ``ObjectStoragePath``.

Koywe returns a document's files base64-encoded in ``electronic_document`` (``document_xml``,
``document_pdf``, ``stamp_img`` when a stamp was asked for, Chile's ``document_transfer_copy_pdf``) in the
answer to ``POST /documents`` and ``GET /documents/{id}`` (Koywe OpenAPI ``Document``; seed ``004_…``).
They are written under ``[koywe] archive_root`` (default ``$AIRFLOW_HOME/koywe_archive/``; ``s3://…``,
``gs://…`` and every scheme Airflow's storage providers register work, with ``[koywe] archive_conn_id``),
one folder per account / country / issue date::

    <root>/<account_id>/<country ISO code>/<YYYY-MM-DD>/<bureau code>_<folio>_<koywe id>.xml|.pdf

and each file's full path, SHA-256 and size are recorded in the ledger (``koywe_archive_files``), never
in XCom. Where the files come from:

- **on create**: the issuing engine already holds Koywe's answer. Once the row is recorded, it hands the
  base64 to an :class:`ArchiveWriter` (a bounded queue and a few writer threads in the same task), so a
  slow object store never holds an issuing thread and at most ``queue_size`` documents' files wait in
  memory; the task ends after the queue is drained.
- **missing files** (a document adopted from a list, which carries no files; a write that failed; a
  ledger from before the archive): :func:`fetch_missing` asks ``GET /documents/{id}`` only for documents
  that lack the XML or the PDF, at most ``[koywe] archive_fetch_max_per_run`` per run, each call through
  the shared rate budget, each document once (seed ``002_…``: mass printout generation is throttled).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import queue
import re
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from koywe_provider import catalogue
from koywe_provider.exceptions import KoyweAuthError, KoyweConfigurationError, KoyweError, KoyweNotFoundError
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.ledger import ArchiveFileKind, Ledger
from koywe_provider.ledger.archive import (
    ArchiveCandidate,
    ArchivedFile,
    archive_files,
    count_lacking_archive,
    lacking_archive,
    mark_archive_fetched,
    record_archive_files,
)
from koywe_provider.models.answers import DocumentAnswer

log = logging.getLogger(__name__)

#: ``electronic_document`` field → archive file kind.
ELECTRONIC_FIELDS: dict[str, ArchiveFileKind] = {
    "document_xml": ArchiveFileKind.XML,
    "document_pdf": ArchiveFileKind.PDF,
    "stamp_img": ArchiveFileKind.STAMP,
    "document_transfer_copy_pdf": ArchiveFileKind.TRANSFER_COPY_PDF,
}
DEFAULT_FETCH_MAX_PER_RUN = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_IMAGE_TYPES = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"), (b"%PDF", "pdf"))


class ArchiveFileError(ValueError):
    """A file Koywe returned cannot be archived (not base64); names the document and the field."""


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    """``[koywe]`` settings of the archive, read at task run time.

    :param enabled: ``archive_enabled`` (default true): archive on create and fetch what is missing.
    :param root: ``archive_root``: an ``ObjectStoragePath`` URL or a local path (default
        ``$AIRFLOW_HOME/koywe_archive/``).
    :param conn_id: ``archive_conn_id``: the Airflow connection of the object store (``aws_default`` …),
        ``None`` for local files or the store's default credentials.
    :param fetch_max_per_run: ``archive_fetch_max_per_run`` (default 200): most documents whose missing
        files one run asks Koywe for.
    """

    enabled: bool = True
    root: str = ""
    conn_id: str | None = None
    fetch_max_per_run: int = DEFAULT_FETCH_MAX_PER_RUN

    @classmethod
    def from_config(cls) -> ArchiveSettings:
        from airflow.sdk import conf

        return cls(
            enabled=conf.getboolean("koywe", "archive_enabled", fallback=True),
            root=conf.get("koywe", "archive_root", fallback="") or default_archive_root(),
            conn_id=conf.get("koywe", "archive_conn_id", fallback="") or None,
            fetch_max_per_run=conf.getint(
                "koywe", "archive_fetch_max_per_run", fallback=DEFAULT_FETCH_MAX_PER_RUN
            ),
        )

    def root_path(self):
        """The root as an ``ObjectStoragePath`` (a local path becomes a ``file://`` URL)."""
        from airflow.sdk import ObjectStoragePath

        location = self.root or default_archive_root()
        if "://" not in location:
            location = Path(location).expanduser().resolve().as_uri()
        return ObjectStoragePath(location, conn_id=self.conn_id)


def default_archive_root() -> str:
    """``$AIRFLOW_HOME/koywe_archive/`` (``~/airflow`` when ``AIRFLOW_HOME`` is unset), as a local path."""
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return str(home / "koywe_archive")


@dataclass(frozen=True, slots=True)
class ArchiveTarget:
    """Where a Koywe document's files go and how they are named (no file content here)."""

    pk: int
    generation: int
    koywe_document_id: str
    account_id: str
    country: str
    issue_date: str
    name: str

    @classmethod
    def of(
        cls,
        *,
        pk: int,
        generation: int,
        account_id: str,
        koywe_document_id: str,
        answer: DocumentAnswer | None = None,
        payload: Mapping[str, Any] | None = None,
        document_number: str | None = None,
    ) -> ArchiveTarget:
        """Koywe's answer first (account, type, folio, issue date), the ledger's payload second."""
        header = payload.get("header") if isinstance(payload, Mapping) else None
        header = header if isinstance(header, Mapping) else {}
        found = answer.header if answer is not None else None
        type_id = (found.document_type_id if found else None) or header.get("document_type_id")
        issue_date = (found.issue_date if found else None) or header.get("issue_date") or "undated"
        folio = (found.document_number if found else None) or document_number or "nofolio"
        bureau = found.document_type_taxbureau if found else None
        country = "XX"
        if type_id is not None:
            try:
                kind = catalogue.document_type(type_id)
                country = catalogue.country(kind.country_id).iso_code
                bureau = bureau or kind.taxbureau_code
            except catalogue.UnknownCatalogueEntry:
                pass
        bureau = bureau or (f"type{type_id}" if type_id is not None else "type")
        return cls(
            pk=pk,
            generation=generation,
            koywe_document_id=str(koywe_document_id),
            account_id=_safe(str(account_id)),
            country=country,
            issue_date=_safe(str(issue_date)[:10]),
            name=_safe(f"{bureau}_{folio}_{koywe_document_id}"),
        )


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "_"


def electronic_files(document: DocumentAnswer) -> dict[str, str]:
    """``{kind: base64 text}`` of the files in ``document.electronic_document`` (``{}`` when none)."""
    electronic = document.electronic_document
    if electronic is None:
        return {}
    values = {**(electronic.model_extra or {}), **electronic.model_dump(exclude_none=True)}
    return {
        kind.value: values[name]
        for name, kind in ELECTRONIC_FIELDS.items()
        if isinstance(values.get(name), str) and values[name].strip()
    }


def _file_name(target: ArchiveTarget, kind: str, data: bytes) -> str:
    if kind == ArchiveFileKind.XML:
        return f"{target.name}.xml"
    if kind == ArchiveFileKind.PDF:
        return f"{target.name}.pdf"
    if kind == ArchiveFileKind.TRANSFER_COPY_PDF:
        return f"{target.name}.cedible.pdf"
    extension = next((ext for magic, ext in _IMAGE_TYPES if data.startswith(magic)), "bin")
    return f"{target.name}.stamp.{extension}"


@dataclass
class ArchiveCounts:
    """What an archive pass did: ``documents`` archived, ``files`` written, their ``bytes``, documents
    whose answer carried ``without_files``, and ``failed`` documents (logged, left for a later fetch)."""

    documents: int = 0
    files: int = 0
    bytes: int = 0
    without_files: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def as_xcom(self, prefix: str = "archived_") -> dict[str, int]:
        """The counts under prefixed keys (``archived_documents`` …), for an issue task's XCom."""
        return {f"{prefix}{name}": value for name, value in asdict(self).items()}


class DocumentArchive:
    """Writes a document's files under ``root`` and records them in ``ledger``.

    :param root: an ``ObjectStoragePath`` (see :class:`ArchiveSettings`).
    """

    def __init__(self, ledger: Ledger, root) -> None:
        self.ledger = ledger
        self.root = root

    def folder(self, target: ArchiveTarget):
        """``<root>/<account>/<country>/<issue date>``."""
        return self.root / target.account_id / target.country / target.issue_date

    def write(self, target: ArchiveTarget, files: Mapping[str, str], *, source: str) -> list[ArchivedFile]:
        """Decode each base64 file, write it, then record every file with its SHA-256 in one
        transaction (a crash in between leaves a file without a record: it is fetched and written
        again, never recorded without being written). Returns what was recorded.

        :raises ArchiveFileError: a file is not valid base64 (nothing written for the document).
        """
        decoded: list[tuple[str, bytes]] = []
        for kind, text in files.items():
            try:
                decoded.append((kind, base64.b64decode(text, validate=False)))
            except (binascii.Error, ValueError) as err:
                raise ArchiveFileError(
                    f"Koywe document {target.koywe_document_id} (ledger id {target.pk}): "
                    f"electronic_document {kind} is not base64 ({err})"
                ) from None
        folder = self.folder(target)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for kind, data in decoded:
            path = folder / _file_name(target, kind, data)
            path.write_bytes(data)
            written.append(ArchivedFile(kind, str(path), hashlib.sha256(data).hexdigest(), len(data)))
        record_archive_files(
            self.ledger,
            target.pk,
            generation=target.generation,
            koywe_document_id=target.koywe_document_id,
            files=written,
            source=source,
        )
        return written

    def archive(
        self, target: ArchiveTarget, files: Mapping[str, str], *, source: str, counts: ArchiveCounts
    ) -> None:
        """:meth:`write`, counted in ``counts``; a document without files is only counted."""
        if not files:
            counts.without_files += 1
            return
        written = self.write(target, files, source=source)
        counts.documents += 1
        counts.files += len(written)
        counts.bytes += sum(f.size_bytes for f in written)


@dataclass
class _Job:
    target: ArchiveTarget
    files: dict[str, str]
    source: str


class ArchiveWriter:
    """Archives documents handed over by the issuing engine, off its threads.

    :meth:`on_recorded` (the :class:`~koywe_provider.services.issuance.Issuer`'s ``on_recorded`` hook)
    takes the base64 files out of Koywe's answer and queues them; ``threads`` writer threads decode,
    hash, write and record them. The queue holds at most ``queue_size`` documents: when the store is
    slower than Koywe, issuing waits for room instead of piling files up in memory. :meth:`close`
    drains the queue and returns the counts. A failed write is logged and counted (``failed``), never
    raised into issuance: the document is then fetched by :func:`fetch_missing`.
    """

    def __init__(self, archive: DocumentArchive, *, threads: int = 2, queue_size: int = 16) -> None:
        self.archive = archive
        self.counts = ArchiveCounts()
        self._threads_wanted = max(1, threads)
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, queue_size))
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def on_recorded(self, doc: Any, document: DocumentAnswer, state: Any, *, adopted: bool = False) -> None:
        """Queue the files of ``document`` (Koywe's answer for claimed row ``doc``, just recorded)."""
        files = electronic_files(document)
        if document.document_id is None:
            return
        if not files:
            with self._lock:
                self.counts.without_files += 1
            return
        target = ArchiveTarget.of(
            pk=doc.pk,
            generation=doc.generation,
            account_id=document.owner_account_id or doc.account_id,
            koywe_document_id=document.document_id,
            answer=document,
            payload=doc.payload,
        )
        self.submit(target, files, source="lookup" if adopted else "create")

    def submit(self, target: ArchiveTarget, files: dict[str, str], *, source: str) -> None:
        """Queue one document's files (waits while the queue is full)."""
        if self._closed:
            raise RuntimeError("the archive writer is closed")
        self._start()
        self._queue.put(_Job(target, files, source))

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self._threads_wanted:
                thread = threading.Thread(
                    target=self._work, name=f"koywe-archive-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                local = ArchiveCounts()
                try:
                    self.archive.archive(job.target, job.files, source=job.source, counts=local)
                except Exception as err:  # a failed write must never stop issuance; fetched later
                    local.failed += 1
                    log.warning(
                        "Archive of Koywe document %s (ledger id %s) failed: %s: %s; it will be fetched again",
                        job.target.koywe_document_id,
                        job.target.pk,
                        type(err).__name__,
                        err,
                    )
                with self._lock:
                    for name, value in local.as_dict().items():
                        setattr(self.counts, name, getattr(self.counts, name) + value)
            finally:
                self._queue.task_done()

    def close(self) -> ArchiveCounts:
        """Wait for every queued document to be written, stop the threads, return the counts."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        return self.counts


@dataclass
class FetchOutcome:
    """A :func:`fetch_missing` pass: documents ``lacking`` files (of the window, never fetched before),
    ``fetched`` (one ``GET /documents/{id}`` each), ``archived`` (documents whose files were written),
    ``files`` written, ``still_missing`` (Koywe's answer did not carry every required file),
    ``not_found`` at Koywe, ``failed`` (an error; fetched again next time), ``remaining`` (left for a
    later run by ``[koywe] archive_fetch_max_per_run``)."""

    lacking: int = 0
    fetched: int = 0
    archived: int = 0
    files: int = 0
    bytes: int = 0
    still_missing: int = 0
    not_found: int = 0
    failed: int = 0
    remaining: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fetch_missing(
    hook: KoyweHook,
    archive: DocumentArchive,
    *,
    issue_date_from: str | None,
    issue_date_to: str | None,
    account_id: str | None = None,
    max_documents: int = DEFAULT_FETCH_MAX_PER_RUN,
) -> FetchOutcome:
    """Fetch and archive the files of the window's documents that lack the XML or the PDF.

    One ``GET /documents/{id}`` per such document (each through the shared rate budget), at most
    ``max_documents`` per call, lowest ledger id first; every document asked is stamped
    ``archive_fetched_at`` so it is never asked again automatically (Koywe throttles mass printouts,
    seed ``002_…``) — except after an error, when it is asked again next time.

    :raises KoyweAuthError: / :raises KoyweConfigurationError: bad credentials (stops the pass).
    """
    ledger = archive.ledger
    wanted = max(0, int(max_documents))
    window = {"issue_date_from": issue_date_from, "issue_date_to": issue_date_to, "account_id": account_id}
    lacking = count_lacking_archive(ledger, **window)
    outcome = FetchOutcome(lacking=lacking, remaining=max(0, lacking - wanted))
    if wanted:
        for candidate in lacking_archive(ledger, **window, limit=wanted):
            _fetch_one(hook, archive, candidate, outcome)
    return outcome


def _fetch_one(
    hook: KoyweHook, archive: DocumentArchive, candidate: ArchiveCandidate, outcome: FetchOutcome
) -> None:
    ledger = archive.ledger
    try:
        document = hook.get_document(candidate.koywe_document_id)
    except (KoyweAuthError, KoyweConfigurationError):
        raise
    except KoyweNotFoundError:
        outcome.fetched += 1
        outcome.not_found += 1
        mark_archive_fetched(ledger, candidate.pk)
        return
    except KoyweError as err:
        outcome.failed += 1
        outcome.errors.append(f"{candidate.reference} (Koywe document {candidate.koywe_document_id}): {err}")
        return
    outcome.fetched += 1
    files = electronic_files(document)
    target = ArchiveTarget.of(
        pk=candidate.pk,
        generation=candidate.generation,
        account_id=candidate.account_id,
        koywe_document_id=candidate.koywe_document_id,
        answer=document,
        payload={
            "header": {"issue_date": candidate.issue_date, "document_type_id": candidate.document_type_id}
        },
        document_number=candidate.document_number,
    )
    counts = ArchiveCounts()
    try:
        archive.archive(target, files, source="fetch", counts=counts)
    except Exception as err:  # the store failed: nothing recorded, asked again next time
        outcome.failed += 1
        outcome.errors.append(f"{candidate.reference}: archive write failed: {type(err).__name__}: {err}")
        return
    mark_archive_fetched(ledger, candidate.pk)
    outcome.archived += counts.documents
    outcome.files += counts.files
    outcome.bytes += counts.bytes
    if any(kind not in files for kind in candidate.missing):
        outcome.still_missing += 1


def verify_archive(ledger: Ledger, *, limit: int = 1_000_000) -> dict[str, int]:
    """Read back every recorded file and compare its SHA-256 with the ledger's: ``{"documents",
    "files", "checksums_ok", "checksums_bad", "missing"}``."""
    from airflow.sdk import ObjectStoragePath

    result = {"documents": 0, "files": 0, "checksums_ok": 0, "checksums_bad": 0, "missing": 0}
    documents = set()
    for record in archive_files(ledger, limit=limit):
        documents.add(record["koywe_document_id"])
        result["files"] += 1
        path = ObjectStoragePath(record["path"])
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            result["missing"] += 1
            continue
        ok = hashlib.sha256(data).hexdigest() == record["sha256"] and len(data) == record["size_bytes"]
        result["checksums_ok" if ok else "checksums_bad"] += 1
    result["documents"] = len(documents)
    return result


__all__ = [
    "DEFAULT_FETCH_MAX_PER_RUN",
    "ELECTRONIC_FIELDS",
    "ArchiveCounts",
    "ArchiveFileError",
    "ArchiveSettings",
    "ArchiveTarget",
    "ArchiveWriter",
    "DocumentArchive",
    "FetchOutcome",
    "default_archive_root",
    "electronic_files",
    "fetch_missing",
    "verify_archive",
]
