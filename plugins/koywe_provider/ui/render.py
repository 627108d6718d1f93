"""What the Koywe page shows, in words: status labels, countries, document types, amounts, dates, and
the run report's Markdown as safe HTML."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from markupsafe import Markup

from koywe_provider import catalogue
from koywe_provider.models.statuses import (
    CounterpartyStatus,
    DocumentStatus,
    ResultStatus,
    TaxBureauSendingStatus,
    TaxBureauValidationStatus,
    parse_status,
)

#: What each ledger state means, for the page's legend and tooltips.
STATE_HELP = {
    "issued": "Koywe issued it",
    "draft": "Koywe holds it as a draft (Chile)",
    "not_sent": "Koywe generated it; not sent to the tax bureau yet (followed)",
    "pending": "recorded, not sent yet",
    "in_flight": "a task holds it under a lease and is sending it",
    "retryable": "429/5xx: safe to send again, due at its next attempt",
    "unknown": "no answer after sending: looked up by reference before any resend",
    "rejected": "Koywe or the tax bureau refused it: fix the payload, then re-queue",
    "invalid": "failed local validation (file, line and field in the error)",
    "dead": "gave up or held for a person (duplicate or content-mismatch alarm)",
}

_STATUS_ENUMS = {
    "document_status": DocumentStatus,
    "counterparty_status": CounterpartyStatus,
    "taxbureau_sending_status": TaxBureauSendingStatus,
    "taxbureau_validation_status": TaxBureauValidationStatus,
    "result_status": ResultStatus,
}


def status_label(field: str, value: Any) -> str:
    """``"3 accepted"`` for ``("taxbureau_validation_status", 3)``; ``""`` for ``None``; an unknown value
    as it is."""
    if value is None or value == "":
        return ""
    enum = _STATUS_ENUMS.get(field)
    member = parse_status(enum, value) if enum else None
    if enum is not None and isinstance(member, enum):
        return f"{int(member)} {member.name.lower().replace('_', ' ')}"
    return str(value)


def country_name(country_id: Any) -> str:
    """``"Chile"`` for Koywe's ``253``; ``"—"`` for none; the id itself when the catalogue does not know it."""
    if country_id in (None, ""):
        return "—"
    try:
        return catalogue.country(country_id).name
    except (KeyError, ValueError):
        return str(country_id)


def document_type_name(document_type_id: Any) -> str:
    if document_type_id in (None, ""):
        return "—"
    try:
        kind = catalogue.document_type(document_type_id)
    except (KeyError, ValueError):
        return str(document_type_id)
    return f"{kind.name} ({document_type_id})"


def currency_code(currency_id: Any) -> str:
    if currency_id in (None, ""):
        return ""
    try:
        return catalogue.currency(currency_id).code
    except (KeyError, ValueError):
        return str(currency_id)


def amount(value: Any, currency_id: Any = None, document_type_id: Any = None) -> str:
    """``"1.234.567"``-free, locale-neutral: ``"359,820 CLP"`` / ``"224.31 PEN"``."""
    if value is None:
        return ""
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    places = catalogue.currency_places(currency_id, document_type_id)
    text = f"{number:,.{places}f}"
    code = currency_code(currency_id)
    return f"{text} {code}".strip()


def when(value: Any) -> str:
    """``"2026-11-20 10:00:00 UTC"`` for a datetime; text as it is; ``""`` for ``None``."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def short_reference(reference: str | None) -> str:
    """A line without a reference is keyed ``<source URL>#L<n>``: shown as ``<file name>#L<n>``."""
    text = reference or ""
    return text.rsplit("/", 1)[-1] if "://" in text else text


def reason(error: str | None, source: str | None = None, line_no: int | None = None) -> str:
    """``error`` without the ``"<source> line <n>: "`` it starts with when that is the row's own file and
    line (shown in its own column)."""
    text = error or ""
    if source and line_no is not None:
        prefix = f"{source} line {line_no}: "
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


@cache
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # CommonMark without raw HTML (escaped, never passed through), plus GitHub tables; links keep
    # markdown-it's own scheme check (no javascript: or data: URLs).
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown(text: str) -> Markup:
    """``text`` (the run report's Markdown) as HTML safe to put in a page: raw HTML in it is escaped."""
    return Markup(_markdown().render(text or ""))


__all__ = [
    "STATE_HELP",
    "amount",
    "country_name",
    "currency_code",
    "document_type_name",
    "markdown",
    "reason",
    "short_reference",
    "status_label",
    "when",
]
