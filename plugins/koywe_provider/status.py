"""A document's life after issuance: status changes (``PUT /documents/{id}``) and tax-bureau follow-up.

- :func:`plan_status_change` checks an action against a Koywe ``Document`` before anything is sent:
  ``issue_draft`` (``document_status`` 0 → 1, Chile only) and ``cancel`` (1 → 2, Mexico only), seed
  ``004_…``; a change that is already applied is a no-op, anything else raises
  :class:`DocumentStatusPreconditionError` with what to do instead.
- :class:`TaxBureauPoller` follows Chile's asynchronous validation in batches: ``GET /documents`` over
  the issue-date window of the documents still waiting, 100 per page — one call per hundred documents,
  never one per document (seeds ``001_…``/``002_…``: callbacks first, polling second, no hot loops).
- :data:`KOYWE_DOCUMENT_STATUS` is the Asset whose events say "statuses changed in the ledger".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from airflow.sdk import Asset

from koywe_provider.exceptions import KoyweError
from koywe_provider.hooks.koywe import KoyweHook, documents_in_page, next_page
from koywe_provider.ledger import Ledger
from koywe_provider.ledger.status import (
    DOCUMENT_CANCELLED,
    DOCUMENT_DRAFT,
    DOCUMENT_ISSUED,
    ApplyCounts,
    StatusReport,
    apply_status_reports,
    awaiting_taxbureau,
)

#: Asset event emitted when Koywe statuses changed ledger rows (callback or polling); ``extra`` carries
#: ``source`` (``callback``/``polling``/``sensor``), ``changed``, ``accepted``, ``rejected`` and, for a
#: callback, ``document_id``.
KOYWE_DOCUMENT_STATUS = Asset(name="koywe_document_status", uri="koywe://ledger/document_status")

CHILE, MEXICO = 253, 80
#: Koywe ``document_type_id`` → country (API_NOTES "Reference ids seen in Koywe's tables").
_TYPE_COUNTRY = {
    **dict.fromkeys((2, 32, 37, 41, 16, 17, 54, 46, 47, 48), CHILE),
    **dict.fromkeys((76, 77, 78), MEXICO),
    **dict.fromkeys((96, 97, 98, 99, 100, 109), 83),
    **dict.fromkeys((82, 83, 84, 87, 88), 66),
    111: 88,
}
_COUNTRY_NAMES = {CHILE: "Chile", MEXICO: "Mexico", 83: "Peru", 66: "Colombia", 88: "Argentina", 89: "US"}

Action = Literal["issue_draft", "cancel"]
#: action → (target ``document_status``, required current status, country, what it is called).
ACTIONS: dict[str, tuple[int, int, int, str]] = {
    "issue_draft": (DOCUMENT_ISSUED, DOCUMENT_DRAFT, CHILE, "issue a Chile draft"),
    "cancel": (DOCUMENT_CANCELLED, DOCUMENT_ISSUED, MEXICO, "cancel a Mexico invoice"),
}


class DocumentStatusPreconditionError(KoyweError):
    """The requested status change does not apply to this document (wrong country or status); nothing
    was sent to Koywe. The message says why and what to do instead."""


def as_int(value: Any) -> int | None:
    """``int(value)`` for ints and numeric strings (Koywe sends both); ``None`` otherwise."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _header(document: dict) -> dict:
    header = document.get("header")
    return header if isinstance(header, dict) else {}


def document_country(document: dict) -> int | None:
    """Country id of a Koywe ``Document``: from ``header.document_type_id``, else ``issuer_country_id``."""
    header = _header(document)
    type_id = as_int(header.get("document_type_id", document.get("document_type_id")))
    if type_id in _TYPE_COUNTRY:
        return _TYPE_COUNTRY[type_id]
    return as_int(header.get("issuer_country_id", document.get("issuer_country_id")))


def status_report(document: dict) -> StatusReport:
    """The statuses of a Koywe ``Document`` (``GET /documents``, ``PUT`` answer) or of a
    ``DOCUMENT.STATUSUPDATE`` callback, whose fields are top-level and named ``taxbureau_send_status``.

    Raises ``ValueError`` when there is no ``document_id``.
    """
    header = _header(document)

    def field(*names: str) -> Any:
        for name in names:
            for source in (header, document):
                if source.get(name) not in (None, ""):
                    return source[name]
        return None

    document_id = document.get("document_id")
    if document_id in (None, ""):
        raise ValueError("a Koywe document without document_id")
    comments = field("taxbureau_validation_comments")
    return StatusReport(
        koywe_document_id=str(document_id),
        document_status=as_int(field("document_status")),
        taxbureau_sending_status=as_int(field("taxbureau_sending_status", "taxbureau_send_status")),
        taxbureau_validation_status=as_int(field("taxbureau_validation_status")),
        taxbureau_validation_comments=None if comments is None else str(comments),
    )


@dataclass(frozen=True, slots=True)
class StatusChangePlan:
    """What :func:`plan_status_change` decided: send ``target`` or not (``already_applied``)."""

    document_id: str
    action: str
    current: int | None
    target: int
    already_applied: bool


