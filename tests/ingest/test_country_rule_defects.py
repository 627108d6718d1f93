"""One test per defect class: a line Koywe or the tax bureau would refuse is ``invalid`` at ingestion,
named by file, line and field, and never sent.

Each case starts from a valid generated line (``koywe_samples``), breaks one thing, ingests the file
through :func:`read_inbox` into a real ledger and asserts the row's state, the field it names and the
reason. The clock is injected: "today" is ``NOW`` in each document's country.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from koywe_provider.services.ingestion import as_storage_path, read_inbox
from koywe_samples import generate_lines

#: 18:00 UTC: the same calendar day in Santiago, Lima, Bogotá and Mexico City.
NOW = datetime(2026, 12, 3, 18, tzinfo=UTC)
TODAY = date(2026, 12, 3)


def _line(country: str, document_type_id: int | None = None, *, seed: int = 5) -> dict:
    for line in generate_lines(300, seed=seed, countries=(country,)):
        if document_type_id is None or line["document"]["header"]["document_type_id"] == document_type_id:
            return copy.deepcopy(line)
    raise LookupError(f"no generated {country} document of type {document_type_id}")


def _set_totals(document: dict, net, taxes, total) -> None:
    document["totals"] = {"net_amount": net, "taxes_amount": taxes, "total_amount": total}


def _without_receiver(header: dict) -> None:
    for key in [k for k in header if k.startswith("receiver_")]:
        del header[key]


def _boleta_over_700(line: dict) -> None:
    """A Peru boleta of S/ 1,180 (1 × 1,000 + IGV 18 %) without the buyer's id."""
    doc = line["document"]
    _without_receiver(doc["header"])
    doc["details"] = [
        {
            "quantity": 1,
            "line_description": "Refrigeradora 300 L",
            "unit_measure": "NIU",
            "unit_price": 1000,
            "total_taxes": 180,
            "total_amount_line": 1180,
            "taxes": [{"tax_type_id": 413, "tax_percentage": 18, "tax_amount": 180}],
        }
    ]
    _set_totals(doc, 1000, 180, 1180)


def _retention(line: dict) -> None:
    header = line["document"]["header"]
    header.update(document_type_id=109, document_sequence_code="R001")
    header["additional"]["pe_retention_header"] = {
        "pe_sunat_retention_system_code": "01",
        "pe_sunat_retention_percent": "6.00",  # regime 01 retains 3 %
    }


def _negative(line: dict) -> None:
    doc = line["document"]
    line_ = doc["details"][0]
    doc["details"] = [line_]
    line_.update(
        quantity=1, unit_price=1000, modifier_amount=-2000, total_taxes=-190, total_amount_line=-1190
    )
    line_.pop("modifier_percentage", None)
    line_["taxes"][0]["tax_amount"] = -190
    _set_totals(doc, -1000, -190, -1190)


