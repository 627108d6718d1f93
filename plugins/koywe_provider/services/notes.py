"""Credit and debit notes: built from the ledger's original, recorded as a row of their own, issued exactly
once by the issuing engine.

:func:`record_note` builds the note (:func:`~koywe_provider.models.notes.build_note`: the country's note
type, ``references[]`` to the original by Koywe id or folio, its reason code, Decimal totals at the
currency's rounding) against what is left to credit according to the ledger, and records it
(:meth:`~koywe_provider.ledger.Ledger.create_note`: the remaining amount checked again under the
original's row lock). Nothing is sent to Koywe there: a refusal happens before any call.

:func:`issue_note` sends it through :class:`~koywe_provider.services.issuance.Issuer` — the same claim,
rate budget, fence, lookup-before-resend and retries as every invoice (``docs/DESIGN.md``, "Issuance
state machine") — so a crash between the POST and its record leaves one note, found by its Koywe
reference and adopted on the next try, never two. A note the retry DAG finishes later is an ordinary row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.ledger import DocumentState, Ledger, NoteExceedsRemainingError
from koywe_provider.ledger.errors import InvalidTransitionError
from koywe_provider.models.notes import (
    LineSelection,
    NoteRefused,
    OriginalDocument,
    build_note,
    payload_total,
)
from koywe_provider.services.issuance import BatchOutcome, IssuancePolicy, Issuer

#: States a note is issued from by :func:`issue_note` (``in_flight`` only once its lease has expired).
ISSUE_STATES: tuple[DocumentState, ...] = (
    DocumentState.PENDING,
    DocumentState.RETRYABLE,
    DocumentState.UNKNOWN,
    DocumentState.IN_FLIGHT,
)
#: ``due_before`` of a note a person asked for now: due whatever its backoff says.
_NOW_OR_LATER = datetime(2999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class NoteRequest:
    """What a person asked for: a ``kind`` of note (``credit_note`` | ``debit_note``), its ``reason``
    (``references[].description``), an optional ``reason_code`` (default: the country's), an ``amount``
    (tax included) or ``lines`` (credit notes; neither = the whole document, or what is left of it),
    and the note's ``issue_date``."""

    kind: str
    issue_date: date
    reason: str | None = None
    reason_code: str | None = None
    amount: Decimal | None = None
    lines: tuple[LineSelection, ...] | None = None


@dataclass(frozen=True, slots=True)
class RecordedNote:
    """A note row (``created`` False: the same request had recorded it already)."""

    id: int
    reference: str
    kind: str
    total: str
    reason_code: str | None
    case: str | None
    created: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def original_of(row: dict[str, Any]) -> OriginalDocument:
    """What a note needs of ledger row ``row``: its payload, its Koywe id (``issued``) or only its folio
    (``external``: issued elsewhere)."""
    koywe_id = row.get("koywe_document_id") if row.get("state") == DocumentState.ISSUED else None
    return OriginalDocument(
        reference=row["reference"],
        payload=row.get("payload") or {},
        koywe_document_id=koywe_id,
        folio=row.get("document_number"),
    )


def record_note(
    ledger: Ledger, row: dict[str, Any], request: NoteRequest, *, request_key: str, run_id: str | None = None
) -> RecordedNote:
    """Build and record the note ``request`` asks for against ledger row ``row`` (no Koywe call).

    A note this ``request_key`` recorded already is returned as it is (a retried task writes no second
    one).

    :raises NoteRefused: the country has no such note for the document, the request does not fit it
        (amount beyond what is left, lines that do not exist …), or the row is not an issued document.
    """
    existing = ledger.note_for_request(row["id"], kind=request.kind, request_key=request_key)
    if existing is not None:
        return _recorded(existing, None, None, created=False)
    position = ledger.credit_position(row["id"])
    draft = build_note(
        original_of(row),
        request.kind,
        remaining=position.remaining,
        issue_date=request.issue_date,
        reason=request.reason,
        reason_code=request.reason_code,
        amount=request.amount,
        lines=list(request.lines) if request.lines else None,
    )
    try:
        note, created = ledger.create_note(
            row["id"], kind=request.kind, payload=draft.payload, request_key=request_key, run_id=run_id
        )
    except NoteExceedsRemainingError as err:
        raise NoteRefused(str(err), field="amount") from err
    except InvalidTransitionError as err:
        raise NoteRefused(str(err)) from err
    return _recorded(note, draft.reason_code.code, draft.case, created=created)


def _recorded(
    note: dict[str, Any], reason_code: str | None, case: str | None, *, created: bool
) -> RecordedNote:
    if reason_code is None:
        references = (note.get("payload") or {}).get("references") or []
        reason_code = str(references[0].get("reference_code")) if references else None
    return RecordedNote(
        id=note["id"],
        reference=note["reference"],
        kind=note["note_kind"],
        total=str(payload_total(note.get("payload"))),
        reason_code=reason_code,
        case=case,
        created=created,
    )


def issue_note(
    hook: KoyweHook,
    ledger: Ledger,
    note_id: int,
    *,
    owner: str,
    run_id: str | None = None,
    task: str | None = None,
    policy: IssuancePolicy | None = None,
) -> tuple[dict[str, Any], BatchOutcome]:
    """Issue note row ``note_id`` now through the issuing engine (due or not; a row that may be at Koywe
    already is looked up by its Koywe reference first). Returns the row as it ends and the engine's
    counts (``skipped`` 1: another run holds it).

    :raises KoyweAuthError: / :raises KoyweConfigurationError: Koywe refuses the credentials.
    """
    row = ledger.get(note_id)
    if row is None:
        raise LookupError(f"no ledger row {note_id}")
    issuer = Issuer(hook, ledger, owner=owner, run_id=run_id, task=task, policy=policy)
    outcome = issuer.issue_range(
        note_id, note_id, states=ISSUE_STATES, references=[row["reference"]], due_before=_NOW_OR_LATER
    )
    return ledger.get(note_id) or row, outcome


__all__ = [
    "ISSUE_STATES",
    "NoteRequest",
    "RecordedNote",
    "issue_note",
    "original_of",
    "record_note",
]
