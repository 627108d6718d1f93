"""Voiding and correcting issued documents: the right path per country, refused before any call when the
country does not allow it, then applied and followed.

============  =====================================================================================
action        path per country of the original (``docs/DESIGN.md``, "Voiding and correcting")
============  =====================================================================================
cancel        Mexico: ``PUT /documents/{id}`` ``document_status`` 2, followed until Koywe says
              ``cancelled`` or ``refused`` (the receiver may have to accept it). Chile, Peru,
              Colombia: a credit note for what is left to credit (the whole document when nothing was
              credited yet). A Chile draft is not cancelled but deleted (``delete_draft``).
credit_note   Chile 61 (exports 112), Peru 07 (factura or boleta), Colombia 91 (POS: its own), Mexico
              CFDI de egreso: the whole document, a partial ``amount`` or ``lines``.
debit_note    Chile 56 (exports 111), Peru 08, Colombia 92: an ``amount``. Mexico has none.
issue_draft   Chile drafts only: ``PUT`` ``document_status`` 0 → 1.
delete_draft  Chile drafts only: ``DELETE /documents/{id}``.
============  =====================================================================================

:func:`plan_voids` reads only the ledger: it resolves each reference, chooses the path, builds and
records the notes (:mod:`koywe_provider.services.notes`), and refuses what does not apply with a message
naming the document and what to do instead — nothing is sent for a refused document, and a refusal never
stops the others. :func:`apply_voids` then makes the calls: notes through the issuing engine (same rate
budget, fence, lookup and retries as invoices), status changes through
:class:`~koywe_provider.services.status_changes.StatusChanger`, deletions with ``DELETE``. Both are
idempotent per request key: a retried task finds its notes again, an applied change is not sent twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any

from koywe_provider import catalogue
from koywe_provider.exceptions import (
    KoyweAuthError,
    KoyweConfigurationError,
    KoyweError,
    KoyweNotFoundError,
    KoyweOutcomeUnknownError,
    KoyweRateLimitedError,
    KoyweRejectedError,
    KoyweTransientError,
)
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.ledger import (
    AttemptKind,
    AttemptOutcome,
    AttemptRecord,
    CancellationStatus,
    DocumentState,
    Ledger,
)
from koywe_provider.ledger.errors import InvalidTransitionError
from koywe_provider.models.documents import validate_document
from koywe_provider.models.notes import NoteRefused, parse_amount, parse_lines
from koywe_provider.models.statuses import DocumentStatus
from koywe_provider.services.issuance import IssuancePolicy
from koywe_provider.services.notes import NoteRequest, issue_note, record_note
from koywe_provider.services.status_changes import DocumentStatusPreconditionError, StatusChanger

#: The actions a person may ask for.
ACTIONS: tuple[str, ...] = ("cancel", "credit_note", "debit_note", "issue_draft", "delete_draft")
#: Item statuses: ``planned`` (to apply), ``refused`` (nothing sent: the country or the document does
#: not allow it), ``done``, ``in_progress`` (followed: a note the retry DAG finishes, a cancellation
#: waiting for the receiver), ``failed`` (Koywe refused it, or it could not be sent).
FAILED_STATUSES = ("refused", "failed")
#: Koywe errors after which applying the same action again is safe: the task is retried.
TRANSIENT_ERRORS = (KoyweTransientError, KoyweRateLimitedError, KoyweOutcomeUnknownError)


class VoidRequestError(ValueError):
    """The request as a whole is unusable (unknown action, no reference, a bad amount); nothing was
    recorded or sent."""


@dataclass(slots=True)
class VoidItem:
    """One document of a request, planned then applied (a JSON-safe XCom entry via :meth:`as_dict`).

    :ivar path: ``credit_note``, ``debit_note``, ``cancel`` (Mexico ``PUT``), ``issue_draft`` or
        ``delete_draft``; ``None`` when refused before a path was found.
    :ivar status: see :data:`FAILED_STATUSES` and the module docstring.
    """

    reference: str
    action: str
    account_id: str | None = None
    ledger_id: int | None = None
    country: str | None = None
    path: str | None = None
    status: str = "planned"
    message: str = ""
    koywe_document_id: str | None = None
    note_id: int | None = None
    note_reference: str | None = None
    note_total: str | None = None
    reason_code: str | None = None
    state: str | None = None
    cancellation_status: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VoidItem:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    def refuse(self, message: str) -> VoidItem:
        self.status, self.message = "refused", message
        return self

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


@dataclass(frozen=True, slots=True)
class ExternalOriginal:
    """An original issued elsewhere, named in the request so a note can reference its folio:
    ``{"reference", "account_id", "folio", "document": <its POST /documents body>}``."""

    reference: str
    account_id: str
    folio: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VoidRequest:
    """A request of the ``koywe_void_documents`` form, read and checked by :meth:`parse`."""

    references: tuple[str, ...]
    action: str
    issue_date: date
    reason: str | None = None
    reason_code: str | None = None
    amount: Decimal | None = None
    lines: tuple[Any, ...] | None = None
    account_id: str | None = None
    external_originals: tuple[ExternalOriginal, ...] = field(default=())

    @classmethod
    def parse(
        cls,
        *,
        references: Any,
        action: Any,
        issue_date: Any,
        reason: Any = None,
        reason_code: Any = None,
        amount: Any = None,
        lines: Any = None,
        account_id: Any = None,
        external_originals: Any = None,
    ) -> VoidRequest:
        """Read the form's values (lists as lists or comma/space separated text, amounts as numbers or
        text). :raises VoidRequestError: naming the field."""
        action = str(action or "").strip()
        if action not in ACTIONS:
            raise VoidRequestError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        externals = tuple(_external(e) for e in _as_list(external_originals, split=False))
        refs = [str(r).strip() for r in _as_list(references) if str(r).strip()]
        refs += [e.reference for e in externals if e.reference not in refs]
        if not refs:
            raise VoidRequestError("references: name at least one ledger reference")
        try:
            parsed_amount = parse_amount(amount)
            parsed_lines = parse_lines(lines)
        except NoteRefused as err:
            raise VoidRequestError(str(err)) from None
        try:
            day = issue_date if isinstance(issue_date, date) else date.fromisoformat(str(issue_date)[:10])
        except ValueError:
            raise VoidRequestError(f"issue_date must be YYYY-MM-DD, got {issue_date!r}") from None
        text = str(reason).strip() if reason not in (None, "") else None
        code = str(reason_code).strip() if reason_code not in (None, "") else None
        account = str(account_id).strip() if account_id not in (None, "") else None
        return cls(
            references=tuple(dict.fromkeys(refs)),
            action=action,
            issue_date=day,
            reason=text,
            reason_code=code,
            amount=parsed_amount,
            lines=tuple(parsed_lines) if parsed_lines else None,
            account_id=account,
            external_originals=externals,
        )


def _as_list(value: Any, *, split: bool = True) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                return list(json.loads(text))
            except ValueError:
                raise VoidRequestError(f"not a JSON list: {text[:80]!r}") from None
        return text.replace(",", " ").split() if split else [text]
    if isinstance(value, Mapping):
        return [value]
    return list(value)


def _external(entry: Any) -> ExternalOriginal:
    if isinstance(entry, str):
        import json

        try:
            entry = json.loads(entry)
        except ValueError:
            raise VoidRequestError("external_originals: each entry is a JSON object") from None
    if not isinstance(entry, Mapping):
        raise VoidRequestError(
            "external_originals: each entry is an object {reference, account_id, folio, document}"
        )
    missing = [k for k in ("reference", "account_id", "folio", "document") if entry.get(k) in (None, "")]
    if missing or not isinstance(entry.get("document"), Mapping):
        raise VoidRequestError(
            f"external_originals: an entry lacks {', '.join(missing) or 'a document object'}"
        )
    return ExternalOriginal(
        reference=str(entry["reference"]).strip(),
        account_id=str(entry["account_id"]).strip(),
        folio=str(entry["folio"]).strip(),
        document=dict(entry["document"]),
    )


# --------------------------------------------------------------------------------------------------
# Planning: the ledger only, no Koywe call
# --------------------------------------------------------------------------------------------------


def _country_of(row: Mapping[str, Any]) -> catalogue.Country | None:
    header = (row.get("payload") or {}).get("header") or {}
    try:
        return catalogue.country_of_document_type(header.get("document_type_id"))
    except catalogue.UnknownCatalogueEntry:
        return None


def _resolve(ledger: Ledger, reference: str, account_id: str | None) -> tuple[dict[str, Any] | None, str]:
    row = ledger.find_by_reference(reference, account_id=account_id)
    if row is not None:
        return row, ""
    if account_id is None and ledger.ids_for_references([reference]):
        return None, f"{reference}: several accounts use this reference; give account_id"
    where = f" in account {account_id}" if account_id else ""
    return None, f"{reference}: not in the ledger{where} (nothing was sent)"


def _register(ledger: Ledger, external: ExternalOriginal, run_id: str | None) -> str | None:
    """Record an original issued elsewhere; the problem as text, or ``None``."""
    from koywe_provider.exceptions import DocumentValidationError

    try:
        validate_document(external.document, reference=external.reference)
        ledger.register_external(
            account_id=external.account_id,
            reference=external.reference,
            payload=external.document,
            folio=external.folio,
            source=f"external:{run_id or 'manual'}",
            run_id=run_id,
        )
    except (DocumentValidationError, InvalidTransitionError, ValueError) as err:
        return f"{external.reference}: cannot record it as issued elsewhere: {err}"
    return None


def plan_voids(
    ledger: Ledger, request: VoidRequest, *, request_key: str, run_id: str | None = None
) -> list[VoidItem]:
    """One :class:`VoidItem` per reference of ``request``, in order: ``planned`` (notes recorded as
    ``pending`` rows, ready to send), ``done`` (already as asked), ``in_progress`` (already under way) or
    ``refused`` (with the reason). No Koywe call is made.

    ``request_key`` identifies the request (``<dag_id>/<run_id>``): planning it again finds the notes it
    recorded instead of writing new ones.
    """
    problems = {e.reference: _register(ledger, e, run_id) for e in request.external_originals}
    items: list[VoidItem] = []
    for reference in request.references:
        item = VoidItem(reference=reference, action=request.action, account_id=request.account_id)
        items.append(item)
        if problems.get(reference):
            item.refuse(problems[reference] or "")
            continue
        account = request.account_id
        external = next((e for e in request.external_originals if e.reference == reference), None)
        if external is not None:
            account = external.account_id
        row, why = _resolve(ledger, reference, account)
        if row is None:
            item.refuse(why)
            continue
        _plan_one(ledger, item, row, request, request_key=request_key, run_id=run_id)
    return items


def _describe(row: Mapping[str, Any]) -> str:
    header = (row.get("payload") or {}).get("header") or {}
    try:
        kind = catalogue.document_type(header.get("document_type_id")).name
    except catalogue.UnknownCatalogueEntry:
        kind = f"document type {header.get('document_type_id')}"
    folio = f" folio {row['document_number']}" if row.get("document_number") else ""
    return f"{row['reference']} ({kind}{folio}, {row['state']})"


def _plan_one(
    ledger: Ledger,
    item: VoidItem,
    row: dict[str, Any],
    request: VoidRequest,
    *,
    request_key: str,
    run_id: str | None,
) -> None:
    country = _country_of(row)
    item.ledger_id, item.account_id = row["id"], row["account_id"]
    item.country = country.iso_code if country else None
    item.koywe_document_id = row.get("koywe_document_id")
    item.state, item.cancellation_status = row["state"], row.get("cancellation_status")
    what = _describe(row)
    if country is None:
        item.refuse(f"{what}: its document type is not in the catalogue; nothing can be voided through Koywe")
        return
    if row.get("original_pk") is not None:
        item.refuse(
            f"{what} is a {row.get('note_kind', 'note').replace('_', ' ')}: name the original document"
        )
        return
    action = request.action
    if action in ("issue_draft", "delete_draft"):
        _plan_draft(item, row, country, action, what)
        return
    if row["state"] == DocumentState.DRAFT:
        item.refuse(
            f"{what} is a draft, not a legal document yet: issue it (issue_draft) or delete it (delete_draft)"
        )
        return
    if action == "cancel" and country.country_id == catalogue.MEXICO:
        _plan_mexico_cancel(item, row, what)
        return
    if row.get("document_status") == DocumentStatus.CANCELLED:
        item.refuse(f"{what} is cancelled already: nothing to credit or debit")
        return
    if row.get("cancellation_status") in CancellationStatus.open_statuses() and action != "debit_note":
        item.refuse(f"{what}: its cancellation is pending the receiver's acceptance; wait for the outcome")
        return
    if row["state"] not in (DocumentState.ISSUED, DocumentState.EXTERNAL):
        hint = (
            " (Koywe generated it but the tax bureau does not have it yet: wait for it)"
            if row["state"] == DocumentState.NOT_SENT
            else ""
        )
        item.refuse(f"{what} is not an issued document: no note can modify it{hint}")
        return
    kind = "credit_note" if action in ("cancel", "credit_note") else "debit_note"
    if action == "cancel" and (request.amount is not None or request.lines):
        item.refuse(f"{what}: cancel voids what is left of the document; for part of it use credit_note")
        return
    item.path = kind
    if (
        action == "cancel"
        and ledger.note_for_request(row["id"], kind=kind, request_key=request_key) is None
        and (position := ledger.credit_position(row["id"])).status == "voided"
    ):
        item.status = "done"
        item.message = (
            f"{what} is voided already: credit notes cover its total {position.total} (nothing sent)"
        )
        return
    note_request = NoteRequest(
        kind=kind,
        issue_date=request.issue_date,
        reason=request.reason,
        reason_code=request.reason_code,
        amount=request.amount,
        lines=request.lines,
    )
    try:
        note = record_note(ledger, row, note_request, request_key=request_key, run_id=run_id)
    except NoteRefused as err:
        field_name = f" [{err.field}]" if err.field else ""
        item.refuse(f"{what}{field_name}: {err} (nothing was sent)")
        return
    item.note_id, item.note_reference, item.note_total = note.id, note.reference, note.total
    item.reason_code = note.reason_code
    item.message = f"{note.kind.replace('_', ' ')} {note.reference} of {note.total} recorded" + (
        "" if note.created else " (by an earlier try of this request)"
    )


def _plan_draft(
    item: VoidItem, row: Mapping[str, Any], country: catalogue.Country, action: str, what: str
) -> None:
    if country.country_id != catalogue.CHILE:
        item.refuse(f"{what}: only Chile issues drafts; {country.name} has none to {action.split('_')[0]}")
        return
    state = row["state"]
    if action == "delete_draft" and state == DocumentState.DELETED:
        item.path, item.status, item.message = action, "done", f"{what}: deleted already (nothing sent)"
        return
    if action == "issue_draft" and state == DocumentState.ISSUED:
        item.path, item.status, item.message = action, "done", f"{what}: issued already (nothing sent)"
        return
    if state != DocumentState.DRAFT or not row.get("koywe_document_id"):
        instead = " (cancel it with a credit note: action cancel)" if state == DocumentState.ISSUED else ""
        item.refuse(f"{what} is not a draft at Koywe: Koywe {action.replace('_', 's ')} only{instead}")
        return
    item.path = action


def _plan_mexico_cancel(item: VoidItem, row: Mapping[str, Any], what: str) -> None:
    item.path = "cancel"
    status = row.get("cancellation_status")
    if row.get("document_status") == DocumentStatus.CANCELLED or status == CancellationStatus.CANCELLED:
        item.status, item.message = "done", f"{what} is cancelled already (nothing sent)"
    elif status in CancellationStatus.open_statuses() and status != CancellationStatus.REQUESTED:
        item.status = "in_progress"
        item.message = f"{what}: cancellation pending the receiver's acceptance (nothing sent); followed"
    elif row["state"] != DocumentState.ISSUED or not row.get("koywe_document_id"):
        item.refuse(
            f"{what}: only an invoice issued through Koywe can be cancelled there"
            + (
                " (issued elsewhere: cancel it where it was issued)"
                if row["state"] == DocumentState.EXTERNAL
                else ""
            )
        )


# --------------------------------------------------------------------------------------------------
# Applying: the calls
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ApplyOutcome:
    """What :func:`apply_voids` did: every item, and the transient errors after which the whole apply
    should be tried again (each action is idempotent)."""

    items: list[VoidItem]
    transient: list[str] = field(default_factory=list)


def apply_voids(
    hook: KoyweHook,
    ledger: Ledger,
    items: Iterable[VoidItem | Mapping[str, Any]],
    *,
    owner: str,
    reason: str | None = None,
    run_id: str | None = None,
    task: str | None = None,
    policy: IssuancePolicy | None = None,
) -> ApplyOutcome:
    """Apply every ``planned`` item (the others pass through unchanged).

    A Koywe refusal of one document fails that item only; a transient failure (5xx, 429, no answer)
    leaves it ``planned`` and is listed in ``transient`` (apply again: nothing is sent twice).

    :raises KoyweAuthError: / :raises KoyweConfigurationError: the credentials are refused (every
        item not applied yet stays ``planned``).
    """
    outcome = ApplyOutcome(items=[])
    changer = StatusChanger(hook, ledger, run_id=run_id, task=task)
    for given in items:
        item = given if isinstance(given, VoidItem) else VoidItem.from_dict(given)
        item = replace(item)
        outcome.items.append(item)
        if item.status != "planned":
            continue
        try:
            if item.path in ("credit_note", "debit_note"):
                _apply_note(hook, ledger, item, owner=owner, run_id=run_id, task=task, policy=policy)
            elif item.path in ("cancel", "issue_draft"):
                _apply_status(changer, ledger, item, reason)
            elif item.path == "delete_draft":
                _apply_delete(hook, ledger, item, reason=reason, run_id=run_id, task=task)
            else:
                item.status, item.message = "failed", f"{item.reference}: no path to apply"
        except (KoyweAuthError, KoyweConfigurationError):
            raise
        except TRANSIENT_ERRORS as err:
            item.message = f"{item.reference}: {err.message} (not applied yet; safe to apply again)"
            outcome.transient.append(item.message)
        except (KoyweRejectedError, DocumentStatusPreconditionError) as err:
            item.status, item.message = "failed", f"{item.reference}: {err.message}"
        except KoyweError as err:
            item.status, item.message = "failed", f"{item.reference}: {err.message}"
    return outcome


def _apply_note(
    hook: KoyweHook,
    ledger: Ledger,
    item: VoidItem,
    *,
    owner: str,
    run_id: str | None,
    task: str | None,
    policy: IssuancePolicy | None,
) -> None:
    assert item.note_id is not None
    note, counts = issue_note(
        hook, ledger, item.note_id, owner=owner, run_id=run_id, task=task, policy=policy
    )
    state = note["state"]
    item.state = state
    name = f"{item.note_reference}"
    if state in (DocumentState.ISSUED, DocumentState.NOT_SENT):
        folio = f", folio {note['document_number']}" if note.get("document_number") else ""
        item.status = "done"
        item.message = f"{name} issued as Koywe document {note['koywe_document_id']}{folio}"
        if state == DocumentState.NOT_SENT:
            item.message += " (generated, not sent to the tax bureau yet: followed)"
    elif state in (DocumentState.REJECTED, DocumentState.DEAD):
        item.status = "failed"
        item.message = f"{name} {state}: {note.get('last_error') or 'no message'}"
    elif counts.skipped and state == DocumentState.IN_FLIGHT:
        item.status = "in_progress"
        item.message = f"{name} is being issued by {note.get('lease_owner')}; nothing sent by this run"
    else:
        item.status = "in_progress"
        item.message = (
            f"{name} {state}: {note.get('last_error') or ''} — koywe_retry_failed_documents finishes it "
            "(looked up by reference first, never sent twice)"
        ).replace(":  —", " —")


def _apply_status(changer: StatusChanger, ledger: Ledger, item: VoidItem, reason: str | None) -> None:
    action = "cancel" if item.path == "cancel" else "issue_draft"
    if action == "cancel" and item.ledger_id is not None:
        current = ledger.get(item.ledger_id) or {}
        if current.get("cancellation_status") == CancellationStatus.PENDING_ACCEPTANCE:
            # An earlier try of this request was answered already: nothing to send again.
            item.status, item.cancellation_status = "in_progress", CancellationStatus.PENDING_ACCEPTANCE.value
            item.message = f"{item.reference}: cancellation pending the receiver's acceptance; followed"
            return
    result = changer.change(action, document_id=item.koywe_document_id, reason=reason)
    row = ledger.get(item.ledger_id) if item.ledger_id is not None else None
    item.state = row["state"] if row else None
    item.cancellation_status = row.get("cancellation_status") if row else None
    sent = "" if result.changed else " (already applied; nothing sent)"
    if action == "issue_draft":
        item.status = "done"
        item.message = f"{item.reference}: draft issued, document_status {result.document_status}{sent}"
    elif result.document_status == DocumentStatus.CANCELLED:
        item.status, item.message = "done", f"{item.reference}: cancelled{sent}"
    elif item.cancellation_status == CancellationStatus.REFUSED:
        item.status = "failed"
        item.message = f"{item.reference}: the receiver refused the cancellation; the invoice stands"
    else:
        item.status = "in_progress"
        item.message = (
            f"{item.reference}: cancellation pending the receiver's acceptance (Koywe answered "
            f"document_status {result.document_status}); followed by callbacks and koywe_taxbureau_followup"
        )


def _apply_delete(
    hook: KoyweHook,
    ledger: Ledger,
    item: VoidItem,
    *,
    reason: str | None,
    run_id: str | None,
    task: str | None,
) -> None:
    assert item.ledger_id is not None and item.koywe_document_id
    note = f"reason: {reason}" if reason else None
    started = time.monotonic()

    def attempt(outcome: str, http_status: int | None, error: str | None = None) -> AttemptRecord:
        return AttemptRecord(
            kind=AttemptKind.DELETE,
            outcome=outcome,
            http_status=http_status,
            duration_ms=int((time.monotonic() - started) * 1000),
            error=" ".join(x for x in (note, error) if x) or None,
            run_id=run_id,
            task=task,
        )

    try:
        hook.delete_document(item.koywe_document_id)
        ledger.mark_deleted(item.ledger_id, attempt=attempt(AttemptOutcome.DELETED, 200))
        item.status, item.message = (
            "done",
            f"{item.reference}: draft {item.koywe_document_id} deleted at Koywe",
        )
    except KoyweNotFoundError:
        ledger.mark_deleted(
            item.ledger_id, attempt=attempt(AttemptOutcome.DELETED, 404, "already gone at Koywe")
        )
        item.status = "done"
        item.message = f"{item.reference}: draft {item.koywe_document_id} was gone already at Koywe"
    except KoyweRejectedError as err:
        ledger.record_attempt(item.ledger_id, attempt(AttemptOutcome.REJECTED, err.status_code, err.message))
        raise
    except KoyweOutcomeUnknownError:
        try:  # the DELETE went out and no answer came: is the draft still there?
            hook.get_document(item.koywe_document_id)
        except KoyweNotFoundError:
            ledger.mark_deleted(
                item.ledger_id, attempt=attempt(AttemptOutcome.DELETED, None, "gone after a lost answer")
            )
            item.status, item.message = (
                "done",
                f"{item.reference}: draft {item.koywe_document_id} deleted at Koywe",
            )
            return
        raise
    item.state = DocumentState.DELETED.value


# --------------------------------------------------------------------------------------------------
# The run's verdict
# --------------------------------------------------------------------------------------------------


def summarize(items: Sequence[VoidItem | Mapping[str, Any]]) -> dict[str, Any]:
    """``{"counts": {status: n}, "problems": ["<reference>: <why>", …]}`` of a run's items (problems:
    refused and failed items, in order)."""
    parsed = [i if isinstance(i, VoidItem) else VoidItem.from_dict(i) for i in items]
    counts: dict[str, int] = {}
    for item in parsed:
        counts[item.status] = counts.get(item.status, 0) + 1
    problems = [item.message or f"{item.reference}: {item.status}" for item in parsed if item.failed]
    return {"counts": counts, "problems": problems}


__all__ = [
    "ACTIONS",
    "FAILED_STATUSES",
    "ApplyOutcome",
    "ExternalOriginal",
    "VoidItem",
    "VoidRequest",
    "VoidRequestError",
    "apply_voids",
    "plan_voids",
    "summarize",
]
