"""Corrections without SQL: ``correct_document`` (the service), the ``fix`` command, both on a real ledger.

A new payload for an ``invalid``, ``rejected`` or unsent ``pending`` row replaces it (the old payload's
hash in the row's history, the attempt count kept; a rejected row starts a new generation); a row that
may be at Koywe is refused, as a conflict would be; a payload that does not validate is refused naming
the field; nothing changes on a refusal.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from koywe_provider.cli import main as cli_main
from koywe_provider.country_rules import local_today
from koywe_provider.ledger import DocumentFacts
from koywe_provider.services.corrections import CorrectionRefused, correct_document
from koywe_provider.services.ingestion import as_storage_path, read_inbox
from koywe_samples import generate_lines

NOW = datetime(2026, 12, 3, 18, tzinfo=UTC)


def _line(reference: str, *, country: str = "PE", seed: int = 21) -> dict:
    line = copy.deepcopy(next(iter(generate_lines(1, seed=seed, countries=(country,)))))
    line["reference"] = reference
    return line


def _ingest(ledger, tmp_path, *lines: dict) -> None:
    path = tmp_path / f"in-{lines[0]['reference']}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    ledger.ingest_many(read_inbox(as_storage_path(str(path)), now=NOW), run_id="day")


def _row(ledger, line: dict) -> dict:
    return ledger.get_by_reference(str(line["account_id"]), line["reference"])


def _broken(line: dict) -> dict:
    broken = copy.deepcopy(line)
    del broken["document"]["header"]["currency_id"]
    return broken


def _send(ledger, pk: int) -> None:
    assert ledger.claim(pk, owner="w") is not None
    ledger.mark_sent(pk, owner="w", lease_seconds=60)


def test_an_invalid_row_takes_the_fixed_document(ledger, tmp_path) -> None:
    good = _line("FIX-1")
    _ingest(ledger, tmp_path, _broken(good))
    before = _row(ledger, good)
    assert before["state"] == "invalid" and before["error_field"] == "document.header.currency_id"

    done = correct_document(
        ledger, reference="FIX-1", document=good["document"], source="fixed.json", now=NOW
    )

    after = _row(ledger, good)
    assert (done.outcome, done.previous_state, done.state) == ("replaced", "invalid", "pending")
    assert after["state"] == "pending" and after["payload"]["header"]["currency_id"] == 7
    assert after["last_error"] is None and after["error_field"] is None and after["raw_line"] is None
    assert after["source"] == "fixed.json" and after["attempts"] == 0 and after["id"] == before["id"]
    (old,) = ledger.payload_history_for(after["id"])
    assert old["payload_hash"] is None and old["line_no"] == 1  # the invalid line had no payload
    assert after["payload"]["header"]["issue_date"] == "2026-12-03"  # stamped as ingestion does
    again = correct_document(
        ledger, reference="FIX-1", document=good["document"], source="fixed.json", now=NOW
    )
    assert again.outcome == "unchanged" and len(ledger.payload_history_for(after["id"])) == 1


def test_a_rejected_row_keeps_its_attempts_and_starts_a_new_generation(ledger, tmp_path) -> None:
    line = _line("FIX-2")
    _ingest(ledger, tmp_path, line)
    pk = _row(ledger, line)["id"]
    _send(ledger, pk)
    ledger.mark_rejected(
        pk,
        owner="w",
        error="Error 2800: receptor",
        error_class="KoyweRejectedError",
        facts=DocumentFacts(koywe_document_id="9001", result_status=1, result_error_message="receptor"),
    )
    old_hash = _row(ledger, line)["payload_hash"]
    fixed = copy.deepcopy(line["document"])
    fixed["header"]["receiver_legal_name"] = "Nombre Corregido S.A.C."

    done = correct_document(ledger, reference="FIX-2", document=fixed, now=NOW)

    row = ledger.get(pk)
    assert (done.outcome, done.previous_state, done.generation, done.attempts) == (
        "replaced",
        "rejected",
        2,
        1,
    )
    assert (row["state"], row["generation"], row["attempts"], row["generation_sends"]) == ("pending", 2, 1, 0)
    assert row["payload"]["header"]["receiver_legal_name"] == "Nombre Corregido S.A.C."
    (old,) = ledger.payload_history_for(pk)
    assert (old["payload_hash"], old["generation"]) == (old_hash, 1)
    first, second = ledger.generations_for(pk)
    assert (first["koywe_document_id"], first["outcome"], second["koywe_reference"]) == (
        "9001",
        "rejected",
        "FIX-2~2",
    )


def test_an_unsent_pending_row_is_replaced(ledger, tmp_path) -> None:
    line = _line("FIX-3", country="CL")
    _ingest(ledger, tmp_path, line)
    fixed = copy.deepcopy(line["document"])
    fixed["header"]["receiver_address"] = "Av. Corregida 100"
    done = correct_document(ledger, reference="FIX-3", document=fixed, now=NOW)
    assert (done.outcome, done.previous_state, done.state, done.generation) == (
        "replaced",
        "pending",
        "pending",
        1,
    )
    assert _row(ledger, line)["payload"]["header"]["receiver_address"] == "Av. Corregida 100"


def _drive(ledger, pk: int, state: str) -> None:
    if state == "pending_sent":
        _drive(ledger, pk, "unknown")
        assert ledger.requeue(states=("unknown",)) == 1
        return
    _send(ledger, pk)
    if state == "unknown":
        ledger.mark_unknown(pk, owner="w", error="timeout", error_class="KoyweOutcomeUnknownError")
    elif state == "issued":
        ledger.mark_issued(pk, owner="w", facts=DocumentFacts("k-1", "1", document_status=1, result_status=0))
    elif state == "dead":
        ledger.mark_held(pk, owner="w", error="two documents", error_class="DuplicateAlarm")


@pytest.mark.parametrize("state", ["in_flight", "unknown", "issued", "dead", "pending_sent"])
def test_a_row_that_may_be_at_koywe_is_refused_and_left_alone(ledger, tmp_path, state) -> None:
    line = _line(f"FIX-{state}")
    _ingest(ledger, tmp_path, line)
    pk = _row(ledger, line)["id"]
    _drive(ledger, pk, state)
    before = ledger.get(pk)
    fixed = copy.deepcopy(line["document"])
    fixed["header"]["receiver_legal_name"] = "Otro Nombre S.A."
    with pytest.raises(CorrectionRefused) as info:
        correct_document(ledger, reference=line["reference"], document=fixed, now=NOW)
    assert info.value.field == "state" and "may be at Koywe" in info.value.message
    assert "\n" not in str(info.value)
    assert ledger.get(pk) == before and ledger.payload_history_for(pk) == [] and ledger.conflicts() == []


def test_a_fix_that_does_not_validate_is_refused_naming_the_field(ledger, tmp_path) -> None:
    good = _line("FIX-5")
    _ingest(ledger, tmp_path, _broken(good))
    before = _row(ledger, good)
    still_wrong = copy.deepcopy(good["document"])
    still_wrong["details"][0]["taxes"][0]["tax_percentage"] = 19  # Peru's IGV is 18 %
    with pytest.raises(CorrectionRefused) as info:
        correct_document(ledger, reference="FIX-5", document=still_wrong, now=NOW)
    assert info.value.field == "document.details.0.taxes.0.tax_percentage"
    assert "19% is not a rate of IGV" in info.value.message and "\n" not in info.value.message
    assert _row(ledger, good) == before


def test_dry_run_account_and_reference_checks(ledger, tmp_path) -> None:
    good = _line("FIX-6")
    _ingest(ledger, tmp_path, _broken(good))
    done = correct_document(ledger, reference="FIX-6", document=good["document"], dry_run=True, now=NOW)
    assert done.outcome == "validated" and _row(ledger, good)["state"] == "invalid"

    with pytest.raises(CorrectionRefused, match="no ledger document has reference 'NOPE'") as info:
        correct_document(ledger, reference="NOPE", document=good["document"], now=NOW)
    assert info.value.field == "reference"

    other = copy.deepcopy(_broken(good))  # the same reference in a second account
    other["account_id"] = 999
    _ingest(ledger, tmp_path, other)
    with pytest.raises(CorrectionRefused, match="used by accounts 16268, 999") as info:
        correct_document(ledger, reference="FIX-6", document=good["document"], now=NOW)
    assert info.value.field == "account_id"
    done = correct_document(ledger, reference="FIX-6", account_id=16268, document=good["document"], now=NOW)
    assert done.outcome == "replaced" and ledger.get_by_reference("999", "FIX-6")["state"] == "invalid"

    # A whole inbox line is accepted too, when its key is the row's.
    line = _line("FIX-7")
    _ingest(ledger, tmp_path, _broken(line))
    with pytest.raises(CorrectionRefused, match="is not the corrected row's 'FIX-7'"):
        correct_document(ledger, reference="FIX-7", document={**line, "reference": "FIX-8"}, now=NOW)
    assert correct_document(ledger, reference="FIX-7", document=line, now=NOW).outcome == "replaced"


def test_fix_command(ledger, tmp_path, capsys) -> None:
    good = _line("CLI-1")
    _ingest(ledger, tmp_path, _broken(good))
    url = ledger.engine.url.render_as_string(hide_password=False)
    bad_file = tmp_path / "still-bad.json"
    bad_file.write_text(json.dumps(_broken(good)["document"]), encoding="utf-8")
    assert cli_main(["--ledger-url", url, "fix", "--reference", "CLI-1", "--file", str(bad_file)]) == 1
    out = capsys.readouterr()
    (line,) = out.err.strip().splitlines()  # one line
    assert line.startswith("koywe fix: CLI-1 refused, nothing changed:") and "header.currency_id" in line
    assert out.out == "" and _row(ledger, good)["state"] == "invalid"

    dup_file = tmp_path / "dup.json"
    dup_file.write_text('{"header": {"currency_id": 7, "currency_id": 5}}', encoding="utf-8")
    assert cli_main(["--ledger-url", url, "fix", "--reference", "CLI-1", "--file", str(dup_file)]) == 1
    assert "key 'currency_id' appears twice" in capsys.readouterr().err

    assert (
        cli_main(["--ledger-url", url, "fix", "--reference", "CLI-1", "--file", str(tmp_path / "none")]) == 2
    )
    assert "cannot read" in capsys.readouterr().err

    # The command judges dates at the system clock: date the document today in Peru. Pretty-printed
    # JSON is fine (a file, not an inbox line).
    document = copy.deepcopy(good["document"])
    document["header"]["issue_date"] = local_today(83).isoformat()
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(document, indent=2), encoding="utf-8")
    code = subprocess.run(
        [
            sys.executable,
            "-m",
            "koywe_provider.cli",
            "--ledger-url",
            url,
            "fix",
            "--reference",
            "CLI-1",
            "--file",
            str(fixed),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert code.returncode == 0, code.stderr
    result = json.loads(code.stdout.strip().splitlines()[-1])
    assert result == {
        "fixed": "CLI-1",
        "account_id": "16268",
        "outcome": "replaced",
        "previous_state": "invalid",
        "state": "pending",
        "generation": 1,
        "attempts": 0,
        "payload_hash": _row(ledger, good)["payload_hash"],
    }
    assert _row(ledger, good)["source"] == str(fixed.resolve())
