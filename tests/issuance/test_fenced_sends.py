"""Fenced sends: no POST of a row goes out once its lease could have expired.

The sequence that used to make two Koywe documents for one reference: a 429 whose wait outlasts the
next row's lease, and a retry run taking that row over in the gap. Now the rate token comes first, then
the lease check (one UPDATE), then the POST; a wait longer than the lease hands the row back instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from koywe_provider.models.references import internal_reference_numbers
from koywe_provider.services.issuance import IssuancePolicy

LATER = datetime.now(UTC) + timedelta(days=1)


def test_a_429_longer_than_the_lease_never_makes_two_documents(
    ledger, ingest, make_issuer, clean_sandbox, factura, monkeypatch
):
    monkeypatch.setenv("AIRFLOW__KOYWE__RATE_LIMIT_MIN_WAIT_SECONDS", "0")  # wait exactly Retry-After
    refs = ("FENCE-1", "FENCE-2", "FENCE-3")
    ids = ingest(ledger, {r: factura(net=1_000 * (n + 1)) for n, r in enumerate(refs)})
    first_id, last_id = ids["FENCE-1"], ids["FENCE-3"]
    # Issuer A holds its rows for 5 s only; Koywe answers FENCE-2's POST with a 429 asking for 3 s.
    a = make_issuer(ledger, owner="run-a", policy=IssuancePolicy(lease_seconds=5, retry_base_seconds=0))
    a.hook.get_token()
    clean_sandbox.set_faults(burst_429={"every": 1, "length": 1, "retry_after": 3})  # the 2nd POST
    first = a.issue_range(first_id, last_id)
    clean_sandbox.set_faults(burst_429=None)
    states = {r: ledger.get(i) for r, i in ids.items()}
    assert (first.issued, first.rate_limited, first.retryable) == (1, 1, 2)
    assert states["FENCE-1"]["state"] == "issued"
    assert (states["FENCE-2"]["state"], states["FENCE-2"]["last_error_class"]) == (
        "retryable",
        "KoyweRateLimitedError",
    )
    # FENCE-3 was handed back before any POST: the shared pause outlasts what A may hold it for.
    assert (states["FENCE-3"]["state"], states["FENCE-3"]["attempts"]) == ("retryable", 0)
    assert states["FENCE-3"]["last_error_class"] == "RateBudgetTimeout"
    assert clean_sandbox.stats()["documents_created"] == 1

    # The retry run in the gap takes the rows over; it waits for the shared pause, then sends once each.
    b = make_issuer(ledger, owner="run-b", policy=IssuancePolicy(retry_base_seconds=0))
    second = b.issue_range(first_id, last_id, states=("retryable",), due_before=LATER)
    assert second.issued == 2
    # A, running again, finds nothing of its own to send.
    assert a.issue_range(first_id, last_id, states=("retryable", "pending"), due_before=LATER).issued == 0
    for reference in refs:
        assert len([d for d in clean_sandbox.documents() if reference in internal_reference_numbers(d)]) == 1
    assert clean_sandbox.stats()["documents_created"] == 3


def test_a_send_whose_lease_was_taken_over_is_never_sent(ledger, ingest, make_issuer, clean_sandbox, factura):
    pk = ingest(ledger, {"FENCE-3": factura()})["FENCE-3"]
    (claimed,) = ledger.claim_next(owner="run-a", limit=1, first_id=pk, last_id=pk, lease_seconds=-1)
    # The lease expired: another run takes the row over before run A gets to send it.
    assert ledger.claim_next(owner="run-b", limit=1, states=("in_flight",), first_id=pk, last_id=pk)
    a = make_issuer(ledger, owner="run-a")
    from koywe_provider.services.issuance import BatchOutcome

    outcome = BatchOutcome()
    a.issue_one(claimed, outcome)
    assert outcome.skipped == 1 and outcome.issued == 0
    assert clean_sandbox.stats()["documents_created"] == 0
    assert ledger.get(pk)["lease_owner"] == "run-b"
