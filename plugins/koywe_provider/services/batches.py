"""Planning issuance batches: the rows due, cut into contiguous id ranges, one per mapped issue task.

Batch size = ``max(min_batch_size, ceil(rows / target_batches), ceil(rows / MAX_MAPPED_BATCHES))``, so
100,000 documents make at most 500 mapped tasks (well under Airflow's 1,024 mapped task instances).
A manual retry may first re-queue ``rejected``/``dead`` rows (a ``rejected`` row starts a new
generation, ``docs/DESIGN.md`` "Generations") and may name references, which are then issued due or not.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from koywe_provider.ledger import DocumentState, Ledger

MAX_MAPPED_BATCHES = 500
DEFAULT_TARGET_BATCHES = 8
DEFAULT_MIN_BATCH_SIZE = 10

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPlanner:
    """Plans batches in ``ledger``.

    :param target_batches: how many batches to aim for (more mapped tasks only add resilience: the
        rate is the shared budget's, whatever the number of tasks).
    :param min_batch_size: never smaller batches than this (rows).
    """

    ledger: Ledger
    target_batches: int = DEFAULT_TARGET_BATCHES
    min_batch_size: int = DEFAULT_MIN_BATCH_SIZE

    def _size(self, total: int) -> int:
        return max(
            self.min_batch_size,
            math.ceil(total / max(1, self.target_batches)),
            math.ceil(total / MAX_MAPPED_BATCHES),
        )

    def due(self, states: Sequence[str], *, now: datetime | None = None) -> list[dict[str, int]]:
        """``[{"index", "first_id", "last_id", "count", "window_first_id", "window_last_id"}, …]`` of the
        rows in ``states`` due by ``now``. The window is the whole plan's id span: an issue task that has
        finished its own range goes on with the window's rows nobody has claimed yet
        (:meth:`~koywe_provider.services.issuance.Issuer.issue_range`'s ``steal_window``)."""
        now = now or datetime.now(UTC)
        total = sum(
            b.count for b in self.ledger.plan_batches(batch_size=10**9, states=states, due_before=now)
        )
        if not total:
            return []
        size = self._size(total)
        batches = [
            b.as_dict() for b in self.ledger.plan_batches(batch_size=size, states=states, due_before=now)
        ]
        log.info("%d document(s) due in %d batch(es) of up to %d", total, len(batches), size)
        window = {"window_first_id": batches[0]["first_id"], "window_last_id": batches[-1]["last_id"]}
        return [{**b, **window} for b in batches]

    def selected(
        self,
        references: Sequence[str],
        states: Sequence[str],
        *,
        requeue_rejected: bool = False,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """A manual retry: optionally re-queue ``rejected``/``dead`` rows (of ``references`` when given)
        and pick ``pending`` too; then the named references (due or not), or every due row, in batches
        that carry ``states`` and ``references`` for the issue task. ``[]`` on a dry run (nothing is
        re-queued either; what would be is logged)."""
        states = list(dict.fromkeys(DocumentState(s).value for s in states))
        if requeue_rejected:
            requeue_states = (DocumentState.REJECTED, DocumentState.DEAD)
            if dry_run:
                found = (
                    self.ledger.ids_for_references(references, states=requeue_states) if references else []
                )
                log.info(
                    "Dry run: would re-queue %s rejected/dead row(s)", len(found) if references else "all"
                )
            else:
                count = self.ledger.requeue(list(references) or None, states=requeue_states)
                log.info("Re-queued %d rejected/dead row(s) as pending", count)
            states.append(DocumentState.PENDING.value)
        if references:
            ids = self.ledger.ids_for_references(references, states=states)
            size = self._size(len(ids))
            batches = [
                {"index": i, "first_id": chunk[0], "last_id": chunk[-1], "count": len(chunk)}
                for i, chunk in enumerate(ids[n : n + size] for n in range(0, len(ids), size))
            ]
        else:
            batches = self.due(states)
        log.info(
            "%d document(s) selected (states %s, %d reference(s) named) in %d batch(es)",
            sum(b["count"] for b in batches),
            states,
            len(references),
            len(batches),
        )
        if dry_run:
            log.info("Dry run: nothing will be sent to Koywe")
            return []
        return [{**b, "states": states, "references": list(references) or None} for b in batches]


__all__ = ["MAX_MAPPED_BATCHES", "BatchPlanner"]
