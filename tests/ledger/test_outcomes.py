"""Outcome transitions (mark_*), attempts log, release, requeue and the reports."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from koywe_provider.ledger import (
    AttemptRecord,
    DocumentFacts,
    DocumentNotFoundError,
    DocumentState,
    DuplicateKoyweDocumentError,
    InvalidTransitionError,
    LeaseLostError,
    Ledger,
    LedgerError,
    RowNotFoundError,
)

LEASE = 60


def facts(koywe_id: str | int | None, number: str | int | None = None, **statuses) -> DocumentFacts:
    statuses.setdefault("result_status", 0)
    return DocumentFacts(koywe_document_id=koywe_id, document_number=number, **statuses)


def sent(ledger: Ledger, pk: int, owner: str = "w1") -> int:
    return ledger.mark_sent(pk, owner=owner, lease_seconds=LEASE)


@pytest.fixture
def claimed(ledger: Ledger, seed: Callable[..., list[int]]) -> int:
    (pk,) = seed(1)
    assert ledger.claim(pk, owner="w1") is not None
    return pk


def test_mark_sent_counts_posts_and_needs_the_lease(ledger: Ledger, claimed: int) -> None:
    assert sent(ledger, claimed) == 1
    assert sent(ledger, claimed) == 2
    row = ledger.get(claimed)
    assert (row["attempts"], row["generation_sends"]) == (2, 2)
    with pytest.raises(LeaseLostError):
        sent(ledger, claimed, owner="someone-else")
    ledger.mark_unknown(claimed, error="read timeout", error_class="KoyweTimeout")
    with pytest.raises(LeaseLostError):  # no longer in_flight: do not POST
        sent(ledger, claimed)
    with pytest.raises(DocumentNotFoundError):
        sent(ledger, 123_456)
    with pytest.raises(ValueError):
        ledger.mark_sent(claimed, owner="", lease_seconds=LEASE)
    assert ledger.get(claimed)["attempts"] == 2


def test_mark_sent_extends_the_lease(ledger: Ledger, claimed: int, clock) -> None:
    now = clock.freeze()
    sent(ledger, claimed)
    assert ledger.get(claimed)["lease_expires_at"] == now + timedelta(seconds=LEASE)
    clock.advance(seconds=LEASE - 1)  # just before the claim's own lease (900 s) ... and ours
    ledger.mark_sent(claimed, owner="w1", lease_seconds=600)
    assert ledger.get(claimed)["lease_expires_at"] == now + timedelta(seconds=LEASE - 1 + 600)


def test_mark_sent_refuses_an_expired_lease(ledger: Ledger, seed: Callable[..., list[int]], clock) -> None:
    (pk,) = seed(1)
    ledger.claim(pk, owner="w1", lease_seconds=60)
    clock.advance(seconds=61)
    with pytest.raises(LeaseLostError, match="expired"):
        sent(ledger, pk)
    row = ledger.get(pk)
    assert (row["attempts"], row["generation_sends"], row["state"]) == (0, 0, DocumentState.IN_FLIGHT)


def test_mark_sent_refuses_a_lease_taken_over(ledger: Ledger, seed: Callable[..., list[int]], clock) -> None:
    (pk,) = seed(1)
    ledger.claim(pk, owner="w1", lease_seconds=60)
    assert sent(ledger, pk) == 1
    clock.advance(seconds=LEASE + 1)  # w1 stalls past its lease; w2 takes the row over
    taken = ledger.claim(pk, owner="w2")
    assert taken is not None and taken.needs_lookup and taken.generation_sends == 1
    with pytest.raises(LeaseLostError, match="held by 'w2'"):
        sent(ledger, pk, owner="w1")
    assert sent(ledger, pk, owner="w2") == 2
    assert ledger.get(pk)["lease_owner"] == "w2"


def test_mark_issued(ledger: Ledger, claimed: int) -> None:
    sent(ledger, claimed)
    state = ledger.mark_issued(
        claimed,
        owner="w1",
        facts=facts(
            98765,
            4411,
            document_status=1,
            counterparty_status=1,
            taxbureau_sending_status=1,
            taxbureau_validation_status=3,
        ),
        attempt=AttemptRecord(
            "create", "issued", http_status=201, duration_ms=350, run_id="run-1", task="issue_batch"
        ),
    )
    assert state is DocumentState.ISSUED
    row = ledger.get(claimed)
    assert row["state"] == DocumentState.ISSUED
    assert row["koywe_document_id"] == "98765" and row["document_number"] == "4411"
    assert (row["document_status"], row["taxbureau_sending_status"], row["taxbureau_validation_status"]) == (
        1,
        1,
        3,
    )
    assert row["result_status"] == 0 and row["counterparty_status"] == 1
    assert row["lease_owner"] is None and row["lease_expires_at"] is None and row["claimed_from"] is None
    assert row["last_error"] is None and row["next_attempt_at"] is None
    issued_at = row["issued_at"]
    assert issued_at is not None and abs(datetime.now(UTC) - issued_at) < timedelta(minutes=1)
    (attempt,) = ledger.attempts_for(claimed)
    assert attempt["kind"] == "create" and attempt["outcome"] == "issued"
    assert attempt["http_status"] == 201 and attempt["duration_ms"] == 350
    assert attempt["run_id"] == "run-1" and attempt["task"] == "issue_batch"
    assert attempt["attempted_at"].tzinfo is not None and attempt["generation"] == 1
    (generation,) = ledger.generations_for(claimed)
    assert (generation["generation"], generation["koywe_reference"], generation["outcome"]) == (
        1,
        "r-000000",
        "issued",
    )
    assert generation["koywe_document_id"] == "98765" and generation["document_number"] == "4411"
    assert generation["taxbureau_validation_status"] == 3 and generation["ended_at"] is None
    # refreshing statuses later keeps issued_at and never moves backwards; another Koywe id is refused
    ledger.mark_issued(claimed, facts=facts("98765", taxbureau_validation_status=1, document_status=1))
    row = ledger.get(claimed)
    assert row["issued_at"] == issued_at and row["taxbureau_validation_status"] == 3
    assert row["document_number"] == "4411" and row["counterparty_status"] == 1
    with pytest.raises(InvalidTransitionError):
        ledger.mark_issued(claimed, facts=facts("11111", "4412"))
    for mark in (
        lambda: ledger.mark_rejected(claimed, error="x", error_class="y"),
        lambda: ledger.mark_retryable(claimed, error="x", error_class="y", next_attempt_at=datetime.now(UTC)),
        lambda: ledger.mark_unknown(claimed, error="x", error_class="y"),
        lambda: ledger.mark_dead(claimed, error="x", error_class="y"),
        lambda: ledger.mark_held(claimed, error="x", error_class="y"),
    ):
        with pytest.raises(InvalidTransitionError):
            mark()
    assert ledger.get(claimed)["state"] == DocumentState.ISSUED
    assert ledger.claim(claimed, owner="w2") is None
    assert len(ledger.attempts_for(claimed)) == 1  # only the attempt given explicitly


def test_mark_issued_draft_and_adopted(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    a, b = seed(2)
    ledger.claim(a, owner="w")
    assert ledger.mark_issued(a, facts=facts("1", None, document_status=0)) is DocumentState.DRAFT
    assert ledger.get(a)["state"] == DocumentState.DRAFT
    ledger.mark_issued(a, facts=facts("1", "77", document_status=1))  # draft issued later
    assert ledger.get(a)["state"] == DocumentState.ISSUED and ledger.get(a)["document_number"] == "77"
    assert [g["outcome"] for g in ledger.generations_for(a)] == ["issued"]

    ledger.claim(b, owner="w")
    ledger.mark_issued(
        b,
        owner="w",
        facts=facts("2", "78"),
        adopted=True,
        attempt=AttemptRecord("lookup", "adopted", http_status=200, duration_ms=12),
    )
    (attempt,) = ledger.attempts_for(b)
    assert attempt["kind"] == "lookup" and attempt["outcome"] == "adopted"


def test_mark_issued_not_sent_then_followed(ledger: Ledger, claimed: int) -> None:
    """``result.status == 2``: the document exists (id, folio) but the tax bureau has not got it."""
    sent(ledger, claimed)
    state = ledger.mark_issued(
        claimed,
        owner="w1",
        facts=facts("555", "88", document_status=1, result_status=2, result_error_message="Error 1033"),
        attempt=AttemptRecord("create", "not_sent", http_status=201),
    )
    assert state is DocumentState.NOT_SENT
    row = ledger.get(claimed)
    assert (row["state"], row["koywe_document_id"], row["document_number"]) == ("not_sent", "555", "88")
    assert row["result_status"] == 2 and row["result_error_message"] == "Error 1033"
    assert row["issued_at"] is not None and row["lease_owner"] is None
    assert [g["outcome"] for g in ledger.generations_for(claimed)] == ["not_sent"]
    # it exists: never claimed, re-queued, downgraded, nor listed as a failure; it is followed
    assert ledger.claim(claimed, owner="w2") is None
    assert ledger.requeue(states=("rejected", "dead", "retryable", "unknown")) == 0
    with pytest.raises(InvalidTransitionError):
        ledger.mark_rejected(claimed, error="x", error_class="y")
    assert ledger.failures() == []
    assert ledger.awaiting_taxbureau().koywe_document_ids == ("555",)
    # a lookup that sees the bureau received it makes it issued
    assert ledger.mark_issued(
        claimed, facts=facts("555", taxbureau_sending_status=1, result_status=None)
    ) == (DocumentState.ISSUED)
    assert ledger.get(claimed)["result_status"] == 2  # what the POST answered stays recorded


def test_mark_issued_refuses_a_missing_document_id(ledger: Ledger, claimed: int) -> None:
    for koywe_id in (None, "", "  ", "None"):
        with pytest.raises(ValueError, match="unknown"):
            ledger.mark_issued(claimed, owner="w1", facts=facts(koywe_id, "1"))
    row = ledger.get(claimed)
    assert row["state"] == DocumentState.IN_FLIGHT and row["koywe_document_id"] is None
    assert ledger.generations_for(claimed) == []


def test_mark_issued_adopting_a_bureau_rejected_document(ledger: Ledger, claimed: int) -> None:
    state = ledger.mark_issued(
        claimed,
        owner="w1",
        facts=facts("556", "89", taxbureau_validation_status=5, taxbureau_validation_comments="RUT"),
    )
    assert state is DocumentState.REJECTED
    row = ledger.get(claimed)
    assert row["last_error_class"] == "taxbureau_rejected" and "RUT" in row["last_error"]
    (generation,) = ledger.generations_for(claimed)
    assert generation["outcome"] == "taxbureau_rejected" and generation["ended_at"] is not None


def test_duplicate_koywe_document_is_refused(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    a, b = seed(2)
    for pk in (a, b):
        ledger.claim(pk, owner="w")
        ledger.mark_sent(pk, owner="w", lease_seconds=LEASE)
    ledger.mark_issued(a, owner="w", facts=facts("700", "1"))
    with pytest.raises(DuplicateKoyweDocumentError) as info:
        ledger.mark_issued(
            b, owner="w", facts=facts("700", "1"), attempt=AttemptRecord("lookup", "adopted", http_status=200)
        )
    assert "'r-000000'" in str(info.value) and "'r-000001'" in str(info.value)
    assert info.value.koywe_document_id == "700" and info.value.reference == "r-000001"
    assert isinstance(info.value, InvalidTransitionError)
    row = ledger.get(b)
    assert row["state"] == DocumentState.IN_FLIGHT and row["lease_owner"] == "w"
    assert row["koywe_document_id"] is None and ledger.attempts_for(b) == []
    assert ledger.generations_for(b) == []
    with pytest.raises(DuplicateKoyweDocumentError):  # a rejection naming that document too
        ledger.mark_rejected(b, owner="w", error="x", error_class="y", facts=facts("700", result_status=1))
    ledger.mark_held(b, owner="w", error="Koywe document 700 is another row's", error_class="DuplicateAlarm")
    assert ledger.get(b)["state"] == DocumentState.DEAD


def test_unique_index_catches_a_concurrent_duplicate(
    ledger: Ledger, seed: Callable[..., list[int]], monkeypatch
) -> None:
    """The friendly check cannot see a row committed after it ran: the unique index still refuses."""
    from koywe_provider.ledger import outcomes

    a, b = seed(2)
    ledger.claim(a, owner="w")
    ledger.mark_issued(a, owner="w", facts=facts("701", "1"))
    ledger.claim(b, owner="w")
    real = outcomes.holder_of
    calls: list[int] = []

    def blind_first(*args, **kwargs):
        calls.append(1)
        return None if len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(outcomes, "holder_of", blind_first)
    with pytest.raises(DuplicateKoyweDocumentError, match="r-000000"):
        ledger.mark_issued(b, owner="w", facts=facts("701", "1"))
    assert ledger.get(b)["state"] == DocumentState.IN_FLIGHT and ledger.get(b)["lease_owner"] == "w"


def test_mark_rejected(ledger: Ledger, claimed: int) -> None:
    sent(ledger, claimed)
    ledger.mark_rejected(
        claimed,
        owner="w1",
        error="Error 1022: RUT receptor",
        error_class="KoyweRejected",
        facts=facts("555", result_status=1, result_error_message="Error 1022"),
        error_field="header.receiver_tax_id_code",
        attempt=AttemptRecord("create", "rejected", http_status=201, duration_ms=80),
    )
    row = ledger.get(claimed)
    assert row["state"] == DocumentState.REJECTED and row["lease_owner"] is None
    assert row["last_error"] == "Error 1022: RUT receptor" and row["last_error_class"] == "KoyweRejected"
    assert row["koywe_document_id"] == "555" and row["result_status"] == 1
    assert row["result_error_message"] == "Error 1022"
    assert row["error_field"] == "header.receiver_tax_id_code"
    (attempt,) = ledger.attempts_for(claimed)
    assert attempt["outcome"] == "rejected" and attempt["error"] == "Error 1022: RUT receptor"
    (generation,) = ledger.generations_for(claimed)
    assert (generation["outcome"], generation["koywe_document_id"], generation["result_status"]) == (
        "rejected",
        "555",
        1,
    )
    assert generation["ended_at"] is not None
    assert ledger.claim(claimed, owner="w2") is None  # rejected is not claimable


def test_one_generation_is_one_koywe_document(ledger: Ledger, claimed: int) -> None:
    ledger.mark_rejected(claimed, owner="w1", error="e", error_class="K", facts=facts("560", result_status=1))
    with pytest.raises(InvalidTransitionError, match="generation 1 .* Koywe document 560"):
        ledger.mark_issued(claimed, facts=facts("561", "1"))
    assert ledger.get(claimed)["koywe_document_id"] == "560"
    assert [g["koywe_document_id"] for g in ledger.generations_for(claimed)] == ["560"]


def test_mark_rejected_refuses_a_not_sent_document(ledger: Ledger, claimed: int) -> None:
    with pytest.raises(ValueError, match="mark_issued"):
        ledger.mark_rejected(claimed, error="1033", error_class="K", facts=facts("557", result_status=2))
    assert ledger.get(claimed)["state"] == DocumentState.IN_FLIGHT


def test_400_rejection_records_a_closed_generation(ledger: Ledger, claimed: int) -> None:
    ledger.mark_rejected(claimed, owner="w1", error="details missing", error_class="KoyweRejectedError")
    (generation,) = ledger.generations_for(claimed)
    assert generation["koywe_document_id"] is None and generation["outcome"] == "rejected"


def test_mark_retryable_and_unknown(ledger: Ledger, seed: Callable[..., list[int]]) -> None:
    a, b = seed(2)
    later = datetime.now(UTC) + timedelta(minutes=5)
    ledger.claim(a, owner="w")
    ledger.mark_retryable(
        a,
        error="429",
        error_class="KoyweRateLimited",
        next_attempt_at=later,
        attempt=AttemptRecord("create", "rate_limited", http_status=429, duration_ms=5),
    )
    row = ledger.get(a)
    assert row["state"] == DocumentState.RETRYABLE and row["next_attempt_at"] == later
    assert row["lease_owner"] is None
    assert ledger.attempts_for(a)[0]["outcome"] == "rate_limited"
    assert ledger.attempts_for(a)[0]["error"] == "429"  # the mark's error when the attempt has none
    naive_later = (later + timedelta(minutes=1)).replace(tzinfo=None)  # naive means UTC
    ledger.claim(a, owner="w", due_before=later)
    ledger.mark_retryable(
        a,
        owner="w",
        error="503",
        error_class="KoyweServerError",
        next_attempt_at=naive_later,
        attempt=AttemptRecord(
            "create", "retryable", http_status=503, duration_ms=7, error="Service Unavailable"
        ),
    )
    assert ledger.get(a)["next_attempt_at"] == naive_later.replace(tzinfo=UTC)
    assert [(x["outcome"], x["error"]) for x in ledger.attempts_for(a)] == [
        ("rate_limited", "429"),
        ("retryable", "Service Unavailable"),
    ]

    ledger.claim(b, owner="w")
    ledger.mark_sent(b, owner="w", lease_seconds=LEASE)
    ledger.mark_unknown(
        b,
        error="read timeout",
        error_class="KoyweTimeout",
        attempt=AttemptRecord("create", "unknown", duration_ms=30_000),
    )
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
    assert ledger.get(claimed)["state"] == DocumentState.IN_FLIGHT
    ledger.mark_dead(claimed, error="gave up", error_class="TooManyAttempts", owner="w1")
    row = ledger.get(claimed)
    assert row["state"] == DocumentState.DEAD and row["last_error_class"] == "TooManyAttempts"
    assert ledger.attempts_for(claimed) == []
    with pytest.raises(DocumentNotFoundError):
        ledger.mark_dead(987_654, error="x", error_class="y")


def test_mark_held_needs_a_person(ledger: Ledger, claimed: int) -> None:
    sent(ledger, claimed)
    ledger.mark_held(
        claimed,
        owner="w1",
        error="content mismatch alarm: Koywe document 9 carries reference 'r-000000'",
        error_class="ContentMismatchAlarm",
        attempt=AttemptRecord("lookup", "content_mismatch", http_status=200),
    )
    row = ledger.get(claimed)
    assert row["state"] == DocumentState.DEAD and row["last_error_class"] == "ContentMismatchAlarm"
    assert row["next_attempt_at"] is None and row["lease_owner"] is None and row["generation"] == 1
    (attempt,) = ledger.attempts_for(claimed)
    assert attempt["outcome"] == "content_mismatch" and attempt["error"].startswith("content mismatch")
    assert ledger.claim(claimed, owner="w2") is None  # nothing is sent automatically
    assert [f["last_error_class"] for f in ledger.failures()] == ["ContentMismatchAlarm"]
    # a person re-queues it: same generation, looked up first
    assert ledger.requeue(states=("dead",)) == 1
    again = ledger.claim(claimed, owner="w3")
    assert again is not None and again.generation == 1 and again.needs_lookup


def test_outcome_and_attempt_are_one_transaction(ledger: Ledger, claimed: int, monkeypatch) -> None:
    """A failure while writing the attempt leaves the outcome unwritten too."""
    from koywe_provider.ledger import outcomes

    def broken(self, pk, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outcomes.AttemptRecord, "row", broken)
    with pytest.raises(RuntimeError):
        ledger.mark_issued(
            claimed, owner="w1", facts=facts("9", "1"), attempt=AttemptRecord("create", "issued")
        )
    with pytest.raises(RuntimeError):
        ledger.mark_unknown(
            claimed, owner="w1", error="t", error_class="T", attempt=AttemptRecord("create", "unknown")
        )
    row = ledger.get(claimed)
    assert row["state"] == DocumentState.IN_FLIGHT and row["koywe_document_id"] is None
    assert ledger.generations_for(claimed) == [] and ledger.attempts_for(claimed) == []


def test_record_attempt(ledger: Ledger, claimed: int) -> None:
    ledger.record_attempt(
        claimed, AttemptRecord("lookup", "not_found", http_status=200, duration_ms=40, run_id="r", task="t")
    )
    ledger.record_attempt(
        claimed, AttemptRecord("create", "auth_error", http_status=401, error="Invalid token")
    )
    attempts = ledger.attempts_for(claimed)
    assert [(a["kind"], a["outcome"], a["http_status"], a["generation"]) for a in attempts] == [
        ("lookup", "not_found", 200, 1),
        ("create", "auth_error", 401, 1),
    ]
    assert attempts[0]["run_id"] == "r" and attempts[0]["task"] == "t" and attempts[0]["duration_ms"] == 40
    assert attempts[1]["duration_ms"] == 0 and attempts[1]["error"] == "Invalid token"
    assert ledger.get(claimed)["attempts"] == 0  # only mark_sent counts POSTs
    with pytest.raises(ValueError):
        AttemptRecord("refund", "issued")
    with pytest.raises(ValueError):
        AttemptRecord("create", "maybe")
    with pytest.raises(DocumentNotFoundError):
        ledger.record_attempt(424_242, AttemptRecord("create", "issued"))


def test_attempt_record_is_a_frozen_value() -> None:
    attempt = AttemptRecord("status_update", "cancelled", duration_ms=-3)
    assert attempt.kind == "status_update" and attempt.outcome == "cancelled" and attempt.duration_ms == 0
    with pytest.raises(AttributeError):
        attempt.outcome = "issued"  # type: ignore[misc]


def test_error_hierarchy() -> None:
    from koywe_provider.ledger import AccountNotFoundError

    assert issubclass(DocumentNotFoundError, RowNotFoundError) and issubclass(
        AccountNotFoundError, RowNotFoundError
    )
    assert issubclass(RowNotFoundError, LookupError) and issubclass(RowNotFoundError, LedgerError)
    assert issubclass(LeaseLostError, InvalidTransitionError)
    assert issubclass(DuplicateKoyweDocumentError, InvalidTransitionError)
    assert issubclass(InvalidTransitionError, LedgerError)


def test_release(ledger: Ledger, seed: Callable[..., list[int]], clock) -> None:
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
    ledger.claim(b, owner="w3", lease_seconds=60)
    ledger.mark_sent(b, owner="w3", lease_seconds=60)
    clock.advance(seconds=61)
    taken = ledger.claim(b, owner="w4")
    assert taken is not None and taken.previous_state == DocumentState.IN_FLIGHT
    assert ledger.release(b, owner="w4") is True
    assert ledger.get(b)["state"] == DocumentState.UNKNOWN


def test_requeue(ledger: Ledger, seed: Callable[..., list[int]], make_item) -> None:
    a, b, c, d = seed(4)
    for pk in (a, b, c, d):
        ledger.claim(pk, owner="w")
        ledger.mark_sent(pk, owner="w", lease_seconds=LEASE)
    ledger.mark_rejected(a, error="bad", error_class="KoyweRejected")
    ledger.mark_dead(b, error="gave up", error_class="TooManyAttempts")
    ledger.mark_rejected(c, error="bad", error_class="KoyweRejected")
    ledger.mark_issued(d, facts=facts("9", "1"))
    ledger.ingest_many([make_item("r-000000", {"n": 0}, account_id="acc2")])  # same reference, other account
    other = ledger.get_by_reference("acc2", "r-000000")["id"]
    ledger.claim(other, owner="w")
    ledger.mark_rejected(other, error="bad", error_class="KoyweRejected")

    assert ledger.requeue(["r-000000"], account_id="acc1") == 1
    row = ledger.get(a)
    assert row["state"] == DocumentState.PENDING and row["attempts"] == 1 and row["last_error"] is None
    assert (row["generation"], row["generation_sends"]) == (2, 0)  # rejected: a new generation
    assert ledger.get(other)["state"] == DocumentState.REJECTED
    assert ledger.requeue(["no-such-ref"]) == 0
    assert ledger.requeue(states=("dead",)) == 1
    row = ledger.get(b)
    assert row["state"] == DocumentState.PENDING and (row["generation"], row["generation_sends"]) == (1, 1)
    assert ledger.requeue() == 2  # c and the acc2 row
    assert ledger.get(c)["generation"] == 2 and ledger.get(other)["generation"] == 2
    assert ledger.get(d)["state"] == DocumentState.ISSUED
    with pytest.raises(ValueError):
        ledger.requeue(states=("issued",))
    with pytest.raises(ValueError):
        ledger.requeue(states=("invalid",))
    with pytest.raises(ValueError):
        ledger.requeue(states=("not_sent",))
    again = ledger.claim(a, owner="w")
    assert again is not None and again.previous_state == DocumentState.PENDING and not again.needs_lookup
    assert again.koywe_reference == "r-000000~2" and again.attempts == 1
    dead_again = ledger.claim(b, owner="w")
    assert dead_again is not None and dead_again.needs_lookup and dead_again.koywe_reference == "r-000001"


def test_requeue_of_a_rejected_row_starts_a_new_generation(
    ledger: Ledger, seed: Callable[..., list[int]], clock
) -> None:
    (pk,) = seed(1)
    ledger.claim(pk, owner="w")
    ledger.mark_sent(pk, owner="w", lease_seconds=LEASE)
    ledger.mark_issued(
        pk, owner="w", facts=facts("800", "17", document_status=1, taxbureau_validation_status=1)
    )
    from koywe_provider.ledger import apply_status_reports

    apply_status_reports(
        ledger, [DocumentFacts("800", taxbureau_validation_status=5, taxbureau_validation_comments="RUT")]
    )
    assert ledger.get(pk)["state"] == DocumentState.REJECTED
    requeued_at = clock.freeze()
    assert ledger.requeue([ledger.get(pk)["reference"]]) == 1
    row = ledger.get(pk)
    assert (row["state"], row["generation"], row["generation_sends"], row["attempts"]) == ("pending", 2, 0, 1)
    for column in (
        "koywe_document_id",
        "document_number",
        "document_status",
        "taxbureau_sending_status",
        "taxbureau_validation_status",
        "taxbureau_validation_comments",
        "result_status",
        "issued_at",
        "last_error",
        "last_error_class",
    ):
        assert row[column] is None, column
    first, second = ledger.generations_for(pk)
    assert (first["koywe_document_id"], first["document_number"], first["outcome"]) == (
        "800",
        "17",
        "taxbureau_rejected",
    )
    assert first["taxbureau_validation_status"] == 5 and first["ended_at"] is not None
    assert (second["generation"], second["koywe_reference"], second["outcome"]) == (2, "r-000000~2", None)
    assert second["started_at"] == requeued_at and second["ended_at"] is None
    # the Koywe id of generation 1 is free on the row, still known to the ledger
    assert ledger.find_by_koywe_document_id("800") is None
    assert ledger.find_by_koywe_document_id("800", include_earlier_generations=True)["id"] == pk
    # generation 2 is issued under its own Koywe document; generation 1 stays as it was
    ledger.claim(pk, owner="w")
    ledger.mark_sent(pk, owner="w", lease_seconds=LEASE)
    ledger.mark_issued(pk, owner="w", facts=facts("801", "18", document_status=1))
    assert [(g["generation"], g["koywe_document_id"], g["outcome"]) for g in ledger.generations_for(pk)] == [
        (1, "800", "taxbureau_rejected"),
        (2, "801", "issued"),
    ]
    assert [a["generation"] for a in ledger.attempts_for(pk)] == []
    # adopting generation 1's document for generation 2 would be a duplicate
    (other,) = seed(1, prefix="s")
    ledger.claim(other, owner="w")
    with pytest.raises(DuplicateKoyweDocumentError, match="generation 1"):
        ledger.mark_issued(other, owner="w", facts=facts("800", "17"))


def test_counts_and_failures(ledger: Ledger, seed: Callable[..., list[int]], make_item) -> None:
    ids = seed(6)
    ledger.ingest_many([make_item(None, None, error="not JSON", raw_line="{", line_no=99)], run_id="run-2")
    ledger.claim(ids[0], owner="w")
    ledger.mark_issued(ids[0], facts=facts("1", "1"))
    ledger.claim(ids[1], owner="w")
    ledger.mark_rejected(
        ids[1], error="RUT inválido", error_class="KoyweRejected", error_field="receiver_tax_id"
    )
    ledger.claim(ids[2], owner="w")
    ledger.mark_dead(ids[2], error="gave up", error_class="TooManyAttempts")
    ledger.claim(ids[3], owner="w")
    ledger.claim(ids[4], owner="w")
    ledger.mark_issued(ids[4], facts=facts("2", None, document_status=0))
    ledger.claim(ids[5], owner="w")
    ledger.mark_issued(ids[5], facts=facts("3", "5", document_status=1, result_status=2))

    counts = ledger.counts_by_state()
    assert set(counts) == {s.value for s in DocumentState}
    assert counts == {
        "pending": 0,
        "in_flight": 1,
        "issued": 1,
        "rejected": 1,
        "retryable": 0,
        "unknown": 0,
        "invalid": 1,
        "dead": 1,
        "draft": 1,
        "not_sent": 1,
        "deleted": 0,
        "external": 0,
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
