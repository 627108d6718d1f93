"""An inbox no line can block: poisoned lines in the middle of a file become ``invalid`` rows naming file,
line and field, and every good line around them is ingested, in order, with the day's counts right."""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from datetime import UTC, datetime

import pytest

from koywe_provider.ledger import IngestCounts, IngestItem
from koywe_provider.services.ingestion import (
    as_storage_path,
    bounded_lines,
    parse_line,
    read_file,
    read_inbox,
)
from koywe_samples import generate_lines

NOW = datetime(2026, 12, 3, 18, tzinfo=UTC)
TEN_MB = 10 * 1024 * 1024


def _good(n: int, prefix: str = "GOOD") -> list[dict]:
    lines = list(generate_lines(n, seed=9))
    for i, line in enumerate(lines):
        line["reference"] = f"{prefix}-{i}"
    return lines


def _text(line: dict) -> str:
    return json.dumps(line, ensure_ascii=False)


def _poison(good: dict) -> dict[str, tuple[str, str, str]]:
    """``{name: (raw line, field named, words of the reason)}``."""
    doc = json.dumps(good["document"], ensure_ascii=False)
    huge = json.loads(doc)
    huge["details"][0].update(quantity=1e13, unit_price=1e13)  # 1e26: each below the bound, the product not
    literal = doc.replace('"quantity":', '"quantity": 1e30, "x_quantity":', 1)
    duplicate = doc.replace('"totals": {', '"totals": {"total_amount": 1, ', 1)
    nul = json.loads(doc)
    nul["details"][0]["line_description"] = "Tóner\u0000negro"
    return {
        "deep": (
            '{"reference": "P-deep", "account_id": 4201, "document": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "line",
            "nested deeper than 32 levels",
        ),
        "product_1e26": (
            _text({"reference": "P-1e26", "account_id": good["account_id"], "document": huge}),
            "document.details.0.taxes.0.tax_amount",
            "!= net 100000000000000000000000000 ×",
        ),
        "literal_1e30": (
            f'{{"reference": "P-1e30", "account_id": {good["account_id"]}, "document": {literal}}}',
            "document.details.0.quantity",
            "the number is too large",
        ),
        "ten_mb": ('{"reference": "P-10MB", "pad": "' + "x" * TEN_MB + '"}', "line", "longer than [koywe]"),
        "duplicate_keys": (
            f'{{"reference": "P-dup", "account_id": {good["account_id"]}, "document": {duplicate}}}',
            "document.totals.total_amount",
            "key 'total_amount' appears twice",
        ),
        "nan": ('{"reference": "P-nan", "account_id": 4201, "document": {"x": NaN}}', "line", "NaN is not"),
        "nul": (
            _text({"reference": "P-nul", "account_id": good["account_id"], "document": nul}),
            "document.details.0.line_description",
            "a NUL character",
        ),
        "list_document": (
            '{"reference": "P-list", "account_id": 4201, "document": [1, 2]}',
            "document",
            "document must be a JSON object (a Koywe POST /documents body), got a JSON array",
        ),
        "float_account": (
            _text({"reference": "P-float", "account_id": 4201.5, "document": good["document"]}),
            "account_id",
            "account_id must be an integer or a string of digits, got the number 4201.5",
        ),
        "truncated": (_text(good)[:300], "line", "the line ends at column 300"),
        "not_utf8": ('{"reference": "P-latin1", "x": "caf\xe9"}', "line", "not UTF-8"),
    }


def test_poisoned_lines_in_the_middle_never_stop_the_good_ones(ledger, tmp_path) -> None:
    good = _good(14)
    poison = _poison(good[0])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    raw: list[bytes] = []
    order: list[str] = []
    for n, (name, (text, _, _)) in enumerate(poison.items()):
        raw.append(_text(good[n]).encode() + b"\n")
        order.append(good[n]["reference"])
        raw.append(text.encode("latin-1") if name == "not_utf8" else text.encode("utf-8"))
        raw.append(b"\n")
    raw.append(_text(good[11]).encode())  # the last line has no newline
    order.append(good[11]["reference"])
    (inbox / "a-day.jsonl").write_bytes(b"".join(raw))
    # A file saved with a byte-order mark, and Windows line ends.
    bom = "\ufeff" + _text(good[12]) + "\r\n" + _text(good[13]) + "\r\n"
    (inbox / "b-bom.jsonl").write_bytes(bom.encode("utf-8"))
    # A file that cannot be opened (a dangling link): one invalid row, the next file goes on.
    os.symlink(tmp_path / "nowhere.jsonl", inbox / "c-gone.jsonl")
    last = _good(1, "LAST")[0]
    (inbox / "d-last.jsonl").write_text(_text(last) + "\n", encoding="utf-8")

    counts = ledger.ingest_many(read_inbox(as_storage_path(str(inbox)), now=NOW), run_id="day-1")

    order += [good[12]["reference"], good[13]["reference"], last["reference"]]
    assert counts == IngestCounts(added=len(order), invalid=len(poison) + 1), counts
    states = {k: v for k, v in ledger.counts_by_state(run_id="day-1").items() if v}
    assert states == {"pending": len(order), "invalid": len(poison) + 1}
    rows = [ledger.get_by_reference(str(g["account_id"]), g["reference"]) for g in [*good, last]]
    assert all(r is not None and r["state"] == "pending" for r in rows)
    assert [r["reference"] for r in sorted(rows, key=lambda r: r["id"])] == order  # in order

    failures = {
        f["line_no"]: f for f in ledger.failures(run_id="day-1") if f["source"].endswith("a-day.jsonl")
    }
    for n, (name, (_, field, words)) in enumerate(poison.items()):
        failure = failures[2 * n + 2]
        assert failure["state"] == "invalid", name
        assert failure["error_field"] == field, (name, failure["last_error"])
        assert words in failure["last_error"], (name, failure["last_error"])
        assert f"a-day.jsonl line {2 * n + 2}" in failure["last_error"], name
    assert len(failures[2 * 3 + 2]["last_error"]) < 500  # the 10 MB line is named, not copied
    (gone,) = [f for f in ledger.failures(run_id="day-1") if f["source"].endswith("c-gone.jsonl")]
    assert gone["error_field"] == "file" and "file unreadable" in gone["last_error"]

    # The same inbox again: nothing new, nothing lost.
    again = ledger.ingest_many(read_inbox(as_storage_path(str(inbox)), now=NOW), run_id="day-1b")
    assert again == IngestCounts(unchanged=len(order) + len(poison) + 1)


