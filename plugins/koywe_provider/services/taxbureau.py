"""Following the tax bureau in batches: the ledger's documents whose validation is not final yet.

Chile validates asynchronously (minutes); documents Koywe generated but could not send yet
(``result.status`` 2, ledger state ``not_sent``) are followed too. One pass lists Koywe's documents of
the issue-date window of the documents still waiting, 100 per page — ``ceil(n / 100)`` calls, never one
per document (seeds ``001_…``/``002_…``: callbacks first, polling second, no hot loops) — and writes
every status forwards only into the ledger (:func:`~koywe_provider.ledger.status_updates.apply_status_reports`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.ledger import DocumentFacts, Ledger
from koywe_provider.ledger.status_updates import ApplyCounts, apply_status_reports

#: Documents written to the ledger per transaction while a pass reads pages.
APPLY_CHUNK = 100


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
    not_sent_issued: int = 0
    #: Mexico cancellations that became final in this pass.
    cancelled: int = 0
    cancellation_refused: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, counts: ApplyCounts) -> None:
        for name in (
            "changed",
            "unchanged",
            "accepted",
            "rejected",
            "drafts_issued",
            "not_sent_issued",
            "cancelled",
            "cancellation_refused",
        ):
            setattr(self, name, getattr(self, name) + getattr(counts, name, 0))


class TaxBureauPoller:
    """Updates the ledger's tax-bureau statuses from ``GET /documents`` pages (batch polling)."""

    def __init__(self, hook: KoyweHook, ledger: Ledger) -> None:
        self.hook = hook
        self.ledger = ledger

    def poll(
        self,
        *,
        issue_date_from: str | None = None,
        issue_date_to: str | None = None,
        taxbureau_validation_status: int | None = None,
        taxbureau_sending_status: int | None = None,
    ) -> PollOutcome:
        """Run one pass; no call at all when nothing is waiting. Explicit ``issue_date_from`` /
        ``issue_date_to`` (``YYYY-MM-DD``) override the window computed from the ledger.

        Raises the hook's exceptions when a page cannot be read; documents of the pages read before the
        failure are already written to the ledger.
        """
        awaiting = self.ledger.awaiting_taxbureau()
        outcome = PollOutcome(awaiting=awaiting.count)
        if not awaiting.count:
            return outcome
        outcome.issue_date_from = issue_date_from or awaiting.issue_date_from
        outcome.issue_date_to = issue_date_to or awaiting.issue_date_to
        calls_before = self.hook.calls
        batch: list[DocumentFacts] = []
        try:
            for document in self.hook.list_documents(
                issue_date_from=outcome.issue_date_from,
                issue_date_to=outcome.issue_date_to,
                taxbureau_validation_status=taxbureau_validation_status,
                taxbureau_sending_status=taxbureau_sending_status,
            ):
                outcome.documents_seen += 1
                if document.document_id is not None:
                    batch.append(DocumentFacts.from_answer(document))
                if len(batch) >= APPLY_CHUNK:
                    outcome.add(apply_status_reports(self.ledger, batch, source="polling"))
                    batch = []
        finally:
            if batch:
                outcome.add(apply_status_reports(self.ledger, batch, source="polling"))
            outcome.list_calls = self.hook.calls - calls_before
        return outcome


__all__ = ["APPLY_CHUNK", "PollOutcome", "TaxBureauPoller"]
