"""Reading inbox files into the ledger: bad lines and unreadable files are recorded, never dropped."""

from __future__ import annotations

import json

import pytest

from koywe_provider.hooks.ledger import default_ledger_url, sqlalchemy_url_from_connection
from koywe_provider.ledger import Ledger
from koywe_provider.services.ingestion import as_storage_path, read_inbox
from koywe_test_support import chile_factura


def line(reference: str, net: int = 10_000, **overrides) -> str:
    document = chile_factura(net=net)
    del document["header"]["issue_date"]  # stamped by the ingest
    return json.dumps({"reference": reference, "account_id": 4201, "document": document, **overrides})


def ingest(ledger, inbox, run_id="run-1"):
    return ledger.ingest_many(read_inbox(as_storage_path(str(inbox)), issue_date="2026-11-20"), run_id=run_id)


def test_good_lines_pass_and_bad_ones_are_recorded(ledger, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text(
        "\n".join(
            [
                line("R-1"),
                "{not json",
                json.dumps({"account_id": 4201, "document": {}}),
                line("R-4", net=100).replace('"total_amount": 119', '"total_amount": 999'),
                line("R-5"),
            ]
        )
        + "\n"
    )
    (inbox / "b.jsonl").write_bytes(line("R-6").encode() + b"\n" + b'{"reference": "R-7", "na\xefve\xff"}\n')
    (inbox / "c.jsonl").write_text(line("R-8") + "\n" + line("R-9")[:200])  # truncated last line
    (inbox / "ignored.txt").write_text("not an inbox file")

    counts = ingest(ledger, inbox)
    assert counts.added == 4
    assert counts.invalid == 5  # a.jsonl lines 2-4, b.jsonl line 2, c.jsonl line 2
    states = ledger.counts_by_state()
    assert states["pending"] == 4 and states["invalid"] == 5

    failures = {(f["source"].rsplit("/", 1)[-1], f["line_no"]): f for f in ledger.failures()}
    assert "not valid JSON" in failures[("a.jsonl", 2)]["last_error"]
    assert "missing or empty reference" in failures[("a.jsonl", 3)]["last_error"]
    bad_totals = failures[("a.jsonl", 4)]
    assert bad_totals["reference"] == "R-4"
    assert bad_totals["error_field"].startswith("document.totals")
    assert "a.jsonl line 4" in bad_totals["last_error"]
    assert "not UTF-8" in failures[("b.jsonl", 2)]["last_error"]
    assert "not valid JSON" in failures[("c.jsonl", 2)]["last_error"]

    issued_payload = ledger.get_by_reference("4201", "R-1")["payload"]
    assert issued_payload["header"]["issue_date"] == "2026-11-20"


def test_reingest_is_idempotent_corrects_unsent_rows_and_never_overwrites_sent_ones(ledger, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "day.jsonl").write_text(line("R-1") + "\n" + line("R-2") + "\n")
    assert ingest(ledger, inbox).added == 2
    again = ingest(ledger, inbox, run_id="run-2")
    assert again.added == 0 and again.unchanged == 2

    # R-1 was never sent: a new payload is a correction
    (inbox / "day.jsonl").write_text(line("R-1", net=20_000) + "\n")
    corrected = ingest(ledger, inbox, run_id="run-3")
    assert (corrected.replaced, corrected.conflicts) == (1, 0)
    row = ledger.get_by_reference("4201", "R-1")
    assert row["payload"]["totals"]["net_amount"] == 20_000
    assert len(ledger.payload_history_for(row["id"])) == 1  # the replaced payload's hash is kept

    # R-2 may be at Koywe (a send is under way): a new payload is a conflict and changes nothing
    ledger.claim_next(owner="t", limit=1, first_id=ledger.get_by_reference("4201", "R-2")["id"])
    ledger.mark_sent(ledger.get_by_reference("4201", "R-2")["id"], owner="t", lease_seconds=60)
    (inbox / "day.jsonl").write_text(line("R-2", net=30_000) + "\n")
    changed = ingest(ledger, inbox, run_id="run-4")
    assert changed.conflicts == 1
    assert ledger.get_by_reference("4201", "R-2")["payload"]["totals"]["net_amount"] == 10_000
    (conflict,) = ledger.conflicts()
    assert conflict["reference"] == "R-2"


def test_line_account_must_match_the_header(ledger, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.jsonl").write_text(line("R-1", account_id=777) + "\n")
    assert ingest(ledger, inbox).invalid == 1
    (failure,) = ledger.failures()
    assert failure["error_field"] == "document.header.account_id"


def test_ledger_url_from_connections(monkeypatch, tmp_path):
    from airflow.sdk import Connection

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert default_ledger_url() == f"sqlite:///{tmp_path / 'koywe_ledger.db'}"
    pg = Connection(
        conn_id="l", conn_type="postgres", host="db", login="u", password="p@ss", port=5432, schema="k"
    )
    assert sqlalchemy_url_from_connection(pg) == "postgresql+psycopg2://u:p%40ss@db:5432/k"
    lite = Connection(conn_id="l", conn_type="sqlite", host="/data/l.db")
    assert sqlalchemy_url_from_connection(lite) == "sqlite:////data/l.db"
    explicit = Connection(conn_id="l", conn_type="generic", extra=json.dumps({"sqlalchemy_url": "sqlite://"}))
    assert sqlalchemy_url_from_connection(explicit) == "sqlite://"
    with pytest.raises(ValueError, match="cannot host the Koywe ledger"):
        sqlalchemy_url_from_connection(Connection(conn_id="l", conn_type="http", host="x"))


def test_ledger_on_postgresql(pg_database, tmp_path):
    led = Ledger(pg_database)
    led.migrate()
    led.migrate()  # safe twice
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "d.jsonl").write_text(line("PG-1") + "\n{bad\n")
    counts = ingest(led, inbox)
    assert (counts.added, counts.invalid) == (1, 1)
    led.dispose()
