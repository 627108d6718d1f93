"""Stuck rows (unchanged for too long in a state that should move) and the paged listing of the CLI."""

from __future__ import annotations

from collections.abc import Callable

from koywe_provider.ledger import Ledger


def test_rows_that_do_not_change_become_stuck(ledger: Ledger, seed: Callable[..., list[int]], clock) -> None:
    ids = seed(3)
    assert ledger.stuck(idle_seconds=20 * 60) == (0, [])
    clock.advance(minutes=30)
    assert ledger.claim(ids[1], owner="w")  # a change: row 1 moves on, rows 0 and 2 stay pending
    count, rows = ledger.stuck(idle_seconds=20 * 60)
    assert count == 2
    assert [(r["id"], r["state"]) for r in rows] == [(ids[0], "pending"), (ids[2], "pending")]
    assert set(rows[0]) == {
        "id",
        "reference",
        "account_id",
        "state",
        "attempts",
        "last_error_class",
        "updated_at",
    }
    clock.advance(minutes=30)  # the claimed row's lease expired long ago and nobody took it
    count, rows = ledger.stuck(idle_seconds=20 * 60, limit=1)
    assert count == 3 and len(rows) == 1
    assert ledger.stuck(idle_seconds=2 * 3600)[0] == 0


def test_final_states_are_never_stuck(ledger: Ledger, seed: Callable[..., list[int]], clock) -> None:
    ids = seed(2)
    ledger.mark_dead(ids[0], error="gave up", error_class="TestError")
    clock.advance(hours=24)
    count, rows = ledger.stuck(idle_seconds=60)
    assert {r["id"] for r in rows} == {ids[1]} and count == 1


def test_rows_pages_by_id_with_filters_and_without_payloads(ledger: Ledger, seed) -> None:
    ids = seed(5)
    seed(2, prefix="other", run_id="run-2")
    first = ledger.rows(limit=2)
    assert [r["id"] for r in first] == ids[:2]
    assert "payload" not in first[0] and "raw_line" not in first[0]
    assert {"reference", "state", "attempts", "koywe_document_id", "updated_at"} <= set(first[0])
    rest = ledger.rows(after_id=first[-1]["id"], limit=100, run_id="run-1")
    assert [r["id"] for r in rest] == ids[2:]
    assert len(ledger.rows(run_id="run-2")) == 2
    assert ledger.rows(states=["dead"]) == []
    assert len(ledger.rows(states=["pending", "dead"])) == 7
