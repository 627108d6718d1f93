"""Planning and claiming: plan_batches, ids_in_range, claim, claim_next (including concurrency)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from koywe_provider.ledger import BatchSpec, DocumentState, Ledger


def test_plan_batches_ranges_and_sizes(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    ids = seed(23)
    batches = ledger.plan_batches(batch_size=10)
    assert [b.count for b in batches] == [10, 10, 3]
    assert [b.index for b in batches] == [0, 1, 2]
    assert [(b.first_id, b.last_id) for b in batches] == [
        (ids[0], ids[9]),
        (ids[10], ids[19]),
        (ids[20], ids[22]),
    ]
    assert batches[0].as_dict() == {"index": 0, "first_id": ids[0], "last_id": ids[9], "count": 10}
    assert BatchSpec.from_dict(batches[1].as_dict()) == batches[1]
    assert ledger.ids_in_range(batches[1].first_id, batches[1].last_id) == ids[10:20]
    # rows that are no longer pending drop out of the plan and of the range
    ledger.claim(ids[0], owner="w")
    ledger.claim(ids[5], owner="w")
    batches = ledger.plan_batches(batch_size=10)
    assert [b.count for b in batches] == [10, 10, 1]
    assert (batches[0].first_id, batches[0].last_id) == (ids[1], ids[11])
    assert ledger.ids_in_range(ids[0], ids[9]) == [i for i in ids[:10] if i not in (ids[0], ids[5])]
    assert ledger.plan_batches(batch_size=100, run_id="other-run") == []
    assert ledger.plan_batches(batch_size=100, run_id="run-1")[0].count == 21
    assert ledger.plan_batches(batch_size=5, states=("rejected",)) == []
    with pytest.raises(ValueError):
        ledger.plan_batches(batch_size=0)
    with pytest.raises(ValueError):
        ledger.plan_batches(batch_size=5, states=("nonsense",))


def test_plan_batches_respects_due_time(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    ids = seed(3)
    later = datetime.now(UTC) + timedelta(hours=1)
    for pk in ids[:2]:
        ledger.claim(pk, owner="w")
        ledger.mark_retryable(pk, error="503", error_class="ServerError", next_attempt_at=later)
    assert ledger.plan_batches(batch_size=10, states=("retryable",)) == []
    (batch,) = ledger.plan_batches(batch_size=10, states=("retryable",), due_before=later)
    assert (batch.first_id, batch.last_id, batch.count) == (ids[0], ids[1], 2)
    assert ledger.ids_in_range(ids[0], ids[2], states=("retryable",)) == []
    assert ledger.ids_in_range(ids[0], ids[2], states=("retryable",), due_before=later) == ids[:2]
    assert ledger.claim(ids[0], owner="w") is None  # not due yet
    assert ledger.claim_next(owner="w", limit=10, states=("retryable",)) == []
    claimed = ledger.claim(ids[0], owner="w", due_before=later + timedelta(seconds=1))
    assert claimed is not None and claimed.previous_state == DocumentState.RETRYABLE


def test_claim_is_atomic(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    (pk,) = seed(1)
    before = datetime.now(UTC)
    claimed = ledger.claim(pk, owner="worker-1", lease_seconds=60)
    assert claimed is not None
    assert claimed.pk == pk and claimed.reference == "r-000000" and claimed.account_id == "acc1"
    assert claimed.payload == {"n": 0} and claimed.attempts == 0 and not claimed.needs_lookup
    assert claimed.previous_state == DocumentState.PENDING and claimed.koywe_document_id is None
    assert claimed.lease_owner == "worker-1"
    assert (
        before + timedelta(seconds=59) < claimed.lease_expires_at < datetime.now(UTC) + timedelta(seconds=61)
    )
    assert ledger.claim(pk, owner="worker-2") is None
    assert ledger.claim_next(owner="worker-2", limit=5) == []
    row = ledger.get(pk)
    assert row["state"] == DocumentState.IN_FLIGHT and row["lease_owner"] == "worker-1"
    assert ledger.claim(999_999, owner="worker-2") is None
    with pytest.raises(ValueError):
        ledger.claim(pk, owner="w", states=("issued",))


def test_expired_lease_is_reclaimable(ledger: Ledger, seed: Callable[..., list[int]], clock) -> None:
    (pk,) = seed(1)
    assert ledger.claim(pk, owner="worker-1", lease_seconds=60) is not None
    assert ledger.mark_sent(pk, owner="worker-1", lease_seconds=60) == 1
    assert ledger.claim(pk, owner="worker-2") is None
    # an hour later the lease has expired: someone else may take the row over
    clock.advance(hours=1)
    assert ledger.plan_batches(batch_size=10, states=("in_flight",))[0].count == 1
    taken = ledger.claim(pk, owner="worker-2")
    assert taken is not None
    assert taken.previous_state == DocumentState.IN_FLIGHT and taken.attempts == 1 and taken.needs_lookup
    assert taken.generation == 1 and taken.generation_sends == 1 and taken.koywe_reference == "r-000000"
    assert ledger.get(pk)["lease_owner"] == "worker-2"
    assert ledger.claim(pk, owner="worker-3") is None


def test_clock_is_injected(make_ledger: Callable[..., Ledger], seed: Callable[..., list[int]]) -> None:
    """Every timestamp and lease comparison reads the ledger's clock, not the system's."""
    fixed = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
    ledger = make_ledger(clock=lambda: fixed)
    (pk,) = seed(1)
    claimed = ledger.claim(pk, owner="w", lease_seconds=30)
    assert claimed is not None and claimed.lease_expires_at == fixed + timedelta(seconds=30)
    row = ledger.get(pk)
    assert row["updated_at"] == fixed and row["lease_expires_at"] == fixed + timedelta(seconds=30)
    naive = make_ledger(clock=lambda: fixed.replace(tzinfo=None))  # naive means UTC
    assert naive.claim(pk, owner="w2") is None  # the lease is live at that instant
    assert naive._now() == fixed


def test_claim_next_order_range_and_limit(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    ids = seed(10)
    got = ledger.claim_next(owner="w", limit=3, first_id=ids[2], last_id=ids[6], lease_seconds=30)
    assert [c.pk for c in got] == ids[2:5]
    assert all(c.previous_state == DocumentState.PENDING and c.lease_owner == "w" for c in got)
    got = ledger.claim_next(owner="w", limit=10, first_id=ids[2], last_id=ids[6])
    assert [c.pk for c in got] == ids[5:7]
    assert ledger.claim_next(owner="w", limit=10, first_id=ids[2], last_id=ids[6]) == []
    assert ledger.claim_next(owner="w", limit=0) == []
    assert [c.pk for c in ledger.claim_next(owner="w", limit=100)] == ids[:2] + ids[7:]
    with pytest.raises(ValueError):
        ledger.claim_next(owner="w", limit=1, states=("dead",))


def _claim_concurrently(ledgers: list[Ledger], limit: int) -> list[int]:
    barrier = threading.Barrier(len(ledgers))
    claimed: list[list[int]] = [[] for _ in ledgers]
    errors: list[BaseException] = []

    def work(i: int, ledger: Ledger) -> None:
        try:
            barrier.wait()
            while True:
                batch = ledger.claim_next(owner=f"worker-{i}", limit=limit)
                if not batch:
                    return
                claimed[i].extend(c.pk for c in batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, lg)) for i, lg in enumerate(ledgers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert sum(1 for c in claimed if c) > 1, "expected the work to be shared between claimers"
    return [pk for c in claimed for pk in c]


def test_claim_next_concurrent_claimers_never_share_a_row(
    backend: str, ledger: Ledger, seed: Callable[..., list[int]], make_ledger: Callable[..., Ledger]
) -> None:
    ids = seed(2000)
    workers = 4 if backend == "sqlite" else 8
    all_claimed = _claim_concurrently([make_ledger() for _ in range(workers)], limit=7)
    duplicates = [pk for pk, n in Counter(all_claimed).items() if n > 1]
    assert duplicates == []
    assert sorted(all_claimed) == ids
    counts = ledger.counts_by_state()
    assert counts["in_flight"] == 2000 and counts["pending"] == 0


def test_claim_by_id_concurrently(ledger: Ledger, seed: Callable[..., list[int]], make_ledger) -> None:
    ids = seed(200)
    ledgers = [make_ledger() for _ in range(4)]
    barrier = threading.Barrier(len(ledgers))
    won: list[list[int]] = [[] for _ in ledgers]
    errors: list[BaseException] = []

    def work(i: int, lg: Ledger) -> None:
        try:
            barrier.wait()
            for pk in ids:  # everybody tries every row
                if lg.claim(pk, owner=f"w{i}") is not None:
                    won[i].append(pk)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, lg)) for i, lg in enumerate(ledgers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert sorted(pk for w in won for pk in w) == ids
