"""Reading issuance requests from an inbox of JSON Lines files into the ledger.

One line = ``{"reference": str, "account_id": int|str, "document": <Koywe POST /documents payload>}``.
The inbox is an :class:`~airflow.sdk.ObjectStoragePath` (``file://``, ``s3://``, ``gs://`` …) or a
local path. Every line becomes exactly one :class:`~koywe_provider.ledger.IngestItem`: a valid one, or
an invalid one whose error names the file, the line and the field — a bad line or an unreadable file
never stops the others and is never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from koywe_provider.exceptions import DocumentValidationError
from koywe_provider.ledger import IngestItem
from koywe_provider.models import payload_hash, validate_document

INBOX_SUFFIXES = (".jsonl", ".ndjson")
MAX_RAW_LINE = 10_000


def as_storage_path(location: str | Any, *, base_dir: Path | None = None):
    """``location`` as an ``ObjectStoragePath``; a path without a scheme is local, relative to ``base_dir``."""
    from airflow.sdk import ObjectStoragePath

    if not isinstance(location, str):
        return location
    if "://" in location:
        return ObjectStoragePath(location)
    path = Path(location)
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return ObjectStoragePath(path.resolve().as_uri())


def inbox_files(inbox) -> list:
    """The inbox's ``*.jsonl``/``*.ndjson`` files in name order (the inbox itself when it is a file)."""
    if inbox.is_file():
        return [inbox]
    return sorted((p for p in inbox.iterdir() if p.name.endswith(INBOX_SUFFIXES)), key=lambda p: p.name)


def read_inbox(inbox, *, issue_date: date | str | None = None) -> Iterator[IngestItem]:
    """Every line of every inbox file as an ``IngestItem`` (streamed: constant memory).

    :param issue_date: stamped into ``header.issue_date`` of documents that carry none (the run's
        issue date); documents with their own date keep it.
    """
    for path in inbox_files(inbox):
        yield from read_file(path, issue_date=issue_date)


def read_file(path, *, issue_date: date | str | None = None) -> Iterator[IngestItem]:
    """The lines of one file; an unreadable file yields one invalid item naming the file."""
    source = str(path)
    line_no = 0
    try:
        with path.open("rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                yield parse_line(raw, source=source, line_no=line_no, issue_date=issue_date)
    except OSError as err:
        yield _invalid(
            source=source,
            line_no=line_no + 1,
            reference=None,
            account_id="",
            field="file",
            message=f"{source}: file unreadable after line {line_no} ({type(err).__name__}: {err})",
            raw=None,
        )


def parse_line(raw: bytes, *, source: str, line_no: int, issue_date: date | str | None = None) -> IngestItem:
    """Validate one JSON Lines line; never raises for bad content (it becomes an invalid item)."""
    where = f"{source} line {line_no}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return _invalid(
            source, line_no, None, "", "line", f"{where}: not UTF-8 ({err.reason} at byte {err.start})", None
        )
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return _invalid(
            source,
            line_no,
            None,
            "",
            "line",
            f"{where}: not valid JSON ({err.msg}, column {err.colno})",
            text,
        )
    if not isinstance(record, dict):
        return _invalid(source, line_no, None, "", "line", f"{where}: a line must be a JSON object", text)

    reference = record.get("reference")
    reference = (
        str(reference).strip() if isinstance(reference, str | int) and str(reference).strip() else None
    )
    account_id = record.get("account_id")
    account = str(account_id).strip() if isinstance(account_id, str | int) and str(account_id).strip() else ""
    document = record.get("document")
    missing = [name for name, value in (("reference", reference), ("account_id", account)) if not value]
    if not isinstance(document, dict):
        missing.append("document")
    if missing:
        fields = ", ".join(missing)
        return _invalid(
            source, line_no, reference, account, missing[0], f"{where}: missing or empty {fields}", text
        )

    header = document.get("header")
    if isinstance(header, dict):
        header_account = header.get("account_id")
        if header_account not in (None, "") and str(header_account) != account:
            return _invalid(
                source,
                line_no,
                reference,
                account,
                "document.header.account_id",
                f"{where}: document {reference!r}: header.account_id {header_account} differs from the "
                f"line's account_id {account}",
                text,
            )
        document = {**document, "header": _stamped(header, account, issue_date)}
    try:
        model = validate_document(document, reference=reference)
    except DocumentValidationError as err:
        field = err.errors[0][0] if err.errors else "document"
        return _invalid(source, line_no, reference, account, f"document.{field}", f"{where}: {err}", text)
    return IngestItem(
        reference=reference,
        account_id=account,
        payload=model.to_payload(),
        payload_hash=payload_hash(model),
        source=source,
        line_no=line_no,
    )


def _stamped(header: dict, account: str, issue_date: date | str | None) -> dict:
    header = dict(header)
    if header.get("account_id") in (None, ""):
        header["account_id"] = int(account) if account.isdigit() else account
    if not header.get("issue_date") and issue_date:
        header["issue_date"] = str(issue_date)
    return header


def _invalid(
    source: str,
    line_no: int,
    reference: str | None,
    account_id: str,
    field: str,
    message: str,
    raw: str | None,
) -> IngestItem:
    return IngestItem(
        reference=reference or f"{source}#L{line_no}",
        account_id=account_id,
        payload=None,
        payload_hash=None,
        source=source,
        line_no=line_no,
        error=message,
        error_field=field,
        raw_line=raw[:MAX_RAW_LINE] if raw else None,
    )


def count_by(items: Iterable[IngestItem]) -> dict[str, int]:
    """``{"valid": n, "invalid": m}`` of ``items`` (for logs and tests)."""
    counts = {"valid": 0, "invalid": 0}
    for item in items:
        counts["invalid" if item.error else "valid"] += 1
    return counts
