"""ingest_many: idempotency, corrections, conflicts, invalid lines, synthetic keys, chunking."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from koywe_provider.ledger import (
    DocumentFacts,
    DocumentState,
    IngestCounts,
    IngestItem,
    Ledger,
    payload_hash_of,
    synthetic_reference,
)

SRC = "file:///inbox/a.jsonl"


def _file(make_item: Callable[..., IngestItem], n: int = 5) -> list[IngestItem]:
    return [make_item(f"ref-{i}", {"n": i}, line_no=i + 1) for i in range(n)]


def test_same_file_twice_adds_nothing(ledger: Ledger, make_item: Callable[..., IngestItem]) -> None:
    first = ledger.ingest_many(_file(make_item), run_id="run-1")
    assert first == IngestCounts(added=5)
    second = ledger.ingest_many(_file(make_item), run_id="run-2")
    assert second == IngestCounts(unchanged=5)
    assert second.as_dict() == {
        "added": 0,
        "unchanged": 5,
        "replaced": 0,
        "conflicts": 0,
        "invalid": 0,
        "invalid_ignored": 0,
    }
    assert ledger.counts_by_state()["pending"] == 5
    assert ledger.counts_by_state(run_id="run-1")["pending"] == 5
    assert ledger.counts_by_state(run_id="run-2")["pending"] == 0
    row = ledger.get_by_reference("acc1", "ref-3")
    assert row is not None
    assert row["state"] == DocumentState.PENDING
    assert row["payload"] == {"n": 3}
    assert row["payload_hash"] == payload_hash_of({"n": 3})
    assert row["source"] == SRC and row["line_no"] == 4 and row["run_id"] == "run-1"
    assert row["attempts"] == 0
    assert row["created_at"].tzinfo is not None and row["created_at"].utcoffset().total_seconds() == 0
    assert ledger.conflicts() == []


def _issue(ledger: Ledger, reference: str, koywe_id: str = "9001") -> int:
    pk = ledger.get_by_reference("acc1", reference)["id"]
    assert ledger.claim(pk, owner="w") is not None
    ledger.mark_sent(pk, owner="w", lease_seconds=60)
    ledger.mark_issued(pk, owner="w", facts=DocumentFacts(koywe_id, "1", document_status=1, result_status=0))
    return pk


def test_conflict_recorded_not_overwritten(ledger: Ledger, make_item: Callable[..., IngestItem]) -> None:
    ledger.ingest_many([make_item("ref-1", {"amount": 1})], run_id="run-1")
    pk = _issue(ledger, "ref-1")
    changed = make_item("ref-1", {"amount": 2}, source="file:///inbox/b.jsonl", line_no=7)
    counts = ledger.ingest_many([changed], run_id="run-2")
    assert counts == IngestCounts(conflicts=1)
    row = ledger.get_by_reference("acc1", "ref-1")
    assert row["payload"] == {"amount": 1} and row["source"] == SRC and row["run_id"] == "run-1"
    assert row["state"] == DocumentState.ISSUED and ledger.payload_history_for(pk) == []
    (conflict,) = ledger.conflicts()
    assert conflict["account_id"] == "acc1" and conflict["reference"] == "ref-1"
    assert conflict["source"] == "file:///inbox/b.jsonl" and conflict["line_no"] == 7
    assert conflict["payload_hash"] == payload_hash_of({"amount": 2})
    assert conflict["existing_payload_hash"] == payload_hash_of({"amount": 1})
    assert conflict["run_id"] == "run-2" and conflict["detected_at"].tzinfo is not None
    # the same conflicting file again: counted, but no new conflict row
    assert ledger.ingest_many([changed], run_id="run-3") == IngestCounts(conflicts=1)
    assert len(ledger.conflicts()) == 1
    assert ledger.conflicts(run_id="run-3") == []
    assert len(ledger.conflicts(run_id="run-2")) == 1


def test_same_key_other_account_is_another_document(
    ledger: Ledger, make_item: Callable[..., IngestItem]
) -> None:
    counts = ledger.ingest_many(
        [make_item("ref-1", {"a": 1}), make_item("ref-1", {"a": 2}, account_id="acc2")]
    )
    assert counts == IngestCounts(added=2)
    assert ledger.get_by_reference("acc2", "ref-1")["payload"] == {"a": 2}


def test_invalid_then_valid_replaces(ledger: Ledger, make_item: Callable[..., IngestItem]) -> None:
    bad = make_item(
        "ref-1",
        None,
        error="totals do not add up",
        error_field="totals.total_amount",
        raw_line='{"bad": true}',
        line_no=3,
    )
    assert ledger.ingest_many([bad], run_id="run-1") == IngestCounts(invalid=1)
    row = ledger.get_by_reference("acc1", "ref-1")
    assert row["state"] == DocumentState.INVALID
    assert row["last_error"] == "totals do not add up" and row["error_field"] == "totals.total_amount"
    assert row["last_error_class"] == "validation"
    assert row["raw_line"] == '{"bad": true}' and row["payload"] is None
    # the same invalid line again: left alone
    assert ledger.ingest_many([bad], run_id="run-1") == IngestCounts(unchanged=1)

    fixed = make_item("ref-1", {"ok": True}, source="file:///inbox/b.jsonl", line_no=9)
    assert ledger.ingest_many([fixed], run_id="run-2") == IngestCounts(replaced=1)
    row = ledger.get_by_reference("acc1", "ref-1")
    assert row["state"] == DocumentState.PENDING and row["payload"] == {"ok": True}
    assert row["payload_hash"] == payload_hash_of({"ok": True})
    assert row["last_error"] is None and row["error_field"] is None and row["raw_line"] is None
    assert row["source"] == "file:///inbox/b.jsonl" and row["line_no"] == 9 and row["run_id"] == "run-2"
    assert ledger.ingest_many([fixed]) == IngestCounts(unchanged=1)
    assert ledger.conflicts() == []
    (replaced,) = ledger.payload_history_for(row["id"])
    assert (replaced["source"], replaced["line_no"], replaced["generation"]) == (SRC, 3, 1)


def test_invalid_line_for_valid_document_is_ignored(
    ledger: Ledger, make_item: Callable[..., IngestItem]
) -> None:
    ledger.ingest_many([make_item("ref-1", {"a": 1})])
    bad = make_item("ref-1", None, error="bad tax id", error_field="header.receiver_tax_id", line_no=5)
    assert ledger.ingest_many([bad], run_id="run-2") == IngestCounts(invalid_ignored=1)
    assert ledger.get_by_reference("acc1", "ref-1")["state"] == DocumentState.PENDING
    (conflict,) = ledger.conflicts()
    assert conflict["payload_hash"] is None and conflict["line_no"] == 5
    assert conflict["existing_payload_hash"] == payload_hash_of({"a": 1})
    # again: no second conflict row even though payload_hash is NULL
    assert ledger.ingest_many([bad], run_id="run-3") == IngestCounts(invalid_ignored=1)
    assert len(ledger.conflicts()) == 1


def test_invalid_without_reference_gets_synthetic_key(
    ledger: Ledger, make_item: Callable[..., IngestItem]
) -> None:
    lines = [
        make_item(None, None, error="line is not JSON", raw_line="{not json", line_no=4),
        make_item("", None, error="reference missing", error_field="reference", raw_line="{}", line_no=5),
    ]
    assert ledger.ingest_many(lines) == IngestCounts(invalid=2)
    row = ledger.get_by_reference("", f"{SRC}#L4")
    assert row is not None and row["state"] == DocumentState.INVALID and row["raw_line"] == "{not json"
    assert ledger.get_by_reference("", f"{SRC}#L5")["error_field"] == "reference"
    assert ledger.ingest_many(lines) == IngestCounts(unchanged=2)
    failures = ledger.failures()
    assert [(f["reference"], f["state"], f["line_no"]) for f in failures] == [
        (f"{SRC}#L4", "invalid", 4),
        (f"{SRC}#L5", "invalid", 5),
    ]


def test_long_values_are_capped(ledger: Ledger, make_item: Callable[..., IngestItem]) -> None:
    long_source = "s3://bucket/" + "x" * 300 + "/inbox.jsonl"
    line = make_item(None, None, error="bad", raw_line="y" * 20_000, source=long_source, line_no=12)
    assert ledger.ingest_many([line]) == IngestCounts(invalid=1)
    ref = synthetic_reference(long_source, 12)
    assert len(ref) <= 128 and ref.endswith("inbox.jsonl#L12")
    row = ledger.get_by_reference("", ref)
    assert len(row["raw_line"]) == 10_000 and row["source"] == long_source
    # a "valid" item whose reference is too long cannot be keyed: stored as invalid
    too_long = make_item("r" * 129, {"a": 1}, line_no=13)
    assert ledger.ingest_many([too_long]) == IngestCounts(invalid=1)
    row = ledger.get_by_reference("", f"{SRC}#L13")
    assert row["state"] == DocumentState.INVALID and row["error_field"] == "reference"


def test_repeated_keys_within_one_call_and_across_chunks(
    ledger: Ledger, make_item: Callable[..., IngestItem]
) -> None:
    lines = [
        make_item("a", None, error="bad", line_no=1),  # invalid first ...
        make_item("b", {"b": 1}, line_no=2),
        make_item("a", {"a": 1}, line_no=3),  # ... then valid: replaces (still in the same call)
        make_item("b", {"b": 1}, line_no=4),  # duplicate line
        make_item("b", {"b": 2}, line_no=5),  # a correction of the (unsent) pending row
        make_item("c", {"c": 1}, line_no=6),
        make_item("c", None, error="bad", line_no=7),  # invalid after valid
    ]
    counts = ledger.ingest_many(lines, run_id="run-1", chunk_size=2)  # spread over several chunks
    assert counts == IngestCounts(added=2, invalid=1, replaced=2, unchanged=1, invalid_ignored=1)
    assert counts.total == len(lines)
    assert ledger.get_by_reference("acc1", "b")["payload"] == {"b": 2}
    # one chunk, everything exists: lines apply in order, so b goes to {"b": 1} and back to {"b": 2}
    again = ledger.ingest_many(lines, run_id="run-2")
    assert again == IngestCounts(unchanged=3, replaced=2, invalid_ignored=2)
    assert ledger.get_by_reference("acc1", "a")["payload"] == {"a": 1}
    assert ledger.get_by_reference("acc1", "b")["payload"] == {"b": 2}
    assert ledger.counts_by_state()["pending"] == 3
    # c/invalid, a/invalid (seen on the second pass, when "a" was already valid)
    assert len(ledger.conflicts()) == 2
    b = ledger.get_by_reference("acc1", "b")["id"]
    assert [h["line_no"] for h in ledger.payload_history_for(b)] == [2, 5, 2]


def test_chunked_ingest_fresh(ledger: Ledger, make_item: Callable[..., IngestItem]) -> None:
    lines = (make_item(f"k{i % 2500}", {"i": i % 2500}, line_no=i) for i in range(5000))
    counts = ledger.ingest_many(lines, chunk_size=1000)
    assert counts == IngestCounts(added=2500, unchanged=2500)
    assert ledger.counts_by_state()["pending"] == 2500


def test_correction_of_a_pending_row_replaces_its_payload(
    ledger: Ledger, make_item: Callable[..., IngestItem]
) -> None:
    ledger.ingest_many([make_item("ref-1", {"amount": 1}, line_no=4)], run_id="run-1")
    pk = ledger.get_by_reference("acc1", "ref-1")["id"]
    fixed = make_item("ref-1", {"amount": 2}, source="file:///inbox/b.jsonl", line_no=7)
    assert ledger.ingest_many([fixed], run_id="run-2") == IngestCounts(replaced=1)
    row = ledger.get(pk)
    assert row["state"] == DocumentState.PENDING and row["payload"] == {"amount": 2}
    assert row["payload_hash"] == payload_hash_of({"amount": 2}) and row["run_id"] == "run-2"
    assert (row["source"], row["line_no"], row["generation"], row["attempts"]) == (
        "file:///inbox/b.jsonl",
        7,
        1,
        0,
    )
    (old,) = ledger.payload_history_for(pk)
    assert old["payload_hash"] == payload_hash_of({"amount": 1})
    assert (old["source"], old["line_no"], old["generation"]) == (SRC, 4, 1)
    assert old["replaced_at"].tzinfo is not None
    assert ledger.conflicts() == []
    assert ledger.ingest_many([fixed]) == IngestCounts(unchanged=1)


def test_correction_of_a_rejected_row_starts_a_new_generation(
    ledger: Ledger, make_item: Callable[..., IngestItem]
) -> None:
    ledger.ingest_many([make_item("ref-1", {"amount": 1})], run_id="run-1")
    pk = ledger.get_by_reference("acc1", "ref-1")["id"]
    ledger.claim(pk, owner="w")
    ledger.mark_sent(pk, owner="w", lease_seconds=60)
    ledger.mark_rejected(
        pk,
        owner="w",
        error="Error 1022: RUT receptor",
        error_class="KoyweRejectedError",
        facts=DocumentFacts(koywe_document_id="7001", result_status=1, result_error_message="RUT"),
    )
    fixed = make_item("ref-1", {"amount": 2}, line_no=9)
    assert ledger.ingest_many([fixed], run_id="run-2") == IngestCounts(replaced=1)
    row = ledger.get(pk)
    assert row["state"] == DocumentState.PENDING and row["payload"] == {"amount": 2}
    assert (row["generation"], row["generation_sends"], row["attempts"]) == (2, 0, 1)
    assert row["koywe_document_id"] is None and row["result_status"] is None
    assert row["last_error"] is None and row["last_error_class"] is None
    first, second = ledger.generations_for(pk)
    assert (first["generation"], first["koywe_reference"], first["outcome"]) == (1, "ref-1", "rejected")
    assert first["koywe_document_id"] == "7001" and first["result_error_message"] == "RUT"
    assert first["payload_hash"] == payload_hash_of({"amount": 1}) and first["ended_at"] is not None
    assert (second["generation"], second["koywe_reference"], second["outcome"]) == (2, "ref-1~2", None)
    assert second["payload_hash"] == payload_hash_of({"amount": 2}) and second["ended_at"] is None
    (old,) = ledger.payload_history_for(pk)
    assert old["generation"] == 1 and old["payload_hash"] == payload_hash_of({"amount": 1})
    claimed = ledger.claim(pk, owner="w2")
    assert claimed is not None and claimed.koywe_reference == "ref-1~2" and not claimed.needs_lookup
    assert (claimed.generation, claimed.generation_sends, claimed.attempts) == (2, 0, 1)


def _to_state(ledger: Ledger, pk: int, state: str) -> None:
    """Drive row ``pk`` (pending, never sent) to ``state`` through the API, sending once where it
    matters."""
    if state == "pending_sent":  # re-queued after an unanswered POST: may be at Koywe
        _to_state(ledger, pk, "unknown")
        assert ledger.requeue(states=("unknown",)) == 1
        return
    ledger.claim(pk, owner="w")
    ledger.mark_sent(pk, owner="w", lease_seconds=60)
    if state == "in_flight":
        return
    if state == "unknown":
        ledger.mark_unknown(pk, owner="w", error="timeout", error_class="KoyweOutcomeUnknownError")
    elif state == "retryable":
        ledger.mark_retryable(
            pk, owner="w", error="503", error_class="KoyweTransientError", next_attempt_at=ledger._now()
        )
    elif state == "dead":
        ledger.mark_held(pk, owner="w", error="two documents", error_class="DuplicateAlarm")
    else:
        facts = {
            "issued": DocumentFacts(f"k-{pk}", "1", document_status=1, result_status=0),
            "draft": DocumentFacts(f"k-{pk}", None, document_status=0, result_status=0),
            "not_sent": DocumentFacts(f"k-{pk}", "9", document_status=1, result_status=2),
        }[state]
        ledger.mark_issued(pk, owner="w", facts=facts)
    assert ledger.get(pk)["state"] == (DocumentState.PENDING if state == "pending_sent" else state)


@pytest.mark.parametrize(
    "state", ["in_flight", "unknown", "retryable", "pending_sent", "issued", "draft", "not_sent", "dead"]
)
def test_a_new_payload_for_a_row_that_may_be_at_koywe_is_a_conflict(
    ledger: Ledger, make_item: Callable[..., IngestItem], state: str
) -> None:
    ledger.ingest_many([make_item("ref-1", {"amount": 1})])
    pk = ledger.get_by_reference("acc1", "ref-1")["id"]
    _to_state(ledger, pk, state)
    before = ledger.get(pk)
    assert ledger.ingest_many([make_item("ref-1", {"amount": 2}, line_no=2)]) == IngestCounts(conflicts=1)
    after = ledger.get(pk)
    assert after["payload"] == {"amount": 1} and after["state"] == before["state"]
    assert after["generation"] == 1 and ledger.payload_history_for(pk) == []
    (conflict,) = ledger.conflicts()
    assert conflict["payload_hash"] == payload_hash_of({"amount": 2})


def test_a_correction_loses_to_a_claim_made_meanwhile(
    backend: str, ledger: Ledger, make_ledger: Callable[..., Ledger], make_item: Callable[..., IngestItem]
) -> None:
    """The correction UPDATE is conditional: a row claimed after the ingest read it is not touched."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): a claim cannot run inside an ingest")
    ledger.ingest_many([make_item("ref-1", {"amount": 1})])
    pk = ledger.get_by_reference("acc1", "ref-1")["id"]
    other = make_ledger()
    claimed: list[object] = []

    def claim_first(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE KOYWE_DOCUMENTS") and not claimed:
            claimed.append(other.claim(pk, owner="racer"))

    sa.event.listen(ledger.engine, "before_cursor_execute", claim_first)
    try:
        counts = ledger.ingest_many([make_item("ref-1", {"amount": 2}, line_no=2)])
    finally:
        sa.event.remove(ledger.engine, "before_cursor_execute", claim_first)
    assert claimed and claimed[0] is not None
    assert counts == IngestCounts(conflicts=1)
    row = ledger.get(pk)
    assert row["state"] == DocumentState.IN_FLIGHT and row["payload"] == {"amount": 1}
    assert ledger.payload_history_for(pk) == [] and len(ledger.conflicts()) == 1
