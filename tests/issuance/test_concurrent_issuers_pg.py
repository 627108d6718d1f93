"""Two Issuers working the same rows at once on a real PostgreSQL never send a document twice."""

from __future__ import annotations

import threading

import pytest

from koywe_provider.ledger import Ledger
from koywe_provider.services.issuance import RETRY_STATES

pytestmark = [pytest.mark.postgres]

ROWS = 60


def test_two_issuers_on_the_same_range_send_each_document_once(
    pg_database, ingest, make_issuer, clean_sandbox, factura
):
    ledger = Ledger(pg_database)
    ledger.migrate()
    try:
        ids = ingest(ledger, {f"PG-{n:03d}": factura(net=1_000 + n) for n in range(ROWS)})
        # a few rows left in_flight by a crashed task (expired lease): the retry selection takes them
        for pk in sorted(ids.values())[:5]:
            ledger.claim(pk, owner="killed-task", lease_seconds=-1)
        first, last = min(ids.values()), max(ids.values())
        issuers = [make_issuer(ledger, owner=f"issuer-{i}") for i in range(2)]
        issuers[0].hook.get_token()
        outcomes = [None, None]
        start = threading.Barrier(2)

        def work(i: int) -> None:
            start.wait()
            outcomes[i] = issuers[i].issue_range(first, last, states=("pending", *RETRY_STATES))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        handled = [o.issued + o.adopted for o in outcomes]
        assert sum(handled) == ROWS
        assert sum(o.skipped for o in outcomes) > 0, [o.as_dict() for o in outcomes]  # they competed
        stats = clean_sandbox.stats()
        assert stats["documents_created"] == ROWS
        assert stats["duplicate_references"] == 0
        assert ledger.counts_by_state()["issued"] == ROWS
        refs = [
            r["reference_number"]
            for d in clean_sandbox.documents()
            for r in d["references"]
            if r["reference_code"] == 5
        ]
        assert sorted(refs) == sorted(ids)
    finally:
        ledger.dispose()
