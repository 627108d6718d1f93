"""One issue task keeps up to ``max_in_flight`` requests under way; every row is still claimed, fenced
and recorded on its own, exactly once."""

from __future__ import annotations

from koywe_provider.models.references import internal_reference_numbers
from koywe_provider.services.issuance import IssuancePolicy


def test_many_in_flight_issue_every_row_once_and_overlap(ledger, ingest, make_issuer, clean_sandbox, factura):
    refs = [f"ENGINE-{n}" for n in range(24)]
    ids = ingest(ledger, {r: factura(net=1_000 + n) for n, r in enumerate(refs)})
    clean_sandbox.set_faults(latency_ms=150)  # slow answers: only concurrency keeps several under way
    issuer = make_issuer(ledger, policy=IssuancePolicy(max_in_flight=6))
    outcome = issuer.issue_range(min(ids.values()), max(ids.values()))
    stats = clean_sandbox.stats()
    assert outcome.issued == len(refs) and outcome.skipped == 0
    assert all(ledger.get(pk)["state"] == "issued" for pk in ids.values())
    assert stats["documents_created"] == len(refs) and stats["duplicate_references"] == 0
    assert stats["auth_calls"] == 1
    assert 2 <= stats["max_in_flight"] <= 6
    for reference in refs:
        assert sum(reference in internal_reference_numbers(d) for d in clean_sandbox.documents()) == 1


def test_two_concurrent_tasks_never_send_the_same_row(ledger, ingest, make_issuer, clean_sandbox, factura):
    import threading

    refs = [f"TWO-{n}" for n in range(20)]
    ids = ingest(ledger, {r: factura(net=2_000 + n) for n, r in enumerate(refs)})
    clean_sandbox.set_faults(latency_ms=50)
    a = make_issuer(ledger, owner="task-a", policy=IssuancePolicy(max_in_flight=4))
    b = make_issuer(ledger, owner="task-b", policy=IssuancePolicy(max_in_flight=4))
    outcomes = {}
    threads = [
        threading.Thread(
            target=lambda n=n, i=i: outcomes.__setitem__(
                n, i.issue_range(min(ids.values()), max(ids.values()))
            )
        )
        for n, i in (("a", a), ("b", b))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert outcomes["a"].issued + outcomes["b"].issued == len(refs)
    assert clean_sandbox.stats()["documents_created"] == len(refs)
    assert clean_sandbox.stats()["duplicate_references"] == 0


def test_a_credentials_error_stops_every_thread(
    ledger, ingest, make_issuer, koywe_conn, clean_sandbox, factura
):
    import pytest

    from koywe_provider.exceptions import KoyweAuthError

    ids = ingest(ledger, {f"AUTH-{n}": factura(net=3_000 + n) for n in range(10)})
    bad = koywe_conn("koywe_bad", credentials={**clean_sandbox.credentials, "password": "wrong-password"})
    issuer = make_issuer(ledger, conn_id=bad, policy=IssuancePolicy(max_in_flight=4))
    with pytest.raises(KoyweAuthError):
        issuer.issue_range(min(ids.values()), max(ids.values()))
    assert clean_sandbox.stats()["documents_created"] == 0
    assert all(ledger.get(pk)["state"] == "pending" for pk in ids.values())


def test_a_task_done_with_its_range_takes_the_plans_unclaimed_rows(
    ledger, ingest, make_issuer, clean_sandbox, factura
):
    """Work stealing: the first task of a plan issues the rows of batches whose tasks have not started
    (no thread idles while rows wait for a pool slot); the later task finds them taken and sends nothing."""
    refs = [f"STEAL-{n}" for n in range(20)]
    ids = sorted(ingest(ledger, {r: factura(net=4_000 + n) for n, r in enumerate(refs)}).values())
    window = (ids[0], ids[-1])
    early = make_issuer(ledger, owner="task-0", policy=IssuancePolicy(max_in_flight=3))
    late = make_issuer(ledger, owner="task-1", policy=IssuancePolicy(max_in_flight=3))
    first = early.issue_range(ids[0], ids[4], steal_window=window)
    second = late.issue_range(ids[5], ids[-1], steal_window=window)
    assert (first.issued, first.skipped) == (len(refs), 0)
    assert (second.issued, second.skipped) == (0, 0)
    assert all(ledger.get(pk)["state"] == "issued" for pk in ids)
    assert clean_sandbox.stats()["documents_created"] == len(refs)


def test_stealing_never_takes_a_row_it_made_due_again(ledger, ingest, make_issuer, clean_sandbox, factura):
    """A 5xx makes a row ``retryable``, due at once with a zero backoff: a retry run that steals takes
    only rows due when it started, so each row is sent once per run, not again and again until dead."""
    ids = sorted(ingest(ledger, {f"ONCE-{n}": factura(net=5_000 + n) for n in range(6)}).values())
    clean_sandbox.set_faults(error_5xx_rate=1.0)
    issuer = make_issuer(ledger, policy=IssuancePolicy(max_in_flight=3, retry_base_seconds=0))
    outcome = issuer.issue_range(
        ids[0], ids[2], states=("pending", "retryable"), steal_window=(ids[0], ids[-1])
    )
    assert outcome.retryable == len(ids)
    assert [ledger.get(pk)["attempts"] for pk in ids] == [1] * len(ids)
    assert all(ledger.get(pk)["state"] == "retryable" for pk in ids)
