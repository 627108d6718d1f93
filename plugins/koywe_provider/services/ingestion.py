"""Reading issuance requests from an inbox of JSON Lines files into the ledger.

One line = ``{"reference": str, "account_id": int|str, "document": <Koywe POST /documents payload>}``.
The inbox is an :class:`~airflow.sdk.ObjectStoragePath` (``file://``, ``s3://``, ``gs://`` …) or a
local path. Every line becomes exactly one :class:`~koywe_provider.ledger.IngestItem`: a valid one, or
an invalid one whose error names the file, the line and the field — a bad line or an unreadable file
never stops the others and is never dropped.

Bounded input, whatever a line holds (each limit an ``invalid`` item naming the line):

* a line longer than ``max_line_bytes`` (``[koywe] max_line_bytes``, default 1 MiB) is skipped while
  it is read, in blocks: it is never held in memory whole;
* JSON nested deeper than :data:`MAX_DEPTH`, a key repeated in one object, a number at or above
  :data:`~koywe_provider.models.documents.MAX_NUMBER` (or ``NaN``/``Infinity``) and a NUL character
  are refused with the field's dotted path;
* a UTF-8 byte-order mark at the start of a line (a file saved by a Windows editor) is accepted.

A document without ``header.issue_date`` is dated ``issue_date`` when given, else today in the
document's country (:func:`koywe_provider.country_rules.local_today`: a document is issued on its
country's date, whatever the hour in UTC).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from koywe_provider import catalogue, country_rules
from koywe_provider.exceptions import DocumentValidationError
from koywe_provider.ledger import IngestItem
from koywe_provider.models import validate_document
from koywe_provider.models.documents import MAX_NUMBER, hash_of_payload

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "INBOX_SUFFIXES",
    "MAX_DEPTH",
    "MAX_RAW_LINE",
    "LineError",
    "as_storage_path",
    "bounded_lines",
    "count_by",
    "inbox_files",
    "item_from_record",
    "loads_strict",
    "parse_line",
    "read_file",
    "read_inbox",
]

INBOX_SUFFIXES = (".jsonl", ".ndjson")
MAX_RAW_LINE = 10_000
#: Default of ``[koywe] max_line_bytes``: a line above it is not read (1 MiB; a Koywe document is ~2 KB).
DEFAULT_MAX_LINE_BYTES = 1 << 20
#: Deepest JSON nesting accepted (a Koywe document nests about 7 levels: line, document, header,
#: additional, mx_shipping, origin…).
MAX_DEPTH = 32
_BOM = b"\xef\xbb\xbf"
_BLOCK = 1 << 16
_NUMBER_LIMIT = int(MAX_NUMBER)


class LineError(ValueError):
    """A line that cannot be read as an inbox line; ``field`` names where (``"line"``, ``"document.x"``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


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


def read_inbox(
    inbox,
    *,
    issue_date: date | str | None = None,
    now: datetime | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[IngestItem]:
    """Every line of every inbox file as an ``IngestItem`` (streamed: constant memory).

    :param issue_date: stamped into ``header.issue_date`` of documents that carry none; ``None``: today
        in each document's country at ``now``. Documents with their own date keep it.
    :param now: the clock the documents' dates are judged at (default: the system clock).
    :param max_line_bytes: longer lines are skipped unread and recorded as invalid.
    """
    now = now or datetime.now(UTC)
    for path in inbox_files(inbox):
        yield from read_file(path, issue_date=issue_date, now=now, max_line_bytes=max_line_bytes)


def read_file(
    path,
    *,
    issue_date: date | str | None = None,
    now: datetime | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[IngestItem]:
    """The lines of one file; an unreadable file yields one invalid item naming the file and the line
    it stopped at (whatever the storage raised), and the next file goes on."""
    source = str(path)
    now = now or datetime.now(UTC)
    line_no = 0
    try:
        with path.open("rb") as handle:
            for raw, size in bounded_lines(handle, max_line_bytes):
                line_no += 1
                if raw is None:
                    yield _invalid(
                        source,
                        line_no,
                        None,
                        "",
                        "line",
                        f"{source} line {line_no}: {size:,} bytes, longer than [koywe] max_line_bytes "
                        f"({max_line_bytes:,}); the line was not read",
                        None,
                    )
                    continue
                if not raw.strip():
                    continue
                yield parse_line(raw, source=source, line_no=line_no, issue_date=issue_date, now=now)
    except Exception as err:  # any storage failure is this file's, never the others'
        yield _invalid(
            source=source,
            line_no=line_no + 1,
            reference=None,
            account_id="",
            field="file",
            message=f"{source}: file unreadable after line {line_no} ({type(err).__name__}: {err})",
            raw=None,
        )


def bounded_lines(handle, max_bytes: int) -> Iterator[tuple[bytes | None, int]]:
    """``(line, size)`` per line of a binary file read in blocks; ``line`` is ``None`` (and ``size`` its
    length) for a line longer than ``max_bytes``, whose bytes are counted and dropped as they come: no
    more than ``max_bytes`` plus one block is ever held. The newline is not part of ``line``."""
    pending = bytearray()
    skipping = 0  # bytes of an oversized line seen so far (0: not skipping)
    while True:
        block = handle.read(_BLOCK)
        if not block:
            break
        start = 0
        while True:
            end = block.find(b"\n", start)
            piece = block[start:] if end < 0 else block[start:end]
            if skipping:
                skipping += len(piece)
            elif len(pending) + len(piece) > max_bytes:
                skipping = len(pending) + len(piece)
                pending.clear()
            elif end < 0:
                pending += piece
            if end < 0:
                break
            if skipping:
                yield None, skipping
                skipping = 0
            elif pending:
                pending += piece
                yield bytes(pending), len(pending)
                pending.clear()
            else:
                yield piece, len(piece)
            start = end + 1
    if skipping:
        yield None, skipping
    elif pending:
        yield bytes(pending), len(pending)


# --------------------------------------------------------------------------------------------------
# Strict JSON
# --------------------------------------------------------------------------------------------------


class _Duplicated(dict):
    """An object that repeated a key (the first repeated key in ``duplicate``)."""

    duplicate: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    marked = _Duplicated(result)
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _constant(name: str) -> Any:
    raise LineError("line", f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "line"


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"the number {value}"
    if value is None:
        return "null"
    return "a JSON object" if isinstance(value, dict) else type(value).__name__


def _check_tree(root: Any) -> None:
    """Depth, repeated keys, number magnitude and NUL characters of a decoded line (iterative; the
    dotted path is only built for the error)."""
    if not isinstance(root, dict | list):
        return
    # (node, depth, index of the parent entry, key in the parent)
    entries: list[tuple[Any, int, int, Any]] = [(root, 1, -1, None)]
    pending = [0]

    def dotted(index: int, *tail: Any) -> str:
        keys: list[Any] = []
        while index > 0:
            _, _, parent, key = entries[index]
            keys.append(key)
            index = parent
        return _dotted((*reversed(keys), *tail))

    while pending:
        index = pending.pop()
        node, depth, _, _ = entries[index]
        if depth > MAX_DEPTH:
            where = dotted(index)
            raise LineError(where, f"JSON nested deeper than {MAX_DEPTH} levels at {where}")
        if isinstance(node, dict):
            if type(node) is _Duplicated:
                where = dotted(index, node.duplicate)
                raise LineError(
                    where,
                    f"key {node.duplicate!r} appears twice in one JSON object ({where}): which value "
                    "counts would be a guess",
                )
            for key in node:
                if "\x00" in key:
                    where = dotted(index)
                    raise LineError(where, f"a key holds a NUL character at {where}")
            items: Iterable = node.items()
        else:
            items = enumerate(node)
        for key, value in items:
            kind = type(value)
            if kind is dict or kind is list or kind is _Duplicated:
                entries.append((value, depth + 1, index, key))
                pending.append(len(entries) - 1)
            elif kind is str:
                if "\x00" in value:
                    where = dotted(index, key)
                    raise LineError(where, f"a NUL character in {where}")
            elif (kind is int and (value >= _NUMBER_LIMIT or value <= -_NUMBER_LIMIT)) or (
                kind is float and (not math.isfinite(value) or abs(value) >= _NUMBER_LIMIT)
            ):
                where = dotted(index, key)
                raise LineError(where, f"{where}: the number is too large (numbers must be below 10^15)")


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses repeated keys, ``NaN``/``Infinity``, numbers at or above 10^15, NUL
    characters and nesting deeper than :data:`MAX_DEPTH`, and says where a truncated line ends.

    :raises LineError: naming the dotted field (``"document.header.currency_id"``) or ``"line"``.
    """
    body = text.rstrip("\r\n \t")
    try:
        value, end = _DECODER.raw_decode(text, len(text) - len(text.lstrip()))
    except json.JSONDecodeError as err:
        raise LineError("line", _json_error(err, len(body))) from None
    except RecursionError:
        raise LineError("line", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except LineError:
        raise
    except ValueError as err:  # an integer of more digits than Python converts (4,300)
        raise LineError("line", f"not valid JSON: {str(err).split(';')[0]}") from None
    if text[end:].strip():
        column = end + 1 + (len(text[end:]) - len(text[end:].lstrip()))
        raise LineError("line", f"not valid JSON: unexpected data after the JSON value at column {column}")
    _check_tree(value)
    return value


def _json_error(err: json.JSONDecodeError, end: int) -> str:
    """The decoder's complaint, with the real column where a truncated line ends."""
    if err.msg.startswith("Unterminated string"):
        return (
            f"not valid JSON: a string starting at column {err.colno} is never closed; the line ends at "
            f"column {end} (truncated?)"
        )
    if err.pos >= end:
        return f"not valid JSON: the line ends at column {end} before the JSON is complete (truncated?)"
    return f"not valid JSON: {err.msg} at column {err.colno}"


# --------------------------------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------------------------------


def parse_line(
    raw: bytes,
    *,
    source: str,
    line_no: int,
    issue_date: date | str | None = None,
    now: datetime | None = None,
) -> IngestItem:
    """Validate one JSON Lines line; never raises (whatever the line holds, it becomes an invalid item
    naming the file, the line and the field)."""
    where = f"{source} line {line_no}"
    text: str | None = None
    try:
        if raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return _invalid(
                source,
                line_no,
                None,
                "",
                "line",
                f"{where}: not UTF-8 ({err.reason} at byte {err.start})",
                None,
            )
        try:
            record = loads_strict(text)
        except LineError as err:
            return _invalid(source, line_no, None, "", err.field, f"{where}: {err.message}", text)
        return item_from_record(
            record, source=source, line_no=line_no, text=text, issue_date=issue_date, now=now
        )
    except Exception as err:  # a line never stops the others, whatever it raises
        return _invalid(
            source,
            line_no,
            None,
            "",
            "line",
            f"{where}: could not be read ({type(err).__name__}: {str(err)[:300]})",
            text,
        )


def _reference(value: Any) -> tuple[str | None, str | None]:
    """``(reference, problem)``."""
    if isinstance(value, bool):
        return None, f"reference must be a string, got {_json_type(value)}"
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, str):
        return (value.strip(), None) if value.strip() else (None, "missing or empty reference")
    if value is None:
        return None, "missing or empty reference"
    return None, f"reference must be a string, got {_json_type(value)}"


def _account(value: Any) -> tuple[str, str | None]:
    """``(account_id, problem)``."""
    if isinstance(value, bool):
        return "", f"account_id must be an integer or a string of digits, got {_json_type(value)}"
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        return "", f"account_id must be an integer or a string of digits, got {_json_type(value)}"
    if isinstance(value, str):
        return (value.strip(), None) if value.strip() else ("", "missing or empty account_id")
    if value is None:
        return "", "missing or empty account_id"
    return "", f"account_id must be an integer or a string of digits, got {_json_type(value)}"


def item_from_record(
    record: Any,
    *,
    source: str,
    line_no: int | None,
    text: str | None = None,
    issue_date: date | str | None = None,
    now: datetime | None = None,
) -> IngestItem:
    """An inbox line already decoded (``{"reference", "account_id", "document"}``) as an ``IngestItem``:
    the document stamped (account, issue date) and validated like every line (see
    :func:`~koywe_provider.models.validate_document`). ``text`` is kept as the raw line of an invalid
    item; ``line_no`` ``None`` names the source alone (a correction's file). Raises nothing for bad
    content."""
    where = source if line_no is None else f"{source} line {line_no}"
    if not isinstance(record, dict):
        return _invalid(
            source,
            line_no,
            None,
            "",
            "line",
            f'{where}: a line must be a JSON object {{"reference", "account_id", "document"}}, got '
            f"{_json_type(record)}",
            text,
        )
    reference, reference_problem = _reference(record.get("reference"))
    account, account_problem = _account(record.get("account_id"))
    document = record.get("document")
    problems = [(f, p) for f, p in (("reference", reference_problem), ("account_id", account_problem)) if p]
    if document is None:
        problems.append(("document", "missing document"))
    elif not isinstance(document, dict):
        problems.append(
            (
                "document",
                f"document must be a JSON object (a Koywe POST /documents body), got {_json_type(document)}",
            )
        )
    if problems:
        message = "; ".join(p for _, p in problems)
        return _invalid(source, line_no, reference, account, problems[0][0], f"{where}: {message}", text)

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
        document = {**document, "header": _stamped(header, account, issue_date, now)}
    try:
        model = validate_document(document, reference=reference, now=now)
    except DocumentValidationError as err:
        field = err.errors[0][0] if err.errors else "document"
        return _invalid(source, line_no, reference, account, f"document.{field}", f"{where}: {err}", text)
    payload = model.to_payload()
    return IngestItem(
        reference=reference,
        account_id=account,
        payload=payload,
        payload_hash=hash_of_payload(payload),
        source=source,
        line_no=line_no,
    )


def _stamped(header: dict, account: str, issue_date: date | str | None, now: datetime | None) -> dict:
    header = dict(header)
    if header.get("account_id") in (None, ""):
        header["account_id"] = int(account) if account.isdigit() else account
    if not header.get("issue_date"):
        if issue_date:
            header["issue_date"] = str(issue_date)
        else:
            header["issue_date"] = _country_today(header.get("document_type_id"), now).isoformat()
    return header


def _country_today(document_type_id: Any, now: datetime | None) -> date:
    """Today in the country issuing ``document_type_id`` (UTC's today for an unknown type)."""
    try:
        country_id = catalogue.country_of_document_type(document_type_id).country_id
    except (catalogue.UnknownCatalogueEntry, TypeError):
        return (now or datetime.now(UTC)).astimezone(UTC).date()
    return country_rules.local_today(country_id, now)


def _invalid(
    source: str,
    line_no: int | None,
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
