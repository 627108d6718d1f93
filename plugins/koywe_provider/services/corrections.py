"""Corrections without SQL: a fixed payload for a ledger document that cannot be at Koywe.

One function, :func:`correct_document`, used by the command line (``python -m koywe_provider.cli fix
--reference R --file F``) and the retry DAG's form (``fix_reference`` + ``fix_document``). It applies
exactly what a corrected inbox line does (:meth:`~koywe_provider.ledger.Ledger.ingest_many`):

* the new payload is validated as an inbox line is (:func:`~koywe_provider.services.ingestion.
  item_from_record`: strict JSON, country rules, arithmetic, the issue date against today);
* a row in ``invalid``, ``rejected`` or ``pending``/``retryable`` never sent in its current generation
  takes the new payload and becomes ``pending``; the old payload's hash goes to the row's payload history,
  ``attempts`` is kept, and a ``rejected`` row starts a new generation (issued under a new Koywe
  reference, ``docs/DESIGN.md`` "Generations");
* a row that may be at Koywe (``in_flight``, ``unknown``, ``issued``, ``draft``, ``not_sent``, ``dead``,
  or sent ``pending``/``retryable``) is refused, as a conflict would be: look it up or re-queue it.

Every refusal is a :class:`CorrectionRefused` whose message is one line naming the field; nothing is
written then.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from koywe_provider.ledger import Ledger, correction_kind
from koywe_provider.services.ingestion import (
    DEFAULT_MAX_LINE_BYTES,
    LineError,
    item_from_record,
    loads_strict,
)

__all__ = ["Correction", "CorrectionRefused", "correct_document", "load_document"]


class CorrectionRefused(ValueError):
    """A correction that was not applied; ``field`` names what is wrong (``"reference"``, ``"state"``,
    ``"document.header.currency_id"``…), ``str()`` is one line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Correction:
    """What :func:`correct_document` did: ``outcome`` ``"replaced"`` (the row now holds the payload,
    ``pending``), ``"unchanged"`` (it already held it) or ``"validated"`` (a dry run: nothing written)."""

    reference: str
    account_id: str
    outcome: str
    previous_state: str
    state: str
    generation: int
    attempts: int
    payload_hash: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_document(data: bytes | str, *, source: str, max_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Any:
    """The JSON of a corrected document as read from a file or a form (``data``), with the inbox's
    limits: at most ``max_bytes``, strict JSON (no repeated key, bounded numbers and nesting).

    :raises CorrectionRefused: too large, not UTF-8 or not valid JSON (naming ``source``).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise CorrectionRefused(
            "file", f"{source}: more than [koywe] max_line_bytes ({max_bytes:,} bytes); nothing was read"
        )
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorrectionRefused("file", f"{source}: not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        return loads_strict(text)
    except LineError as err:
        raise CorrectionRefused(err.field, f"{source}: {err.message}") from None


def correct_document(
    ledger: Ledger,
    *,
    reference: str,
    document: Any,
    account_id: str | int | None = None,
    source: str = "correction",
    run_id: str | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> Correction:
    """Replace the payload of the ledger row ``reference`` by ``document`` (see the module docstring).

    :param document: the corrected ``POST /documents`` body (parsed JSON), or a whole inbox line
        ``{"reference", "account_id", "document"}`` whose reference and account match the row's.
    :param account_id: the row's Koywe account, needed only when several accounts use ``reference``.
    :param source: recorded as the row's ``source`` (the file, or the DAG run that applied it).
    :param now: the clock the document's date is judged at (default: the system clock).
    :param dry_run: validate and check the row, write nothing (``outcome`` ``"validated"``).
    :raises CorrectionRefused: no such row, several, a row that may be at Koywe, or a payload that does
        not validate; nothing was written.
    """
    reference = str(reference or "").strip()
    if not reference:
        raise CorrectionRefused("reference", "a reference is required")
    account = None if account_id in (None, "") else str(account_id).strip()
    rows = [ledger.get(pk) for pk in ledger.ids_for_references([reference])]
    rows = [r for r in rows if r is not None and (account is None or r["account_id"] == account)]
    if not rows:
        where = f" in account {account}" if account else ""
        raise CorrectionRefused("reference", f"no ledger document has reference {reference!r}{where}")
    if len(rows) > 1:
        accounts = ", ".join(sorted(r["account_id"] or "''" for r in rows))
        raise CorrectionRefused(
            "account_id", f"reference {reference!r} is used by accounts {accounts}: name the account"
        )
    row = rows[0]
    if not row["account_id"]:
        raise CorrectionRefused(
            "account_id",
            f"{reference!r} is an inbox line that had no account_id: put the corrected line in the inbox "
            "with its own reference and account",
        )
    state, sends = row["state"], int(row.get("generation_sends") or 0)
    if correction_kind(state, sends) is None:
        sent = " and was sent" if state in ("pending", "retryable") else ""
        raise CorrectionRefused(
            "state",
            f"{reference!r} is {state}{sent}: it may be at Koywe, so a new payload would be a conflict; look "
            "it up (the retry DAG) or re-queue it (requeue) instead",
        )

    record = _record(document, reference=reference, account_id=row["account_id"])
    item = item_from_record(record, source=source, line_no=None, now=now)
    if item.error is not None:
        message = item.error.removeprefix(f"{source}: ")
        raise CorrectionRefused(item.error_field or "document", message)
    if dry_run:
        return _result(row, row, "validated", item.payload_hash)

    counts = ledger.ingest_many([item], run_id=run_id)
    if counts.replaced == 1:
        outcome = "replaced"
    elif counts.unchanged == 1:
        outcome = "unchanged"
    else:  # claimed or changed between the read above and the write: recorded as a conflict
        raise CorrectionRefused(
            "state",
            f"{reference!r} changed while it was being corrected (now {ledger.get(row['id'])['state']}); the "
            "new payload was recorded as a conflict",
        )
    return _result(row, ledger.get(row["id"]) or row, outcome, item.payload_hash)


def _record(document: Any, *, reference: str, account_id: str) -> Any:
    """The inbox line for ``document``: the line itself when it is one (its key must be the row's)."""
    if isinstance(document, dict) and "document" in document:
        line_reference = str(document.get("reference") or "").strip()
        if line_reference and line_reference != reference:
            raise CorrectionRefused(
                "reference",
                f"the line's reference {line_reference!r} is not the corrected row's {reference!r}",
            )
        line_account = document.get("account_id")
        if line_account not in (None, "") and str(line_account).strip() != account_id:
            raise CorrectionRefused(
                "account_id", f"the line's account_id {line_account} is not the row's {account_id}"
            )
        return {**document, "reference": reference, "account_id": account_id}
    return {"reference": reference, "account_id": account_id, "document": document}


def _result(before: dict, after: dict, outcome: str, payload_hash: str | None) -> Correction:
    return Correction(
        reference=before["reference"],
        account_id=before["account_id"],
        outcome=outcome,
        previous_state=before["state"],
        state=after["state"],
        generation=int(after.get("generation") or 1),
        attempts=int(after.get("attempts") or 0),
        payload_hash=payload_hash,
    )