def plan_status_change(document: dict, action: str) -> StatusChangePlan:
    """Check ``action`` (``issue_draft`` | ``cancel``) against a Koywe ``Document`` before any ``PUT``.

    ``issue_draft``: Chile, ``document_status`` 0 → 1. ``cancel``: Mexico, 1 → 2 (other countries
    cancel with a credit note; a Chile draft that should not exist is deleted, not cancelled). A
    document already at the target is ``already_applied`` (success, nothing to send).
    Raises :class:`DocumentStatusPreconditionError` for an unknown action, another country or status.
    """
    if action not in ACTIONS:
        raise DocumentStatusPreconditionError(
            f"Unknown action {action!r}: use one of {sorted(ACTIONS)} (nothing was sent to Koywe)."
        )
    target, required, country, what = ACTIONS[action]
    report = status_report(document)
    current = report.document_status
    found = document_country(document)
    doc = f"Koywe document {report.koywe_document_id}"
    if found != country:
        hint = (
            " Other countries cancel with a credit note (a new document referencing this one)."
            if action == "cancel"
            else " Only Chile issues drafts (options.draft_only)."
        )
        raise DocumentStatusPreconditionError(
            f"Cannot {what}: {doc} is from {_COUNTRY_NAMES.get(found, found)}, not "
            f"{_COUNTRY_NAMES[country]}.{hint} Nothing was sent to Koywe."
        )
    if current == target:
        return StatusChangePlan(report.koywe_document_id, action, current, target, already_applied=True)
    if current != required:
        raise DocumentStatusPreconditionError(
            f"Cannot {what}: {doc} has document_status {current} (0 draft, 1 issued, 2 cancelled); "
            f"Koywe only allows {required} → {target} here. Nothing was sent to Koywe."
        )
    return StatusChangePlan(report.koywe_document_id, action, current, target, already_applied=False)


@dataclass(slots=True)
class PollOutcome:
    """Counts of one polling pass (a small XCom): documents that were ``awaiting`` a final tax-bureau
    status, ``list_calls`` made, ``documents_seen`` in the answers, and the ledger's :class:`ApplyCounts`."""

    awaiting: int = 0
    list_calls: int = 0
    documents_seen: int = 0
    issue_date_from: str | None = None
    issue_date_to: str | None = None
    changed: int = 0
    unchanged: int = 0
    accepted: int = 0
    rejected: int = 0
    drafts_issued: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TaxBureauPoller:
    """Updates the ledger's tax-bureau statuses from ``GET /documents`` pages (batch polling).

    One pass: find the ledger rows whose validation is not final (:func:`awaiting_taxbureau`); if there
    are none, make no call. Otherwise list the documents issued in their ``issue_date`` window (100 per
    page, optionally narrowed by ``taxbureau_validation_status``/``taxbureau_sending_status``), and
    write every document's statuses into the ledger forwards only (:func:`apply_status_reports`).
    A window holding ``n`` documents costs ``ceil(n / 100)`` calls.
    """

    def __init__(self, hook: KoyweHook, ledger: Ledger, *, per_page: int = 100) -> None:
        self.hook = hook
        self.ledger = ledger
        self.per_page = per_page

    def poll(
        self,
        *,
        issue_date_from: str | None = None,
        issue_date_to: str | None = None,
        taxbureau_validation_status: int | None = None,
        taxbureau_sending_status: int | None = None,
    ) -> PollOutcome:
        """Run one pass; explicit ``issue_date_from``/``issue_date_to`` (``YYYY-MM-DD``) override the
        window computed from the ledger. Raises the hook's exceptions (:class:`KoyweAuthError`,
        :class:`KoyweTransientError`, :class:`KoyweRateLimitedError` …) when a page cannot be read;
        pages read before the failure are already written to the ledger."""
        awaiting = awaiting_taxbureau(self.ledger)
        outcome = PollOutcome(awaiting=awaiting.count)
        if not awaiting.count:
            return outcome
        outcome.issue_date_from = issue_date_from or awaiting.issue_date_from
        outcome.issue_date_to = issue_date_to or awaiting.issue_date_to
        params = {
            "issue_date_from": outcome.issue_date_from,
            "issue_date_to": outcome.issue_date_to,
            "taxbureau_validation_status": taxbureau_validation_status,
            "taxbureau_sending_status": taxbureau_sending_status,
            "per_page": self.per_page,
        }
        params = {k: v for k, v in params.items() if v is not None}
        page: int | None = 1
        while page is not None:
            body = self.hook.call("GET", "documents", params={**params, "page": page})
            outcome.list_calls += 1
            documents = documents_in_page(body)
            outcome.documents_seen += len(documents)
            reports = [status_report(d) for d in documents if d.get("document_id") not in (None, "")]
            _add(outcome, apply_status_reports(self.ledger, reports))
            page = next_page(body, page)
        return outcome


def _add(outcome: PollOutcome, counts: ApplyCounts) -> None:
    for name in ("changed", "unchanged", "accepted", "rejected", "drafts_issued"):
        setattr(outcome, name, getattr(outcome, name) + getattr(counts, name))


__all__ = [
    "ACTIONS",
    "KOYWE_DOCUMENT_STATUS",
    "DocumentStatusPreconditionError",
    "PollOutcome",
    "StatusChangePlan",
    "TaxBureauPoller",
    "document_country",
    "plan_status_change",
    "status_report",
]
