"""A document that is fine is never refused: generated sets of valid documents across CL, PE, CO and MX
go through the real ingestion (strict JSON, country rules, exact arithmetic, dates) with 0 refused."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

from koywe_provider.services.ingestion import as_storage_path, read_inbox
from koywe_samples import generate_lines, generate_varied_lines
from koywe_samples.generate import VARIED_SCENARIOS

#: Late evening in the Americas, already the next day in UTC: each document is dated in its country.
NOW = datetime(2026, 12, 4, 3, 30, tzinfo=UTC)


def _write(path, lines) -> int:
    with path.open("w", encoding="utf-8") as out:
        n = 0
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
    return n


def test_two_thousand_varied_valid_documents_are_all_accepted(ledger, tmp_path) -> None:
    path = tmp_path / "varied.jsonl"
    lines = list(generate_varied_lines(2400, seed=2026))
    _write(path, lines)
    counts = ledger.ingest_many(read_inbox(as_storage_path(str(path)), now=NOW), run_id="varied")
    refused = [f["last_error"] for f in ledger.failures(run_id="varied")][:3]
    assert (counts.added, counts.invalid) == (2400, 0), refused
    scenarios = Counter(line["scenario"] for line in lines)
    assert set(scenarios) == {f"{c}:{s}" for c, names in VARIED_SCENARIOS.items() for s in names}
    assert min(scenarios.values()) >= 50
    types = Counter(line["document"]["header"]["document_type_id"] for line in lines)
    assert {2, 32, 37, 41, 46, 96, 97, 82, 87, 76, 77} <= set(types)
    # 03:30 UTC: 00:30 in Santiago (summer time), still the evening before in Lima, Bogotá and Mexico.
    expected = {"CL": "2026-12-04", "PE": "2026-12-03", "CO": "2026-12-03", "MX": "2026-12-03"}
    for line in lines[:200]:
        row = ledger.get_by_reference(str(line["account_id"]), line["reference"])
        assert row["payload"]["header"]["issue_date"] == expected[line["scenario"][:2]], line["scenario"]


def test_two_thousand_classic_sample_documents_are_all_accepted(ledger, tmp_path) -> None:
    path = tmp_path / "classic.jsonl"
    _write(path, generate_lines(2000, seed=7))
    counts = ledger.ingest_many(read_inbox(as_storage_path(str(path)), now=NOW), run_id="classic")
    assert (counts.added, counts.invalid) == (2000, 0), [f["last_error"] for f in ledger.failures()][:3]


def test_varied_generation_is_deterministic() -> None:
    assert list(generate_varied_lines(30, seed=3)) == list(generate_varied_lines(30, seed=3))
    assert list(generate_varied_lines(30, seed=3)) != list(generate_varied_lines(30, seed=4))
