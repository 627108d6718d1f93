"""Changing a document's ``document_status`` with ``PUT /documents/{id}``, checked before anything is sent.

Koywe allows two changes (seed ``004_…`` "Update Document"; ``docs/DESIGN.md``): ``issue_draft``
(Chile, ``document_status`` 0 → 1) and ``cancel`` (Mexico, 1 → 2; other countries void with a credit
note). :func:`plan_status_change` checks the action against Koywe's current document; a change already
applied is a no-op; anything else raises :class:`DocumentStatusPreconditionError` with what to do
instead, before any call. :class:`StatusChanger` resolves the document (Koywe id, or the ledger
reference and its current generation), sends the ``PUT`` and records in the ledger the statuses KOYWE
ANSWERED — never the requested target: a Mexico cancellation may wait for the receiver's acceptance
(the row's ``cancellation_status``: ``requested`` before the ``PUT``, then ``pending_acceptance`` or
``cancelled`` as Koywe answers, later ``cancelled`` or ``refused``), and the rest arrives by callback or
polling.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from koywe_provider import catalogue
from koywe_provider.exceptions import (
    KoyweError,
    KoyweNotFoundError,
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
    DocumentFacts,
    Ledger,
)
from koywe_provider.ledger.status_updates import record_status_change
from koywe_provider.models.answers import DocumentAnswer
from koywe_provider.models.references import koywe_reference
from koywe_provider.models.statuses import DocumentStatus

Action = Literal["issue_draft", "cancel"]
#: action → (target ``document_status``, required current status, country id, what it is called).
ACTIONS: dict[str, tuple[DocumentStatus, DocumentStatus, int, str]] = {
    "issue_draft": (DocumentStatus.ISSUED, DocumentStatus.DRAFT, catalogue.CHILE, "issue a Chile draft"),
    "cancel": (DocumentStatus.CANCELLED, DocumentStatus.ISSUED, catalogue.MEXICO, "cancel a Mexico invoice"),
}


class DocumentStatusPreconditionError(KoyweError):
    """The requested status change does not apply to this document (wrong country or status, no such
    document, an ambiguous reference); nothing was sent to Koywe. The message says what to do instead."""


def document_country(document: DocumentAnswer) -> int | None:
    """Country id of a Koywe document: from its ``document_type_id`` (the catalogue), else
    ``issuer_country_id``."""
    kind = catalogue.DOCUMENT_TYPES.get(document.header.document_type_id)
    if kind is not None:
        return kind.country_id
    extra = document.header.model_extra or {}
    value = extra.get("issuer_country_id")
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _country_name(country_id: int | None) -> str:
    entry = catalogue.COUNTRIES.get(country_id) if country_id is not None else None
    return entry.name if entry is not None else f"country {country_id}"


@dataclass(frozen=True, slots=True)
class StatusChangePlan:
    """What :func:`plan_status_change` decided: send ``target`` or not (``already_applied``)."""

    document_id: str
    action: str
    current: int | None
    target: int
    already_applied: bool


def plan_status_change(document: DocumentAnswer, action: str) -> StatusChangePlan:
    """Check ``action`` (``issue_draft`` | ``cancel``) against Koywe's current document before any ``PUT``.

    :raises DocumentStatusPreconditionError: unknown action, another country or status.
    """
    if action not in ACTIONS:
        raise DocumentStatusPreconditionError(
            f"Unknown action {action!r}: use one of {sorted(ACTIONS)} (nothing was sent to Koywe)."
        )
    target, required, country, what = ACTIONS[action]
    current = document.document_status
    found = document_country(document)
    doc = f"Koywe document {document.document_id}"
    if found != country:
        hint = (
            " Other countries cancel with a credit note (a new document referencing this one)."
            if action == "cancel"
            else " Only Chile issues drafts (options.draft_only)."
        )
        raise DocumentStatusPreconditionError(
            f"Cannot {what}: {doc} is from {_country_name(found)}, not {_country_name(country)}.{hint} "
            f"Nothing was sent to Koywe."
        )
    current_value = None if current is None else int(current)
    if current_value == target:
        return StatusChangePlan(str(document.document_id), action, current_value, int(target), True)
    if current_value != required:
        raise DocumentStatusPreconditionError(
            f"Cannot {what}: {doc} has document_status {current_value} (0 draft, 1 issued, 2 cancelled); "
            f"Koywe only allows {int(required)} → {int(target)} here. Nothing was sent to Koywe."
        )
    return StatusChangePlan(str(document.document_id), action, current_value, int(target), False)


@dataclass(frozen=True, slots=True)
class StatusChangeResult:
    """The outcome of :meth:`StatusChanger.change` (a small XCom): ``document_status`` is what Koywe
    answered (it may still be 1 for a cancellation waiting for the receiver's acceptance)."""

    document_id: str
    action: str
    document_status: int | None
    changed: bool
    ledger_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


class StatusChanger:
    """Sends one status change and records Koywe's answer in the ledger.

    :param run_id: / :param task: stamped on the ``koywe_attempts`` row (kind ``status_update``).
    """

    def __init__(
        self, hook: KoyweHook, ledger: Ledger, *, run_id: str | None = None, task: str | None = None
    ):
        self.hook = hook
        self.ledger = ledger
        self.run_id = run_id
        self.task = task

    def resolve(
        self, *, document_id: Any = None, reference: Any = None, account_id: Any = None
    ) -> tuple[DocumentAnswer, dict[str, Any] | None]:
        """Koywe's current document and the ledger row holding it (or ``None``).

        By ``document_id`` (Koywe's id), else by the ledger ``reference`` (the row's Koywe id, or a
        lookup of its current generation's Koywe reference), else by a lookup of ``reference`` itself.
        :raises DocumentStatusPreconditionError: no such document, or several under the reference.
        """
        account = None if _blank(account_id) else str(account_id).strip()
        row = None
        if _blank(document_id) and not _blank(reference):
            row = self.ledger.find_by_reference(str(reference).strip(), account_id=account)
            if row is not None and row.get("koywe_document_id"):
                document_id = row["koywe_document_id"]
        if not _blank(document_id):
            try:
                document = self.hook.get_document(str(document_id).strip())
            except KoyweNotFoundError as err:
                raise DocumentStatusPreconditionError(
                    f"Koywe has no document {document_id}; check the id (nothing was changed)."
                ) from err
        elif _blank(reference):
            raise DocumentStatusPreconditionError(
                "Give a Koywe document_id or an internal reference (nothing was sent to Koywe)."
            )
        else:
            looked_up = str(reference).strip()
            if row is not None:
                looked_up = koywe_reference(row["reference"], row.get("generation") or 1)
            found = self.hook.find_documents_by_reference(looked_up, account_id=account)
            if len(found) != 1:
                ids = [d.document_id for d in found]
                raise DocumentStatusPreconditionError(
                    f"Reference {looked_up!r} matches {len(found)} Koywe document(s) {ids}: "
                    + ("nothing to change." if not found else "a duplicate; pass the document_id to choose.")
                )
            document = found[0]
        if row is None:
            row = self.ledger.find_by_koywe_document_id(document.document_id)
        return document, row

    def change(
        self,
        action: str,
        *,
        document_id: Any = None,
        reference: Any = None,
        account_id: Any = None,
        reason: str | None = None,
    ) -> StatusChangeResult:
        """Check, send and record one status change.

        :raises DocumentStatusPreconditionError: nothing sent (see :func:`plan_status_change`).
        :raises KoyweRejectedError: Koywe refused the ``PUT`` (recorded on the ledger row first).
        """
        if action not in ACTIONS:
            raise DocumentStatusPreconditionError(
                f"Unknown action {action!r}: use one of {sorted(ACTIONS)} (nothing was sent to Koywe)."
            )
        document, row = self.resolve(document_id=document_id, reference=reference, account_id=account_id)
        plan = plan_status_change(document, action)
        note = None if _blank(reason) else f"reason: {reason}"
        started = time.monotonic()
        if plan.already_applied:
            answer, outcome, http_status = document, AttemptOutcome.ALREADY_APPLIED, None
        else:
            asked = action == "cancel" and row is not None
            # Followed until Koywe says it is final; withdrawn when Koywe certainly did not act on it.
            before = self.ledger.request_cancellation(row["id"]) if asked else None
            try:
                answer = self.hook.update_document_status(plan.document_id, plan.target)
            except KoyweRejectedError as err:
                if asked:
                    self.ledger.withdraw_cancellation_request(row["id"], before)
                self._record(
                    row, document, AttemptOutcome.REJECTED, err.status_code, started, f"{note or ''} {err}"
                )
                raise
            except (KoyweTransientError, KoyweRateLimitedError):
                if asked:
                    self.ledger.withdraw_cancellation_request(row["id"], before)
                raise
            http_status = 200
            reached = answer.document_status is not None and int(answer.document_status) == plan.target
            outcome = (
                (AttemptOutcome.ISSUED if action == "issue_draft" else AttemptOutcome.CANCELLED)
                if reached
                else AttemptOutcome.PENDING
            )
        facts = DocumentFacts.from_answer(answer)
        if action == "cancel" and outcome is AttemptOutcome.PENDING and facts.cancellation_status is None:
            # Koywe took the request but the document is not cancelled yet: the receiver must accept it.
            facts = replace(facts, cancellation_status=CancellationStatus.PENDING_ACCEPTANCE.value)
        self._record(row, answer, outcome, http_status, started, note, facts=facts)
        return StatusChangeResult(
            document_id=plan.document_id,
            action=action,
            document_status=None if answer.document_status is None else int(answer.document_status),
            changed=not plan.already_applied,
            ledger_id=None if row is None else row["id"],
        )

    def _record(
        self, row, document: DocumentAnswer, outcome, http_status, started: float, note, *, facts=None
    ) -> None:
        if row is None:
            return
        record_status_change(
            self.ledger,
            row["id"],
            facts if facts is not None else DocumentFacts.from_answer(document),
            AttemptRecord(
                kind=AttemptKind.STATUS_UPDATE,
                outcome=outcome,
                http_status=http_status,
                duration_ms=int((time.monotonic() - started) * 1000),
                error=(note or "").strip() or None,
                run_id=self.run_id,
                task=self.task,
            ),
        )


__all__ = [
    "ACTIONS",
    "DocumentStatusPreconditionError",
    "StatusChangePlan",
    "StatusChangeResult",
    "StatusChanger",
    "document_country",
    "plan_status_change",
]
