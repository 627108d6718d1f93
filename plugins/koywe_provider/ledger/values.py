"""What Koywe says about a document (:class:`DocumentFacts`) and the rules that merge it into the ledger.

Koywe reports a document's life in several fields (``koywe_provider.models.statuses``): the top-level
``document_status`` (0 draft, 1 issued, 2 cancelled), the counterparty's ``header.document_status``
(0 draft, 1 issued, 2 sent, 3 accepted), ``taxbureau_sending_status`` (0 sending, 1XX retrying, final
otherwise) and ``taxbureau_validation_status`` (0/1 in process, 2/5 rejected, 3/4 accepted). The same news
can arrive twice and out of order (a callback, a polling pass, a sensor, a lookup), so
:func:`merge_statuses` keeps the most advanced value of each field: a repeated or late message never
moves a document backwards.

Pure module: no SQL, no Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from koywe_provider.ledger.models import CancellationStatus, DocumentState, GenerationOutcome
from koywe_provider.models.answers import DocumentAnswer, StatusUpdateEvent
from koywe_provider.models.statuses import (
    DocumentStatus,
    ResultStatus,
    TaxBureauSendingStatus,
    TaxBureauValidationStatus,
    as_int,
    parse_status,
)

_ACCEPTED = frozenset(int(s) for s in TaxBureauValidationStatus.accepted_statuses())
_REJECTED = frozenset(int(s) for s in TaxBureauValidationStatus.rejected_statuses())
_FINAL = frozenset(int(s) for s in TaxBureauValidationStatus.terminal_statuses())
#: ``last_error_class`` of a document the tax bureau rejected.
TAXBUREAU_REJECTED_CLASS = "taxbureau_rejected"
#: Text that must never be taken for a Koywe document id (an old bug stored ``str(None)``).
_BLANK_IDS = frozenset({"", "none", "null"})

#: Status columns merged forwards only (row and generation record alike).
STATUS_COLUMNS: tuple[str, ...] = (
    "document_status",
    "counterparty_status",
    "taxbureau_sending_status",
    "taxbureau_validation_status",
    "taxbureau_validation_comments",
)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


@dataclass(frozen=True, slots=True)
class DocumentFacts:
    """What Koywe says about one document; every field is optional (``None``: not said, keep the
    ledger's value).

    :param koywe_document_id: Koywe's ``document_id`` (text; an int is converted).
    :param document_number: the folio (``header.document_number``).
    :param document_status: top-level ``document_status``: 0 draft, 1 issued, 2 cancelled.
    :param counterparty_status: ``header.document_status``: 0 draft, 1 issued, 2 sent to the
        counterparty, 3 accepted by it.
    :param taxbureau_sending_status: 0 sending, 1XX retrying, 2XX rejected, 1 received, 2 closed
        without sending, 3 imported.
    :param taxbureau_validation_status: 0/1 in process, 2 sending rejected, 3 accepted, 4 accepted with
        warnings, 5 content rejected.
    :param result_status: ``result.status`` of a ``POST /documents`` answer: 0 OK, 1 error, 2 generated
        but not sent to the tax bureau.
    :param cancellation_status: a Mexico cancellation's progress when Koywe states it
        (``pending_acceptance``, ``cancelled``, ``refused``; :class:`~koywe_provider.ledger.models.CancellationStatus`).

    Integers may be given as enum members or numeric strings; they are stored as plain ``int``.
    """

    koywe_document_id: str | None = None
    document_number: str | None = None
    document_status: int | None = None
    counterparty_status: int | None = None
    taxbureau_sending_status: int | None = None
    taxbureau_validation_status: int | None = None
    taxbureau_validation_comments: str | None = None
    result_status: int | None = None
    result_error_message: str | None = None
    cancellation_status: str | None = None

    def __post_init__(self) -> None:
        for name in ("koywe_document_id", "document_number"):
            object.__setattr__(self, name, _text(getattr(self, name)))
        for name in (
            "document_status",
            "counterparty_status",
            "taxbureau_sending_status",
            "taxbureau_validation_status",
            "result_status",
        ):
            number = as_int(getattr(self, name))
            object.__setattr__(self, name, None if number is None else int(number))
        status = _text(self.cancellation_status)
        known = {s.value for s in CancellationStatus}
        object.__setattr__(
            self, "cancellation_status", status.lower() if status and status.lower() in known else None
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DocumentFacts:
        """Facts from a flat mapping with these field names; ``document_id`` is accepted for
        ``koywe_document_id`` and ``taxbureau_send_status`` (the ``DOCUMENT.STATUSUPDATE`` callback's
        name) for ``taxbureau_sending_status``. Other keys are ignored."""
        values = {f.name: data.get(f.name) for f in fields(cls)}
        if values["koywe_document_id"] is None:
            values["koywe_document_id"] = data.get("document_id")
        if values["taxbureau_sending_status"] is None:
            values["taxbureau_sending_status"] = data.get("taxbureau_send_status")
        return cls(**values)

    @classmethod
    def from_answer(cls, document: DocumentAnswer) -> DocumentFacts:
        """The facts of a typed Koywe document (a create, get, list or ``PUT`` answer, full or flat):
        the top-level ``document_status`` and the counterparty's ``header.document_status`` apart."""

        def number(value: Any) -> int | None:
            return None if value is None else int(value)

        return cls(
            koywe_document_id=document.document_id,
            document_number=document.document_number,
            document_status=number(document.document_status),
            counterparty_status=number(document.counterparty_status),
            taxbureau_sending_status=number(document.taxbureau_sending_status),
            taxbureau_validation_status=number(document.taxbureau_validation_status),
            taxbureau_validation_comments=document.taxbureau_validation_comments,
            result_status=number(document.result_status),
            result_error_message=document.result.error_message or None,
            cancellation_status=document.cancellation_status,
        )

    @classmethod
    def from_event(cls, event: StatusUpdateEvent) -> DocumentFacts:
        """The facts of a ``DOCUMENT.STATUSUPDATE`` webhook (``docs/DESIGN.md``: its ``document_status``
        3 is the counterparty's acceptance)."""
        lifecycle = event.lifecycle_status
        counterparty = event.counterparty_status
        return cls(
            koywe_document_id=event.document_id,
            document_status=None if lifecycle is None else int(lifecycle),
            counterparty_status=None if counterparty is None else int(counterparty),
            taxbureau_sending_status=None
            if event.taxbureau_send_status is None
            else int(event.taxbureau_send_status),
            taxbureau_validation_status=None
            if event.taxbureau_validation_status is None
            else int(event.taxbureau_validation_status),
            taxbureau_validation_comments=event.taxbureau_validation_comments,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def has_document_id(self) -> bool:
        """Whether :attr:`koywe_document_id` names a document (not ``None``, ``""`` or ``"None"``)."""
        return not is_blank_document_id(self.koywe_document_id)


def is_blank_document_id(value: Any) -> bool:
    """True for ``None``, ``""`` and the texts ``"None"``/``"null"``: no Koywe document id."""
    return value is None or str(value).strip().lower() in _BLANK_IDS


def sending_rank(value: int | None) -> int:
    """0 sending < 1XX retrying < everything else (received, closed, imported, 2XX rejected: final)."""
    if value is None:
        return -1
    status = parse_status(TaxBureauSendingStatus, value)
    if isinstance(status, TaxBureauSendingStatus):
        return status.rank
    return 2


def validation_rank(value: int | None) -> int:
    """0/1 in process < 2/3/4/5 final."""
    if value is None:
        return -1
    return 1 if value in _FINAL else 0


def is_validation_accepted(value: int | None) -> bool:
    return value is not None and value in _ACCEPTED


def is_validation_rejected(value: int | None) -> bool:
    return value is not None and value in _REJECTED


def is_validation_final(value: int | None) -> bool:
    return value is not None and value in _FINAL


def merge_statuses(stored: Mapping[str, Any], facts: DocumentFacts) -> dict[str, Any]:
    """The status columns ``facts`` changes on ``stored`` (``{}`` when it brings nothing newer).

    ``stored`` maps :data:`STATUS_COLUMNS` (and ``document_number``, ``result_status``,
    ``result_error_message``) to their values. Forwards only: ``document_status`` and
    ``counterparty_status`` only grow; the sending status moves 0 → 1XX → final (a later 1XX replaces an
    earlier one); a final validation status is never replaced, and comments come with the validation
    status they belong to (or fill in missing comments of the same status). The folio is taken when
    none is stored; ``result_status``/``result_error_message`` when Koywe gives one.
    """
    values: dict[str, Any] = {}
    for name in ("document_status", "counterparty_status"):
        new, old = getattr(facts, name), stored.get(name)
        if new is not None and (old is None or new > old):
            values[name] = new
    new_send, old_send = facts.taxbureau_sending_status, stored.get("taxbureau_sending_status")
    if new_send is not None and new_send != old_send:
        current, new = sending_rank(old_send), sending_rank(new_send)
        if new > current or new == current == 1:
            values["taxbureau_sending_status"] = new_send
    new_val, old_val = facts.taxbureau_validation_status, stored.get("taxbureau_validation_status")
    comments = facts.taxbureau_validation_comments
    if new_val is not None and new_val != old_val and validation_rank(old_val) < 1:
        if validation_rank(new_val) >= validation_rank(old_val):
            values["taxbureau_validation_status"] = new_val
            if comments is not None:
                values["taxbureau_validation_comments"] = comments
    elif (
        new_val is not None
        and new_val == old_val
        and comments
        and not stored.get("taxbureau_validation_comments")
    ):
        values["taxbureau_validation_comments"] = comments
    if facts.document_number is not None and not stored.get("document_number"):
        values["document_number"] = facts.document_number
    for name in ("result_status", "result_error_message"):
        new = getattr(facts, name)
        if new is not None and new != stored.get(name):
            values[name] = new
    return values


def merge_cancellation(
    stored: str | None, document_status: int | None, reported: list[str | None]
) -> str | None:
    """The new ``cancellation_status`` of a row (``None``: no change), forwards only.

    ``document_status`` 2 (the merged top-level status) means ``cancelled`` whatever was asked; each of
    ``reported`` (what Koywe stated, in order) moves it up the :attr:`CancellationStatus.rank` order only:
    ``requested`` → ``pending_acceptance`` → ``refused`` → ``cancelled``. A refusal ends the request it
    answers (a new request starts again at ``requested``, :meth:`~koywe_provider.ledger.Ledger.request_cancellation`).
    """
    current = CancellationStatus(stored) if stored in {s.value for s in CancellationStatus} else None
    if document_status == DocumentStatus.CANCELLED:
        return None if current is CancellationStatus.CANCELLED else CancellationStatus.CANCELLED.value
    for value in reported:
        if value is None:
            continue
        status = CancellationStatus(value)
        if current is None or status.rank > current.rank:
            current = status
    return None if current is None or current.value == stored else current.value


def exists_state(merged: Mapping[str, Any]) -> DocumentState:
    """Ledger state of a row whose Koywe document exists, from its merged statuses.

    ``not_sent`` while ``result_status`` is 2 and the tax bureau has neither received (sending 1) nor
    accepted it; ``draft`` when ``document_status`` is 0; ``rejected`` when the bureau rejected it
    (validation 2/5); ``issued`` otherwise.
    """
    validation = merged.get("taxbureau_validation_status")
    if is_validation_rejected(validation):
        return DocumentState.REJECTED
    if merged.get("result_status") == ResultStatus.NOT_SENT and not bureau_has_it(merged):
        return DocumentState.NOT_SENT
    if merged.get("document_status") == DocumentStatus.DRAFT:
        return DocumentState.DRAFT
    return DocumentState.ISSUED


def bureau_has_it(merged: Mapping[str, Any]) -> bool:
    """The tax bureau received (sending 1) or accepted (validation 3/4) the document."""
    return merged.get(
        "taxbureau_sending_status"
    ) == TaxBureauSendingStatus.RECEIVED or is_validation_accepted(merged.get("taxbureau_validation_status"))


def taxbureau_rejection_message(validation: int | None, comments: str | None) -> str:
    """``last_error`` of a document the tax bureau rejected."""
    return (
        f"Rejected by the tax bureau (taxbureau_validation_status {validation})"
        + (f": {comments}" if comments else "")
        + "; fix the document and issue it again"
    )


def generation_outcome(state: str, last_error_class: str | None = None) -> GenerationOutcome | None:
    """The generation outcome that goes with a row state (``None`` when the state says nothing)."""
    if state == DocumentState.ISSUED:
        return GenerationOutcome.ISSUED
    if state == DocumentState.DRAFT:
        return GenerationOutcome.DRAFT
    if state == DocumentState.NOT_SENT:
        return GenerationOutcome.NOT_SENT
    if state == DocumentState.REJECTED:
        if last_error_class == TAXBUREAU_REJECTED_CLASS:
            return GenerationOutcome.TAXBUREAU_REJECTED
        return GenerationOutcome.REJECTED
    return None


__all__ = [
    "STATUS_COLUMNS",
    "TAXBUREAU_REJECTED_CLASS",
    "DocumentFacts",
    "bureau_has_it",
    "exists_state",
    "generation_outcome",
    "is_blank_document_id",
    "is_validation_accepted",
    "is_validation_final",
    "is_validation_rejected",
    "merge_cancellation",
    "merge_statuses",
    "sending_rank",
    "taxbureau_rejection_message",
    "validation_rank",
]
