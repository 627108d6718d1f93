"""The ledger read as the Koywe page reads it (ledger.browse), on SQLite and on PostgreSQL: counts per
account, country and day, the search, a document's whole story, and a run's failures."""

from __future__ import annotations

from datetime import date

import pytest

from koywe_provider.ledger import IngestItem, browse
from koywe_ui_support import seed_ledger

TODAY = date(2026, 11, 20)


@pytest.fixture
def seeded(ledger_on_each_backend):
    return ledger_on_each_backend, seed_ledger(ledger_on_each_backend, today=TODAY)


def _row(overview, account, country, day):
    return next(r for r in overview.rows if (r.account_id, r.country_id, r.day) == (account, country, day))


def test_counts_by_state_per_account_country_and_day(seeded):
    ledger, s = seeded
    everything = browse.overview(ledger)
    # The invalid line has no payload: no country, and its day is the one the ledger recorded it.
    recorded = ledger.get(s.ids["INV-BAD-1"])["created_at"].date().isoformat()
    assert recorded > "2026-11-20"
    assert [(r.day, r.account_id, r.country_id) for r in everything.rows] == [
        (recorded, "4201", browse.UNKNOWN),
        ("2026-11-20", "11857", "80"),
        ("2026-11-20", "20100", "83"),
        ("2026-11-20", "4201", "253"),
        ("2026-11-19", "4201", "253"),
    ]
    chile_today = _row(everything, "4201", "253", "2026-11-20")
    assert chile_today.states["issued"] == 2 and chile_today.states["dead"] == 1 and chile_today.total == 3
    assert _row(everything, "20100", "83", "2026-11-20").states == {
        **dict.fromkeys(browse.STATE_ORDER, 0),
        "issued": 1,
        "rejected": 1,
    }
    assert everything.totals == {
        **dict.fromkeys(browse.STATE_ORDER, 0),
        "issued": 4,
        "rejected": 1,
        "unknown": 1,
        "invalid": 1,
        "dead": 1,
    }
    assert everything.accounts == ["11857", "20100", "4201"]
    assert set(everything.countries) == {"", "253", "80", "83"}
    assert not everything.truncated


def test_counts_filtered_by_account_country_and_days(seeded):
    ledger, _s = seeded
    chile = browse.overview(ledger, country_id=253)
    assert {(r.account_id, r.day) for r in chile.rows} == {("4201", "2026-11-20"), ("4201", "2026-11-19")}
    assert browse.overview(ledger, country_id="").totals["invalid"] == 1
    assert [r.day for r in browse.overview(ledger, account_id="4201", day_to="2026-11-20").rows] == [
        "2026-11-20",
        "2026-11-19",
    ]
    assert (
        browse.overview(ledger, account_id="4201", day_from="2026-11-20", day_to="2026-11-20").totals[
            "issued"
        ]
        == 2
    )
    assert browse.overview(ledger, day_to="2026-11-19").totals["issued"] == 1
    limited = browse.overview(ledger, limit=2)
    assert len(limited.rows) == 2 and limited.truncated
    assert browse.overview(ledger, account_id="nobody").rows == []


@pytest.mark.parametrize(
    ("text", "reference", "matched"),
    [
        ("CL-0003", "CL-0003", "reference"),
        ("  CL-0003~2 ", "CL-0003", "reference"),  # the Koywe reference of generation 2
        ("5004", "CL-0003", "koywe_id"),  # generation 1's Koywe id (rejected by the bureau)
        ("105", "CL-0003", "folio"),  # the current folio
    ],
)
def test_search_by_reference_folio_or_koywe_id(seeded, text, reference, matched):
    ledger, _s = seeded
    hits = browse.search(ledger, text)
    assert [(h["reference"], h["matched"]) for h in hits] == [(reference, matched)]
    assert "payload" not in hits[0] and "raw_line" not in hits[0]


def test_search_by_reference_prefix_escapes_wildcards(seeded):
    ledger, _s = seeded
    assert [h["reference"] for h in browse.search(ledger, "CL-")] == [
        "CL-0001",
        "CL-0002",
        "CL-0003",
        "CL-0004",
    ]
    assert browse.search(ledger, "%") == []
    assert browse.search(ledger, "C_-0001") == []
    assert browse.search(ledger, "   ") == []
    assert len(browse.search(ledger, "CL-", limit=2)) == 2


def test_a_documents_story_has_every_generation_attempt_and_the_bureaus_answer(seeded):
    ledger, s = seeded
    story = browse.document_story(ledger, s.ids["CL-0003"])
    assert story.row["state"] == "issued" and story.row["generation"] == 2
    assert "payload" not in story.row and "raw_line" not in story.row
    assert [(g["generation"], g["koywe_reference"], g["outcome"]) for g in story.generations] == [
        (1, "CL-0003", "taxbureau_rejected"),
        (2, "CL-0003~2", "issued"),
    ]
    assert "no autorizado" in story.generations[0]["taxbureau_validation_comments"]
    assert [(a["generation"], a["run_id"]) for a in story.attempts] == [(1, s.daily_run), (2, s.retry_run)]
    assert story.summary["total_amount"] == 35_700 and story.summary["issuer_country_id"] == 253
    dead = browse.document_story(ledger, s.ids["CL-0004"])
    assert [a["http_status"] for a in dead.attempts] == [503, 503, 503, 503]
    assert browse.document_story(ledger, 10_000) is None


def test_the_payload_summary_keeps_no_contact_data(seeded):
    ledger, s = seeded
    summary = browse.document_story(ledger, s.ids["PE-0001"]).summary
    assert summary["receiver_legal_name"] == "Textiles Arequipa S.A."
    text = repr(summary)
    assert "@" not in text and "compras" not in text
    assert browse.payload_summary(None) == {}
    assert browse.payload_summary({"header": "not a mapping"}) == {}


def test_a_runs_failures_include_the_rows_a_retry_run_called_for(seeded):
    ledger, s = seeded
    assert [(f["reference"], f["state"]) for f in browse.run_failures(ledger, s.daily_run)] == [
        ("CL-0004", "dead"),
        ("PE-0002", "rejected"),
        ("MX-0001", "unknown"),
        ("INV-BAD-1", "invalid"),
    ]
    # The retry run ingested nothing; it called for CL-0003 (now issued) and CL-0004 (dead).
    assert [f["reference"] for f in browse.run_failures(ledger, s.retry_run)] == ["CL-0004"]
    assert browse.run_counts(ledger, s.retry_run)["issued"] == 1
    assert browse.run_failures(ledger, "no-such-run") == []


def test_recent_runs_last_activity_first(seeded):
    ledger, s = seeded
    ledger.ingest_many(
        [IngestItem("LATE-1", "4201", {"header": {"issue_date": "2026-11-21"}}, None, "late.jsonl", 1)],
        run_id="manual__late",
    )
    runs = browse.recent_runs(ledger)
    assert runs[0]["run_id"] == "manual__late"
    by_id = {r["run_id"]: r for r in runs}
    assert by_id[s.daily_run]["ingested"] == 8 and by_id[s.daily_run]["failed"] == 4
    assert by_id[s.retry_run]["ingested"] == 0 and by_id[s.retry_run]["calls"] == 4
    assert by_id[s.retry_run]["failed"] == 1
    assert all(r["last_seen"].tzinfo is not None for r in runs)
    assert len(browse.recent_runs(ledger, limit=1)) == 1
