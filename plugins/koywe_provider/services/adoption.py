"""Whether a document found at Koywe by reference is ours: adopt it only when its content matches.

Koywe has no idempotency key (API_NOTES "Duplicates and idempotency"): before a row that may already
be at Koywe is sent again, it is looked up with ``GET /documents?reference_code=5&reference_number=<Koywe
reference>``. A reference is only a label anybody can write, so a match is adopted only when the issuer
tax id, document type, receiver tax id, total and issue date agree with the ledger's payload
(``docs/DESIGN.md``, "Adoption"); anything else is an alarm for a person and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from koywe_provider.models.answers import DocumentAnswer, DocumentContent


class LookupVerdict(StrEnum):
    """What a reference lookup means for the row."""

    NOT_FOUND = "not_found"  # safe to POST (nothing of this generation is at Koywe)
    ADOPT = "adopt"  # exactly one document, with our content: record it, send nothing
    DUPLICATE = "duplicate"  # several documents carry the reference: a person decides
    MISMATCH = "mismatch"  # one document with other content under our reference: a person decides


@dataclass(frozen=True, slots=True)
class LookupJudgement:
    """:func:`judge_lookup`'s answer: the verdict, the document to adopt (``ADOPT`` only) and, for an
    alarm, a message naming the reference and every Koywe document involved."""

    verdict: LookupVerdict
    document: DocumentAnswer | None = None
    message: str = ""


def _name(document: DocumentAnswer) -> str:
    folio = f", folio {document.document_number}" if document.document_number else ""
    return f"Koywe document {document.document_id}{folio}"


def judge_lookup(
    reference: str, payload: Mapping[str, Any] | None, found: Sequence[DocumentAnswer]
) -> LookupJudgement:
    """Judge what ``GET /documents?reference_code=5&reference_number=<reference>`` returned.

    :param reference: the Koywe reference looked up (the row's current generation).
    :param payload: the ledger's ``POST /documents`` body for the row.
    :param found: the documents Koywe returned for that reference (already filtered by account).
    """
    if not found:
        return LookupJudgement(LookupVerdict.NOT_FOUND)
    if len(found) > 1:
        names = "; ".join(_name(d) for d in found)
        return LookupJudgement(
            LookupVerdict.DUPLICATE,
            message=(
                f"duplicate alarm: {len(found)} Koywe documents carry reference {reference!r} ({names}); "
                f"a person must decide which one stands (none is cancelled automatically, nothing was sent)"
            ),
        )
    (document,) = found
    differences = DocumentContent.of_payload(payload or {}).differences(document.content())
    if differences:
        return LookupJudgement(
            LookupVerdict.MISMATCH,
            document=document,
            message=(
                f"content mismatch alarm: {_name(document)} carries reference {reference!r} but is not the "
                f"ledger's document ({'; '.join(differences)}); it was not adopted and nothing was sent: a "
                f"person must decide"
            ),
        )
    return LookupJudgement(LookupVerdict.ADOPT, document=document)


__all__ = ["LookupJudgement", "LookupVerdict", "judge_lookup"]
