"""The issuance ledger API: :class:`Ledger`, composed of one mixin per concern.

=======================  =====================================================================
module                   concern
=======================  =====================================================================
``database``             engine, SQLite settings, transactions, ``migrate()``, the clock
``ingestion``            inbox lines into rows: new rows, corrections, conflicts, invalid lines
``claims``               batches, claims under a lease, the send fence (``mark_sent``), release
``outcomes``             ``mark_*``, ``requeue``, ``record_attempt`` (:class:`AttemptRecord`)
``queries``              counts, failures, rows, attempts, generations, follow-up lists
``status_updates``       Koywe's status news applied forwards only (functions on a ``Ledger``)
``notes``                credit/debit notes tied to their original, cancellations, deleted drafts
=======================  =====================================================================
"""

from __future__ import annotations

from koywe_provider.ledger.ingestion import IngestionMixin
from koywe_provider.ledger.notes import NotesMixin
from koywe_provider.ledger.outcomes import OutcomesMixin
from koywe_provider.ledger.queries import QueriesMixin


class Ledger(IngestionMixin, OutcomesMixin, QueriesMixin, NotesMixin):
    """The issuance ledger on one database (SQLite file or PostgreSQL).

    ``Ledger(url, *, clock=None, **engine_kwargs)``: see
    :class:`~koywe_provider.ledger.database.LedgerDatabase`. Thread-safe: share one instance per
    process and URL. Call :meth:`migrate` before first use. State machine: ``docs/DESIGN.md``.
    """


__all__ = ["Ledger"]