# (case, country, document type, mutation of the line, field named, words of the reason)
CASES: list[tuple[str, str, int | None, Callable[[dict], None], str, str]] = [
    (
        "missing_currency",
        "CL",
        2,
        lambda line: line["document"]["header"].pop("currency_id"),
        "document.header.currency_id",
        "required field is missing",
    ),
    (
        "tax_rate_not_of_the_country",
        "CL",
        2,
        lambda line: line["document"]["details"][0]["taxes"][0].update(tax_percentage=18),
        "document.details.0.taxes.0.tax_percentage",
        "18% is not a rate of IVA (387, Chile)",
    ),
    (
        "tax_type_of_another_country",
        "CL",
        2,
        lambda line: line["document"]["details"][0]["taxes"][0].update(tax_type_id=413),
        "document.details.0.taxes.0.tax_type_id",
        "413 (IGV) is Peru's",
    ),
    (
        "tax_type_unknown",
        "CO",
        82,
        lambda line: line["document"]["details"][0]["taxes"][0].update(tax_type_id=999),
        "document.details.0.taxes.0.tax_type_id",
        "999 is not a Koywe tax type of Colombia",
    ),
    (
        "one_cent_off_the_total",
        "PE",
        96,
        lambda line: line["document"]["totals"].update(
            total_amount=round(line["document"]["totals"]["total_amount"] + 0.01, 2)
        ),
        "document.totals.total_amount",
        "!= net_amount",
    ),
    (
        "one_peso_off_a_line_tax",
        "CL",
        2,
        lambda line: line["document"]["details"][0]["taxes"][0].update(
            tax_amount=line["document"]["details"][0]["taxes"][0]["tax_amount"] + 1
        ),
        "document.details.0.taxes.0.tax_amount",
        "!= net",
    ),
    (
        "issue_date_in_the_future",
        "MX",
        76,
        lambda line: line["document"]["header"].update(issue_date=(TODAY + timedelta(days=1)).isoformat()),
        "document.header.issue_date",
        "is in the future: today in Mexico is 2026-12-03",
    ),
    (
        "issue_date_far_in_the_past",
        "CL",
        2,
        lambda line: line["document"]["header"].update(issue_date="2025-12-03"),
        "document.header.issue_date",
        "is too old",
    ),
    (
        "peru_factura_older_than_three_days",
        "PE",
        96,
        lambda line: line["document"]["header"].update(issue_date=(TODAY - timedelta(days=4)).isoformat()),
        "document.header.issue_date",
        "at most 3 days before today in Peru",
    ),
    (
        "peru_boleta_not_of_today",
        "PE",
        97,
        lambda line: line["document"]["header"].update(issue_date=(TODAY - timedelta(days=1)).isoformat()),
        "document.header.issue_date",
        "must carry today's date in Peru",
    ),
    (
        "currency_of_another_country",
        "CL",
        2,
        lambda line: line["document"]["header"].update(currency_id=31),
        "document.header.currency_id",
        "31 is not a currency of a Factura electrónica (document_type_id 2, Chile); allowed: 39 CLP",
    ),
    (
        "currency_not_of_the_document_type",
        "CL",
        37,
        lambda line: line["document"]["header"].update(currency_id=5),  # USD: exports only
        "document.header.currency_id",
        "5 is not a currency of a Boleta electrónica",
    ),
    (
        "unknown_currency",
        "MX",
        76,
        lambda line: line["document"]["header"].update(currency_id=4242),
        "document.header.currency_id",
        "not in Koywe's currency table",
    ),
    (
        "factura_without_receiver",
        "CL",
        2,
        lambda line: _without_receiver(line["document"]["header"]),
        "document.header.receiver_tax_id_type",
        "names its receiver",
    ),
    (
        "unknown_document_type",
        "CL",
        2,
        lambda line: line["document"]["header"].update(document_type_id=33),
        "document.header.document_type_id",
        "33 is the SII code of Factura electrónica, whose Koywe id is 2",
    ),
    ("negative_totals", "CL", 2, _negative, "document.totals.net_amount", "is negative"),
    (
        "misspelt_tax_id_type",
        "CL",
        2,
        lambda line: line["document"]["header"].update(receiver_tax_id_type="CL-RTU"),
        "document.header.receiver_tax_id_type",
        "did you mean CL-RUT?",
    ),
    (
        "misspelt_tax_id_type_underscore",
        "PE",
        96,
        lambda line: line["document"]["header"].update(receiver_tax_id_type="PE_RUC"),
        "document.header.receiver_tax_id_type",
        "did you mean PE-RUC?",
    ),
    (
        "colombian_nit_without_its_check_digit",
        "CO",
        82,
        # NIT 900123455-0 written without its check digit would read as 90012345-5, another taxpayer.
        lambda line: line["document"]["header"].update(receiver_tax_id_code="900123455"),
        "document.header.receiver_tax_id_code",
        "write the check digit after a dash",
    ),
    (
        "generic_rfc_as_issuer",
        "MX",
        76,
        lambda line: line["document"]["header"].update(issuer_tax_id_code="XAXX010101000"),
        "document.header.issuer_tax_id_code",
        "never identifies an issuer",
    ),
    (
        "issuer_tax_id_of_another_country",
        "PE",
        96,
        lambda line: line["document"]["header"].update(
            issuer_tax_id_type="CL-RUT", issuer_tax_id_code="76086428-5"
        ),
        "document.header.issuer_tax_id_type",
        "CL-RUT is not a tax id type of a Peru issuer",
    ),
    (
        "peru_boleta_over_700_without_the_buyer",
        "PE",
        97,
        _boleta_over_700,
        "document.header.receiver_tax_id_code",
        "must identify its buyer",
    ),
    (
        "whole_peso_amount_with_cents",
        "CL",
        2,
        lambda line: line["document"]["totals"].update(
            taxes_amount=line["document"]["totals"]["taxes_amount"] + 0.5,
            total_amount=line["document"]["totals"]["total_amount"] + 0.5,
        ),
        "document.totals.taxes_amount",
        "CLP amounts have no decimals",
    ),
    (
        "unit_price_with_seven_decimals",
        "MX",
        76,
        lambda line: line["document"]["details"][0].update(unit_price=10.1234567),
        "document.details.0.unit_price",
        "more than 6 decimals",
    ),
    (
        "gross_values_on_a_factura",
        "CL",
        2,
        lambda line: line["document"].update(options={"gross_values": 1}),
        "document.options.gross_values",
        "applies only to Chile's boletas",
    ),
    (
        "peru_retention_regime_rate",
        "PE",
        96,
        _retention,
        "document.header.additional.pe_retention_header.pe_sunat_retention_percent",
        "6 != 3, the rate of SUNAT retention regime 01",
    ),
]


@pytest.mark.parametrize(
    ("case", "country", "type_id", "mutate", "field", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_defect_is_invalid_and_names_the_field(
    ledger, tmp_path, case, country, type_id, mutate, field, words
) -> None:
    good = _line(country, type_id)
    bad = copy.deepcopy(good)
    bad["reference"] = f"BAD-{case}"
    mutate(bad)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "day.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")

    counts = ledger.ingest_many(read_inbox(as_storage_path(str(inbox)), now=NOW), run_id="run-1")

    assert (counts.added, counts.invalid) == (1, 1), counts  # the unbroken line is fine
    row = ledger.get_by_reference(str(bad["account_id"]), bad["reference"])
    assert row["state"] == "invalid"
    assert row["error_field"] == field, row["last_error"]
    assert words in row["last_error"], row["last_error"]
    assert "day.jsonl line 2" in row["last_error"]
    assert row["payload"] is None and row["raw_line"]  # the line is kept as written, never sent
    states = ledger.counts_by_state(run_id="run-1")
    assert {k: v for k, v in states.items() if v} == {"pending": 1, "invalid": 1}


def test_valid_lines_are_stamped_with_their_countrys_date_at_any_hour(ledger, tmp_path) -> None:
    """At 02:00 UTC it is still yesterday in the Americas: each document gets its own country's date."""
    late = datetime(2026, 12, 4, 2, tzinfo=UTC)
    lines = [_line(c) for c in ("CL", "PE", "CO", "MX")]
    for n, line in enumerate(lines):
        line["reference"] = f"LATE-{n}"
    path = tmp_path / "late.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    counts = ledger.ingest_many(read_inbox(as_storage_path(str(path)), now=late))
    assert counts.added == 4 and counts.invalid == 0
    dates = {
        ledger.get_by_reference(str(line["account_id"]), line["reference"])["payload"]["header"]["issue_date"]
        for line in lines
    }
    assert dates == {"2026-12-03"}
