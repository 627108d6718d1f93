"""Outcome transitions (mark_*), attempts log, release, requeue and the reports."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from koywe_provider.ledger import (
    DocumentNotFoundError,
    DocumentState,
    InvalidTransitionError,
    LeaseLostError,
    Ledger,
)


@pytest.fixture
def claimed(ledger: Ledger, seed: Callable[..., list[int]]) -> int:
    (pk,) = seed(1)
    assert ledger.claim(pk, owner="w1") is not None
    return pk


def test_mark_sent_counts_posts_and_needs_the_lease(ledger: Ledger, claimed: int) -> None:
    assert ledger.mark_sent(claimed) == 1
    assert ledger.mark_sent(claimed, owner="w1") == 2
    assert ledger.get(claimed)["attempts"] == 2
    with pytest.raises(LeaseLostError):
        ledger.mark_sent(claimed, owner="someone-else")
    ledger.mark_unknown(claimed, error="read timeout", error_class="KoyweTimeout")
    with pytest.raises(LeaseLostError):  # no longer in_flight: do not POST
        ledger.mark_sent(claimed)
    with pytest.raises(DocumentNotFoundError):
        ledger.mark_sent(123_456)
    assert ledger.get(claimed)["attempts"] == 2


def test_mark_issued(ledger: Ledger, claimed: int) -> None:
    ledger.mark_sent(claimed)
    ledger.mark_issued(
        claimed,
        koywe_document_id=98765,
        document_number=4411,
        document_status=1,
        taxbureau_sending_status=1,
        taxbureau_validation_status=3,
        http_status=201,
        duration_ms=350,
        run_id="run-1",
        task="issue_batch",
    )
    row = ledger.get(claimed)
    assert row["state"] == DocumentState.ISSUED
    assert row["koywe_document_id"] == "98765" and row["document_number"] == "4411"
    assert (row["document_status"], row["taxbureau_sending_status"], row["taxbureau_validation_status"]) == (
        1,
        1,
        3,
    )
    assert row["result_status"] == 0
    assert row["lease_owner"] is None and row["lease_expires_at"] is None and row["claimed_from"] is None
    assert row["last_error"] is None and row["next_attempt_at"] is None
    issued_at = row["issued_at"]
    assert issued_at is not None and abs(datetime.now(UTC) - issued_at) < timedelta(minutes=1)
    (attempt,) = ledger.attempts_for(claimed)
    assert attempt["kind"] == "create" and attempt["outcome"] == "issued"
    assert attempt["http_status"] == 201 and attempt["duration_ms"] == 350
    assert attempt["run_id"] == "run-1" and attempt["task"] == "issue_batch"
    assert attempt["attempted_at"].tzinfo is not None
    # refreshing statuses later keeps issued_at; another Koywe id is a duplicate alarm
    ledger.mark_issued(
        claimed, koywe_document_id="98765", document_number="4411", taxbureau_validation_status=4
    )
    row = ledger.get(claimed)
    assert row["issued_at"] == issued_at and row["taxbureau_validation_status"] == 4
    with pytest.raises(InvalidTransitionError):
        ledger.mark_issued(claimed, koywe_document_id="11111", document_number="4412")
    for mark in (
        lambda: ledger.mark_rejected(claimed, error="x", error_class="y"),
        lambda: ledger.mark_retryable(claimed, error="x", error_class="y", next_attempt_at=datetime.now(UTC)),
        lambda: ledger.mark_unknown(claimed, error="x", error_class="y"),
        lambda: ledger.mark_dead(claimed, error="x", error_class="y"),
    ):
        with pytest.raises(InvalidTransitionError):
            mark()
    assert ledger.get(claimed)["state"] == DocumentState.ISSUED
    assert ledger.claim(claimed, owner="w2") is None
    assert len(ledger.attempts_for(claimed)) == 1  # nothing recorded without http_status/duration


def test_mark_issued_draft_and_adopted(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    a, b = seed(2)
    ledger.claim(a, owner="w")
    ledger.mark_issued(a, koywe_document_id="1", document_number=None, document_status=0)
    assert ledger.get(a)["state"] == DocumentState.DRAFT
    ledger.mark_issued(
        a, koywe_document_id="1", document_number="77", document_status=1
    )  # draft issued later
    assert ledger.get(a)["state"] == DocumentState.ISSUED and ledger.get(a)["document_number"] == "77"

    ledger.claim(b, owner="w")
    ledger.mark_issued(
        b, koywe_document_id="2", document_number="78", adopted=True, http_status=200, duration_ms=12
    )
    (attempt,) = ledger.attempts_for(b)
    assert attempt["kind"] == "lookup" and attempt["outcome"] == "adopted"


def test_mark_rejected(ledger: Ledger, claimed: int) -> None:
    ledger.mark_sent(claimed)
    ledger.mark_rejected(
        claimed,
        error="Error 1033: could not be sent",
        error_class="KoyweRejected",
        koywe_document_id="555",
        result_status=2,
        error_field="header.issue_date",
        http_status=201,
        duration_ms=80,
    )
    row = ledger.get(claimed)
    assert row["state"] == DocumentState.REJECTED and row["lease_owner"] is None
    assert row["last_error"] == "Error 1033: could not be sent" and row["last_error_class"] == "KoyweRejected"
    assert row["koywe_document_id"] == "555" and row["result_status"] == 2
    assert row["error_field"] == "header.issue_date"
    (attempt,) = ledger.attempts_for(claimed)
    assert attempt["outcome"] == "rejected" and attempt["error"] == "Error 1033: could not be sent"
    assert ledger.claim(claimed, owner="w2") is None  # rejected is not claimable


def test_mark_retryable_and_unknown(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    a, b = seed(2)
    later = datetime.now(UTC) + timedelta(minutes=5)
    ledger.claim(a, owner="w")
    ledger.mark_retryable(
        a, error="429", error_class="KoyweRateLimited", next_attempt_at=later, http_status=429, duration_ms=5
    )
    row = ledger.get(a)
    assert row["state"] == DocumentState.RETRYABLE and row["next_attempt_at"] == later
    assert row["lease_owner"] is None
    assert ledger.attempts_for(a)[0]["outcome"] == "rate_limited"
    naive_later = (later + timedelta(minutes=1)).replace(tzinfo=None)  # naive means UTC
    ledger.claim(a, owner="w", due_before=later)
    ledger.mark_retryable(
        a,
        error="503",
        error_class="KoyweServerError",
        next_attempt_at=naive_later,
        http_status=503,
        duration_ms=7,
    )
    assert ledger.get(a)["next_attempt_at"] == naive_later.replace(tzinfo=UTC)
    assert [x["outcome"] for x in ledger.attempts_for(a)] == ["rate_limited", "retryable"]

    ledger.claim(b, owner="w")
    ledger.mark_sent(b)
    ledger.mark_unknown(b, error="read timeout", error_class="KoyweTimeout", duration_ms=30_000)
    row = ledger.get(b)
    assert row["state"] == DocumentState.UNKNOWN and row["next_attempt_at"] is None
    (attempt,) = ledger.attempts_for(b)
    assert (
        attempt["outcome"] == "unknown"
        and attempt["http_status"] is None
        and attempt["duration_ms"] == 30_000
    )
    again = ledger.claim(b, owner="w2")  # due at once
    assert again is not None and again.previous_state == DocumentState.UNKNOWN and again.needs_lookup


def test_mark_dead_and_owner_checks(ledger: Ledger, claimed: int) -> None:
    with pytest.raises(LeaseLostError):
        ledger.mark_dead(claimed, error="gave up", error_class="TooManyAttempts", owner="intruder")
    with pytest.raises(ValueError):  # recording an attempt on mark_dead needs an explicit outcome
        ledger.mark_dead(claimed, error="gave up", error_class="TooManyAttempts", http_status=503)
    assert ledger.get(claimed)["state"] == DocumentState.IN_FLIGHT
    ledger.mark_dead(claimed, error="gave up", error_class="TooManyAttempts", owner="w1")
    row = ledger.get(claimed)
    assert row["state"] == DocumentState.DEAD and row["last_error_class"] == "TooManyAttempts"
    assert ledger.attempts_for(claimed) == []
    with pytest.raises(DocumentNotFoundError):
        ledger.mark_dead(987_654, error="x", error_class="y")


def test_record_attempt(ledger: Ledger, claimed: int) -> None:
    ledger.record_attempt(
        claimed, kind="lookup", outcome="not_found", http_status=200, duration_ms=40, run_id="r", task="t"
    )
    ledger.record_attempt(
        claimed, kind="create", outcome="auth_error", http_status=401, error="Invalid token"
    )
    attempts = ledger.attempts_for(claimed)
    assert [(a["kind"], a["outcome"], a["http_status"]) for a in attempts] == [
        ("lookup", "not_found", 200),
        ("create", "auth_error", 401),
    ]
    assert attempts[1]["duration_ms"] == 0 and attempts[1]["error"] == "Invalid token"
    assert ledger.get(claimed)["attempts"] == 0  # only mark_sent counts POSTs
    with pytest.raises(ValueError):
        ledger.record_attempt(claimed, kind="delete", outcome="issued")
    with pytest.raises(ValueError):
        ledger.record_attempt(claimed, kind="create", outcome="maybe")
    with pytest.raises(DocumentNotFoundError):
        ledger.record_attempt(424_242, kind="create", outcome="issued")


def test_release(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    a, b = seed(2)
    ledger.claim(a, owner="w1")
    assert ledger.release(a, owner="someone-else") is False
    assert ledger.release(a, owner="w1") is True
    row = ledger.get(a)
    assert (
        row["state"] == DocumentState.PENDING and row["lease_owner"] is None and row["claimed_from"] is None
    )
    assert ledger.release(a) is False  # not in flight any more

    ledger.claim(b, owner="w1")
    ledger.mark_retryable(
        b, error="503", error_class="X", next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    ledger.claim(b, owner="w2")
    assert ledger.release(b) is True
    assert ledger.get(b)["state"] == DocumentState.RETRYABLE

    # a row taken over from an expired lease after a POST goes back to "unknown"
    ledger.claim(b, owner="w3", lease_seconds=-1)
    ledger.mark_sent(b)
    taken = ledger.claim(b, owner="w4")
    assert taken is not None and taken.previous_state == DocumentState.IN_FLIGHT
    assert ledger.release(b, owner="w4") is True
    assert ledger.get(b)["state"] == DocumentState.UNKNOWN


def test_requeue(ledger: Ledger, seed: Callable[..., list[int]], make_item) -> None:
    a, b, c, d = seed(4)
    for pk in (a, b, c, d):
        ledger.claim(pk, owner="w")
        ledger.mark_sent(pk)
    ledger.mark_rejected(a, error="bad", error_class="KoyweRejected")
    ledger.mark_dead(b, error="gave up", error_class="TooManyAttempts")
    ledger.mark_rejected(c, error="bad", error_class="KoyweRejected")
    ledger.mark_issued(d, koywe_document_id="9", document_number="1")
    ledger.ingest_many([make_item("r-000000", {"n": 0}, account_id="acc2")])  # same reference, other account
    other = ledger.get_by_reference("acc2", "r-000000")["id"]
    ledger.claim(other, owner="w")
    ledger.mark_rejected(other, error="bad", error_class="KoyweRejected")

    assert ledger.requeue(["r-000000"], account_id="acc1") == 1
    row = ledger.get(a)
    assert row["state"] == DocumentState.PENDING and row["attempts"] == 1 and row["last_error"] is None
    assert ledger.get(other)["state"] == DocumentState.REJECTED
    assert ledger.requeue(["no-such-ref"]) == 0
    assert ledger.requeue(states=("dead",)) == 1
    assert ledger.get(b)["state"] == DocumentState.PENDING
    assert ledger.requeue() == 2  # c and the acc2 row
    assert ledger.get(d)["state"] == DocumentState.ISSUED
    with pytest.raises(ValueError):
        ledger.requeue(states=("issued",))
    with pytest.raises(ValueError):
        ledger.requeue(states=("invalid",))
    again = ledger.claim(a, owner="w")
    assert again is not None and again.previous_state == DocumentState.PENDING and again.needs_lookup


def test_counts_and_failures(ledger: Ledger, seed: Callable[..., list[int]], make_item) -> None:
    ids = seed(6)
    ledger.ingest_many([make_item(None, None, error="not JSON", raw_line="{", line_no=99)], run_id="run-2")
    ledger.claim(ids[0], owner="w")
    ledger.mark_issued(ids[0], koywe_document_id="1", document_number="1")
    ledger.claim(ids[1], owner="w")
    ledger.mark_rejected(
        ids[1], error="RUT inválido", error_class="KoyweRejected", error_field="receiver_tax_id"
    )
    ledger.claim(ids[2], owner="w")
    ledger.mark_dead(ids[2], error="gave up", error_class="TooManyAttempts")
    ledger.claim(ids[3], owner="w")
    ledger.claim(ids[4], owner="w")
    ledger.mark_issued(ids[4], koywe_document_id="2", document_number=None, document_status=0)

    counts = ledger.counts_by_state()
    assert set(counts) == {s.value for s in DocumentState}
    assert counts == {
        "pending": 1,
        "in_flight": 1,
        "issued": 1,
        "rejected": 1,
        "retryable": 0,
        "unknown": 0,
        "invalid": 1,
        "dead": 1,
        "draft": 1,
    }
    assert ledger.counts_by_state(run_id="run-2")["invalid"] == 1
    assert sum(ledger.counts_by_state(run_id="run-2").values()) == 1
    assert sum(ledger.counts_by_state(run_id="nope").values()) == 0

    failures = ledger.failures()
    assert [f["state"] for f in failures] == ["rejected", "dead", "in_flight", "invalid"]
    rejected = failures[0]
    assert rejected["reference"] == "r-000001" and rejected["account_id"] == "acc1"
    assert rejected["last_error"] == "RUT inválido" and rejected["error_field"] == "receiver_tax_id"
    assert rejected["last_error_class"] == "KoyweRejected" and rejected["attempts"] == 0
    assert rejected["source"] == "file:///inbox/a.jsonl" and rejected["line_no"] == 2
    assert set(rejected) >= {
        "reference",
        "account_id",
        "state",
        "last_error_class",
        "last_error",
        "error_field",
        "source",
        "line_no",
        "attempts",
    }
    assert [f["state"] for f in ledger.failures(run_id="run-2")] == ["invalid"]
    assert len(ledger.failures(limit=2)) == 2


def test_get_missing(ledger: Ledger) -> None:
    assert ledger.get(1) is None
    assert ledger.get_by_reference("acc1", "nothing") is None
    assert ledger.attempts_for(1) == []
    assert ledger.failures() == [] and ledger.conflicts() == []
