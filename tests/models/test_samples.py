"""Sample generator and the committed inbox files (include/samples/inbox)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from koywe_provider.exceptions import DocumentValidationError
from koywe_provider.models import KoyweDocument, validate_document, validate_tax_id
from koywe_samples import DEFAULT_ACCOUNT_IDS, INVALID_KINDS, generate_invalid_lines, generate_lines

REPO = Path(__file__).resolve().parents[2]
INBOX = REPO / "include/samples/inbox"
ISSUE_DATE = "2026-03-02"
#: The day the samples are "sent": their issue date, mid-day in the Americas.
NOW = datetime(2026, 3, 2, 17, tzinfo=UTC)


class LineError(ValueError):
    """A line that is not even a well-formed inbox line."""


def parse_line(raw: str) -> tuple[str, int, KoyweDocument]:
    """Test helper mirroring the pipeline: JSON → reference, account, stamped + validated document."""
    try:
        line = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LineError(f"not JSON: {exc}") from None
    if not isinstance(line.get("reference"), str) or not line["reference"]:
        raise LineError("missing reference")
    if not isinstance(line.get("document"), dict):
        raise LineError("missing document")
    document = line["document"]
    assert "issue_date" not in document["header"], "generator must leave issue_date to the pipeline"
    document["header"]["issue_date"] = ISSUE_DATE
    return (
        line["reference"],
        line["account_id"],
        validate_document(document, reference=line["reference"], now=NOW),
    )


def test_generated_lines_validate() -> None:
    seen: set[str] = set()
    kinds: Counter = Counter()
    for seed in (0, 1, 7):
        for line in generate_lines(800, seed=seed):
            reference, account_id, document = parse_line(json.dumps(line))
            assert reference not in seen
            seen.add(reference)
            header = document.header
            kinds[(header.currency_id, header.document_type_id)] += 1
            assert account_id == header.account_id
            assert 1 <= len(document.details) <= 4
            for party in ("issuer", "receiver"):
                kind, code = getattr(header, f"{party}_tax_id_type"), getattr(header, f"{party}_tax_id_code")
                assert validate_tax_id(kind, code) == code
    assert len(seen) == 2400
    assert set(kinds) == {(39, 2), (39, 37), (7, 96), (7, 97), (28, 82), (31, 76)}


def test_generated_country_conventions() -> None:
    for line in generate_lines(400, seed=3):
        doc = line["document"]
        header, details = doc["header"], doc["details"]
        country = {39: "CL", 7: "PE", 28: "CO", 31: "MX"}[header["currency_id"]]
        assert line["account_id"] == DEFAULT_ACCOUNT_IDS[country]
        units = {d["unit_measure"] for d in details}
        assert units == ({"NIU"} if country == "PE" else {"UN"})
        amounts = [doc["totals"][k] for k in ("net_amount", "taxes_amount", "total_amount")]
        if country in ("CL", "CO"):
            assert all(isinstance(a, int) for a in amounts)
        if country == "PE":
            assert header["additional"]["pe_header"]["operation_type"] == "0101"
            assert header["document_sequence_code"] == {96: "F001", 97: "B001"}[header["document_type_id"]]
        if country == "MX":
            assert set(header["additional"]["mx_header"]) == {"receiver_cfdi_usage", "reported_payment_code"}
        tax = {"CL": (387, 19), "PE": (413, 18), "CO": (388, 19), "MX": (362, 16)}[country]
        assert {(t["tax_type_id"], t["tax_percentage"]) for d in details for t in d["taxes"]} == {tax}


def test_generation_is_deterministic_and_options() -> None:
    assert list(generate_lines(20, seed=5)) == list(generate_lines(20, seed=5))
    assert list(generate_lines(20, seed=5)) != list(generate_lines(20, seed=6))
    lines = list(generate_lines(30, seed=1, countries=("PE",), account_ids={"PE": 99}, reference_prefix="X"))
    assert {line["account_id"] for line in lines} == {99}
    assert lines[0]["reference"] == "X-0001-000001"
    with pytest.raises(ValueError):
        list(generate_lines(1, countries=("AR",)))


def test_invalid_lines_each_fail() -> None:
    raws = generate_invalid_lines(11)
    assert len(raws) == len(INVALID_KINDS) == 6
    references = []
    for kind, raw in zip(INVALID_KINDS, raws, strict=True):
        with pytest.raises((LineError, DocumentValidationError)) as info:
            parse_line(raw)
        if kind in ("not_json", "missing_reference", "missing_document"):
            assert info.type is LineError
            assert kind.split("_", 1)[1].replace("_", " ") in str(info.value) or kind == "not_json"
        else:
            assert info.type is DocumentValidationError
            field = {
                "invalid_rut_check_digit": "header.receiver_tax_id_code",
                "inconsistent_totals": "totals.total_amount",
                "missing_document_field": "details.0.unit_price",
            }[kind]
            assert [f for f, _ in info.value.errors] == [field]
        try:
            references.append(json.loads(raw).get("reference"))
        except json.JSONDecodeError:
            references.append("INV-0011-000001")
    present = [r for r in references if r]
    assert len(present) == len(set(present)) == 5


def _inbox(name: str) -> list[str]:
    path = INBOX / name
    return path.read_text(encoding="utf-8").splitlines()


def test_committed_valid_inbox_files() -> None:
    references: set[str] = set()
    per_country: Counter = Counter()
    types: set[int] = set()
    for country in ("cl", "pe", "co", "mx"):
        lines = _inbox(f"documents-{country}.jsonl")
        assert len(lines) >= 11
        for raw in lines:
            reference, _, document = parse_line(raw)
            assert reference.startswith(country.upper() + "-2026-")
            references.add(reference)
            per_country[country] += 1
            types.add(document.header.document_type_id)
    assert sum(per_country.values()) == len(references) >= 44
    assert {2, 37, 96, 97, 82, 76} <= types
    invalid_refs = {json.loads(r).get("reference") for r in _inbox("documents-invalid.jsonl")[1:]}
    assert not references & invalid_refs


def test_committed_invalid_inbox_file() -> None:
    lines = _inbox("documents-invalid.jsonl")
    assert lines == generate_invalid_lines(2026)  # documented in include/samples/README.md
    for raw in lines:
        with pytest.raises((LineError, DocumentValidationError)):
            parse_line(raw)


def test_cli_streams_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "lines.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "koywe_samples",
            "--count",
            "25",
            "--seed",
            "4",
            "--out",
            str(out),
            "--invalid",
        ],
        check=True,
        cwd=tmp_path,
    )
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 25 + len(INVALID_KINDS)
    assert [json.loads(x) for x in lines[:25]] == list(generate_lines(25, seed=4))
