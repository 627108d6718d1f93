"""``KoyweDocumentStatusTrigger``: waits in the triggerer until documents reach a final tax-bureau status.

Runs on the triggerer's event loop with :meth:`KoyweHook.aget_documents` (``httpx.AsyncClient``): no worker slot
is held while Chile's tax bureau validates (minutes). The bearer token comes from the same cache as
every other Koywe call (process cache, then the ``koywe_token__<conn_id>`` Variable): it does not log in
per poll. With an issue-date window it reads ``GET /documents`` pages (100 documents per call);
without one it reads ``GET /documents/{id}`` for each document still waiting — meant for a handful.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from koywe_provider.exceptions import KoyweError, KoyweRateLimitedError, KoyweTransientError

MIN_POLL_INTERVAL_SECONDS = 5.0


class KoyweDocumentStatusTrigger(BaseTrigger):
    """Poll Koywe every ``poll_interval`` seconds until every document in ``document_ids`` has a final
    ``taxbureau_validation_status`` (2/3/4/5).

    :param document_ids: Koywe ``document_id`` values.
    :param issue_date_from: / :param issue_date_to: ``YYYY-MM-DD`` window holding the documents; when
        given, one ``GET /documents`` per 100 documents of the window per poll.
    Yields one event: ``{"status": "success", "documents": [<DocumentAnswer.status_summary()>, …]}`` or
    ``{"status": "error", "message": …}`` (auth, not found, a rejected call). 429 and 5xx answers are
    waited out (``Retry-After`` honoured).
    """

    def __init__(
        self,
        *,
        document_ids: list[str],
        koywe_conn_id: str,
        poll_interval: float = 60.0,
        issue_date_from: str | None = None,
        issue_date_to: str | None = None,
    ) -> None:
        super().__init__()
        self.document_ids = [str(d) for d in document_ids]
        self.koywe_conn_id = koywe_conn_id
        self.poll_interval = max(MIN_POLL_INTERVAL_SECONDS, float(poll_interval))
        self.issue_date_from = issue_date_from
        self.issue_date_to = issue_date_to

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "document_ids": self.document_ids,
                "koywe_conn_id": self.koywe_conn_id,
                "poll_interval": self.poll_interval,
                "issue_date_from": self.issue_date_from,
                "issue_date_to": self.issue_date_to,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from koywe_provider.hooks.koywe import KoyweHook

        hook = KoyweHook(self.koywe_conn_id)
        final: dict[str, dict[str, Any]] = {}
        while True:
            waiting = set(self.document_ids) - set(final)
            delay = self.poll_interval
            try:
                documents = await hook.aget_documents(
                    sorted(waiting), issue_date_from=self.issue_date_from, issue_date_to=self.issue_date_to
                )
                for document in documents.values():
                    if document.bureau_final:
                        final[str(document.document_id)] = document.status_summary()
            except KoyweRateLimitedError as err:
                delay = max(delay, err.retry_after or 30.0)
                self.log.warning("Koywe rate limited the status poll; waiting %.0f s", delay)
            except KoyweTransientError as err:
                self.log.warning("Koywe status poll failed (%s); trying again in %.0f s", err, delay)
            except KoyweError as err:
                yield TriggerEvent({"status": "error", "message": str(err)})
                return
            if len(final) == len(set(self.document_ids)):
                documents = [final[d] for d in dict.fromkeys(self.document_ids)]
                yield TriggerEvent({"status": "success", "documents": documents})
                return
            self.log.info(
                "%d of %d document(s) still awaiting the tax bureau; next poll in %.0f s",
                len(set(self.document_ids)) - len(final),
                len(set(self.document_ids)),
                delay,
            )
            await asyncio.sleep(delay)