def test_a_ten_megabyte_line_is_never_held_in_memory(tmp_path) -> None:
    good = _text(_good(1)[0])
    path = tmp_path / "big.jsonl"
    head, tail = '{"reference": "BIG", "pad": "', '"}'
    with path.open("w", encoding="utf-8") as out:
        out.write(good + "\n")
        out.write(head)
        for _ in range(TEN_MB // 65536):
            out.write("y" * 65536)
        out.write(tail + "\n")
        out.write(good.replace("GOOD-0", "GOOD-1") + "\n")
    tracemalloc.start()
    try:
        items = list(read_file(as_storage_path(str(path)), now=NOW, max_line_bytes=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [bool(i.error) for i in items] == [False, True, False]
    assert items[1].error_field == "line" and f"{len(head) + TEN_MB + len(tail):,} bytes" in items[1].error
    assert peak < 3 * (1 << 20), f"peak {peak:,} bytes while reading a 10 MB line"


def test_max_line_bytes_boundaries() -> None:
    def lines(data: bytes, limit: int) -> list:
        return list(bounded_lines(io.BytesIO(data), limit))

    assert lines(b"abcd\nabcde\nab", 4) == [(b"abcd", 4), (None, 5), (b"ab", 2)]
    assert lines(b"abcde", 4) == [(None, 5)]
    assert lines(b"\n\nab\r\n", 4) == [(b"", 0), (b"", 0), (b"ab\r", 3)]
    big = b"z" * 200_000 + b"\nok\n"  # spans several read blocks
    assert lines(big, 100_000) == [(None, 200_000), (b"ok", 2)]
    assert lines(big, 300_000) == [(b"z" * 200_000, 200_000), (b"ok", 2)]


def test_a_bom_file_is_read_like_any_other(tmp_path) -> None:
    line = _good(1)[0]
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _text(line).encode() + b"\n")
    (item,) = read_file(as_storage_path(str(path)), now=NOW)
    assert item.error is None and item.reference == line["reference"]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (
            b'{"reference": "R", "account_id": 1, "document": {"header": {"a": "',
            "a string starting at column",
        ),
        (b'{"reference": "R", "account_id": 1, "document": {"header": {', "the line ends at column 60"),
        (b'{"reference": "R",, "account_id": 1}', "at column 19"),
        (b'{"reference": "R"} trailing', "unexpected data after the JSON value at column 20"),
        (b"[1, 2]", 'a line must be a JSON object {"reference", "account_id", "document"}, got a JSON array'),
        (b'{"reference": "R", "account_id": true, "document": {}}', "got true"),
        (b'{"account_id": 1, "document": {}}', "missing or empty reference"),
        (b'{"reference": "R", "account_id": 1}', "missing document"),
        (b'{"reference": "R", "account_id": 1, "document": "x"}', "got a string"),
        (b'{"reference": "R", "account_id": 1, "document": {"a": 1' + b"9" * 5000 + b"}}", "not valid JSON"),
    ],
)
def test_error_texts_are_precise(raw: bytes, words: str) -> None:
    item = parse_line(raw, source="in.jsonl", line_no=7, now=NOW)
    assert item.error is not None and words in item.error, item.error
    assert item.error.startswith("in.jsonl line 7: ")


def test_a_line_the_database_refuses_is_recorded_and_the_chunk_goes_on(ledger_on_each_backend) -> None:
    """Storage isolation: the chunk is retried line by line under savepoints."""
    ledger = ledger_on_each_backend

    def item(ref: str, payload) -> IngestItem:
        return IngestItem(ref, "acc", payload, None, "s3://inbox/x.jsonl", int(ref.rsplit("-", 1)[1]))

    poisoned = {"cannot": object()} if ledger.dialect == "sqlite" else {"text": "a\u0000b"}
    items = [item("R-1", {"a": 1}), item("R-2", poisoned), item("R-3", {"c": 3})]
    counts = ledger.ingest_many(items, run_id="run-x")
    assert counts == IngestCounts(added=2, invalid=1)
    assert ledger.get_by_reference("acc", "R-1")["state"] == "pending"
    assert ledger.get_by_reference("acc", "R-3")["state"] == "pending"
    bad = ledger.get_by_reference("acc", "R-2")
    assert bad["state"] == "invalid" and bad["last_error_class"] == "storage"
    assert (
        bad["error_field"] == "line"
        and "x.jsonl line 2: the ledger could not store this line" in bad["last_error"]
    )
    assert bad["id"] > ledger.get_by_reference("acc", "R-1")["id"]
