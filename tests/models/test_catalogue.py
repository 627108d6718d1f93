"""Koywe's reference tables (``koywe_provider.catalogue``): content, lookups, unknown ids, rounding,
the modules that read them, and agreement with Koywe's notes and examples in ``../shared/koywe``."""

from __future__ import annotations

import ast
import json
import pickle
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from koywe_provider import catalogue
from koywe_provider.catalogue import (
    COUNTRIES,
    CURRENCIES,
    DOCUMENT_KINDS,
    DOCUMENT_TYPES,
    UnknownCatalogueEntry,
    country,
    country_by_iso_code,
    country_of_document_type,
    country_of_tax_id_type,
    currency,
    currency_places,
    document_type,
    document_types_of,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "koywe"
API_NOTES = SHARED / "API_NOTES.md"
REQUESTS = SHARED / "examples" / "requests"
# Koywe's API-reference account body is placeholders only ("country_id": 1, every string its own
# field name): not an id Koywe uses. test_placeholder_example_is_only_placeholders keeps it honest.
PLACEHOLDER_EXAMPLES = {"api_reference__create_a_new_account.json"}

# API_NOTES "Accounts" and "Reference ids seen in Koywe's tables", transcribed.
NOTES_COUNTRIES = {
    253: "Chile",
    66: "Colombia",
    80: "Mexico",
    83: "Peru",
    89: "United States",
    88: "Argentina",
}
NOTES_CURRENCIES = {39: "CLP", 7: "PEN", 31: "MXN", 28: "COP", 1: "ARS", 5: "USD", 38: "EUR"}
NOTES_DOCUMENT_TYPES = {  # country → {document_type_id: bureau code or None}
    253: {
        2: "33",
        32: "34",
        37: "39",
        41: "41",
        16: "61",
        17: "56",
        54: "52",
        46: "110",
        47: "111",
        48: "112",
    },
    83: {96: "01", 97: "03", 98: "07", 99: "08", 100: "09", 109: "20"},
    66: {82: None, 83: None, 84: None, 87: None, 88: None},
    80: {76: "I", 77: "E", 78: "T"},
    88: {111: None},
}
#: What models.documents.currency_places answered before the catalogue (0 = whole units).
WHOLE_UNIT_TYPES_BEFORE = {2, 16, 17, 31, 32, 37, 41, 54, 82, 83, 84, 87, 88}


# --------------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------------


def test_countries() -> None:
    assert {c.country_id: c.name for c in COUNTRIES.values()} == NOTES_COUNTRIES
    assert list(COUNTRIES) == [253, 66, 80, 83, 89, 88]  # Koywe's order, the accounts messages' order
    rows = {
        c.iso_code: (c.country_id, c.tax_bureau, c.phone_prefix, currency(c.currency_id).code)
        for c in COUNTRIES.values()
    }
    assert rows == {
        "CL": (253, "SII", "+56", "CLP"),
        "CO": (66, "DIAN", "+57", "COP"),
        "MX": (80, "SAT", "+52", "MXN"),
        "PE": (83, "SUNAT", "+51", "PEN"),
        "US": (89, "IRS", "+1", "USD"),
        "AR": (88, "ARCA", "+54", "ARS"),
    }
    assert {c.iso_code: c.account_tax_id_types for c in COUNTRIES.values()} == {
        "CL": ("CL-RUT",),
        "CO": ("CO-NIT",),
        "MX": ("MX-RFC",),
        "PE": ("PE-RUC",),
        "US": ("US-EIN", "US-SSN"),
        "AR": ("AR-CUIT",),
    }
    assert country(catalogue.PERU).tax_id_types == ("PE-RUC", "PE-DNI")
    assert country(catalogue.MEXICO).generic_tax_id_codes == ("XAXX010101000", "XEXX010101000")
    every_type = [kind for c in COUNTRIES.values() for kind in c.tax_id_types]
    assert len(every_type) == len(set(every_type))  # a tax id type belongs to one country's table
    for c in COUNTRIES.values():
        assert set(c.account_tax_id_types) <= set(c.tax_id_types)
        assert c.tax_id_types[0] == c.account_tax_id_types[0]  # the companies' type first
        assert c.tax_id_types == tuple(dict.fromkeys(c.tax_id_types))


def test_currencies() -> None:
    assert {c.currency_id: c.code for c in CURRENCIES.values()} == NOTES_CURRENCIES
    assert {c.code: c.decimals for c in CURRENCIES.values()} == {
        "CLP": 0,
        "PEN": 2,
        "MXN": 2,
        "COP": 0,  # whole pesos in practice (API_NOTES "Documents"), though ISO 4217 says 2
        "ARS": 2,
        "USD": 2,
        "EUR": 2,
    }
    assert currency(39).unit == Decimal(1) and currency(7).unit == Decimal("0.01")


def test_document_types_agree_with_notes() -> None:
    for country_id, types in NOTES_DOCUMENT_TYPES.items():
        for type_id, code in types.items():
            entry = document_type(type_id)
            assert entry.country_id == country_id, entry
            if code is not None:
                assert entry.taxbureau_code == code, entry
    noted = {t for types in NOTES_DOCUMENT_TYPES.values() for t in types}
    assert set(DOCUMENT_TYPES) - noted == {31}  # Chile purchase invoice, from Koywe's example only
    assert document_type(31).kind == "purchase_invoice" and document_type(31).country_id == 253


def test_document_type_fields() -> None:
    kinds = {t.document_type_id: t.kind for t in DOCUMENT_TYPES.values()}
    assert kinds == {
        2: "invoice",
        32: "invoice",
        37: "receipt",
        41: "receipt",
        16: "credit_note",
        17: "debit_note",
        54: "waybill",
        46: "export_invoice",
        47: "export_debit_note",
        48: "export_credit_note",
        31: "purchase_invoice",
        96: "invoice",
        97: "receipt",
        98: "credit_note",
        99: "debit_note",
        100: "waybill",
        109: "retention",
        82: "invoice",
        83: "credit_note",
        84: "debit_note",
        87: "receipt",
        88: "credit_note",
        76: "invoice",
        77: "credit_note",
        78: "waybill",
        111: "invoice",
    }
    assert {t.document_type_id: t.series_prefix for t in DOCUMENT_TYPES.values() if t.series_prefix} == {
        96: "F",
        97: "B",
        100: "T",
        109: "R",
    }
    assert {t.document_type_id for t in DOCUMENT_TYPES.values() if not t.receiver_required} == {
        37,
        41,
        97,
        87,
    }
    assert {t.document_type_id for t in DOCUMENT_TYPES.values() if t.whole_units} == WHOLE_UNIT_TYPES_BEFORE
    for entry in DOCUMENT_TYPES.values():
        assert entry.kind in DOCUMENT_KINDS
        assert entry.country_id in COUNTRIES
        assert entry.taxbureau_code is None or isinstance(entry.taxbureau_code, str)
        local = currency(country(entry.country_id).currency_id)
        # Whole units exactly when the usual currency is the local whole-unit one (exports are foreign).
        assert entry.whole_units == (local.decimals == 0 and not entry.kind.startswith("export")), entry
        assert entry.series_prefix is None or entry.country_id == catalogue.PERU


def test_every_entry_names_its_source() -> None:
    entries = [*COUNTRIES.values(), *CURRENCIES.values(), *DOCUMENT_TYPES.values()]
    for entry in entries:
        assert entry.source.strip(), entry
        assert "../shared" not in entry.source and "/work/" not in entry.source, entry
        assert "API_NOTES" not in entry.source, entry  # a file only developers have: never cited
    assert "../shared" not in (catalogue.__doc__ or "")


def test_catalogue_is_pure() -> None:
    tree = ast.parse(Path(catalogue.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in ("airflow", "koywe_provider")}


# --------------------------------------------------------------------------------------------------
# Lookups and unknown entries
# --------------------------------------------------------------------------------------------------


def test_lookups() -> None:
    assert (
        country(253).name == "Chile" and country("253") is country(253) and country(" 83 ").iso_code == "PE"
    )
    assert country_by_iso_code("cl") is country(253)
    assert (
        country_of_tax_id_type("pe-dni") is country(83) and country_of_tax_id_type("CO-NOP").iso_code == "CO"
    )
    assert currency("39").code == "CLP"
    assert document_type("96").taxbureau_code == "01" and document_type(96).series_prefix == "F"
    assert [t.document_type_id for t in document_types_of(83)] == [96, 97, 98, 99, 100, 109]
    assert [t.document_type_id for t in document_types_of("80")] == [76, 77, 78]
    assert document_types_of(89) == ()  # Koywe has US accounts; the project knows no US document type
    assert country_of_document_type(96) is country(83) and country_of_document_type("111").name == "Argentina"
    assert sum(len(document_types_of(c)) for c in COUNTRIES) == len(DOCUMENT_TYPES)
    assert COUNTRIES.get(1) is None and 96 in DOCUMENT_TYPES and "96" not in DOCUMENT_TYPES


@pytest.mark.parametrize(
    ("lookup", "value", "field", "names"),
    [
        (country, 1, "country_id", "253 Chile"),
        (country, "Chile", "country_id", "89 United States"),
        (country, True, "country_id", "88 Argentina"),
        (country_by_iso_code, "BR", "iso_code", "CL"),
        (country_of_tax_id_type, "EXT", "tax_id_type", "PE-DNI"),
        (currency, 0, "currency_id", "39 CLP"),
        (document_type, 999, "document_type_id", "96"),
        (document_type, "F96", "document_type_id", "111"),
        (document_type, None, "document_type_id", "2"),
        (document_types_of, 1, "country_id", "253 Chile"),
        (country_of_document_type, 3, "document_type_id", "2"),
    ],
)
def test_unknown_entries(lookup, value: object, field: str, names: str) -> None:
    with pytest.raises(UnknownCatalogueEntry) as info:
        lookup(value)
    error = info.value
    assert isinstance(error, KeyError)
    assert (error.field, error.value) == (field, value)
    assert str(error).startswith(f"unknown Koywe {field} {value!r}; known: ")
    assert names in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again)) == (UnknownCatalogueEntry, str(error))


def test_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        COUNTRIES[1] = country(253)  # type: ignore[index]
    with pytest.raises(AttributeError):
        country(253).name = "Chili"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# Rounding and precision
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency_id", "amount", "expected"),
    [
        (39, Decimal("1404.5"), Decimal("1405")),
        (39, Decimal("1404.49"), Decimal("1404")),
        (39, Decimal("-0.5"), Decimal("-1")),  # half away from zero
        (28, Decimal("7404.3"), Decimal("7404")),
        (7, Decimal("40.665"), Decimal("40.67")),
        (7, Decimal("40.664"), Decimal("40.66")),
        (7, "1.005", Decimal("1.01")),  # read as Decimal("1.005"), not the float 1.00499…
        (31, 7, Decimal("7.00")),
        (5, Decimal("0.125"), Decimal("0.13")),
    ],
)
def test_currency_quantize(currency_id: int, amount: Any, expected: Decimal) -> None:
    result = currency(currency_id).quantize(amount)
    assert result == expected
    assert result.as_tuple().exponent == expected.as_tuple().exponent


def test_currency_places_as_before() -> None:
    for currency_id in CURRENCIES:
        for type_id in [None, *DOCUMENT_TYPES, 999]:
            assert currency_places(currency_id, type_id) == (0 if currency_id in (39, 28) else 2)
    assert currency_places(999) == 2 and currency_places(999, 2) == 2  # unknown currency: cents
    for type_id in [*DOCUMENT_TYPES, 999, None]:
        assert currency_places(None, type_id) == (0 if type_id in WHOLE_UNIT_TYPES_BEFORE else 2)
    assert currency_places("39") == 0 and currency_places(None, "82") == 0 and currency_places("x") == 2


# --------------------------------------------------------------------------------------------------
# The modules that read the catalogue
# --------------------------------------------------------------------------------------------------


def test_readers_use_the_catalogue() -> None:
    from koywe_provider import models
    from koywe_provider.models import accounts, documents, references, taxids

    assert documents.currency_places is currency_places is models.currency_places
    assert sorted(models.WHOLE_UNIT_CURRENCIES) == [28, 39]
    for name in (
        "INTERNAL_REFERENCE_CODE",
        "internal_reference",
        "internal_reference_number",
        "is_internal_reference",
    ):
        assert getattr(documents, name) is getattr(references, name) is getattr(models, name)

    assert {int(c) for c in accounts.Country} == set(COUNTRIES)
    assert list(accounts.COUNTRIES) == list(COUNTRIES)
    for country_id, rules in accounts.COUNTRIES.items():
        entry = country(country_id)
        assert (rules.name, rules.region, rules.tax_id_types) == (
            entry.name,
            entry.iso_code,
            entry.account_tax_id_types,
        )

    assert sorted(taxids.GENERIC_MX_RFCS) == sorted(country(catalogue.MEXICO).generic_tax_id_codes)
    for kind in taxids.KNOWN_TAX_ID_TYPES:  # every type whose code is checked has a country
        country_of_tax_id_type(kind)


def test_sample_generator_uses_catalogue_ids() -> None:
    from koywe_samples import generate_lines

    for line in generate_lines(60, seed=2):
        header = line["document"]["header"]
        kind = document_type(header["document_type_id"])
        home = country_of_document_type(kind.document_type_id)
        assert header["currency_id"] == home.currency_id
        assert header["issuer_country_id"] == header["receiver_country_id"] == home.country_id
        assert header["issuer_tax_id_type"] == home.tax_id_types[0]
        assert header["receiver_tax_id_type"] in home.tax_id_types
        if kind.series_prefix:
            assert header["document_sequence_code"].startswith(kind.series_prefix)


# --------------------------------------------------------------------------------------------------
# Koywe's notes and examples (../shared/koywe, absent from a fresh clone)
# --------------------------------------------------------------------------------------------------


def _notes_section(title: str) -> str:
    if not API_NOTES.is_file():
        pytest.skip(f"Koywe notes not found at {API_NOTES} (a fresh clone has no ../shared)")
    text = API_NOTES.read_text(encoding="utf-8")
    assert f"## {title}" in text, f"API_NOTES has no section {title!r}"
    return " ".join(text.split(f"## {title}", 1)[1].split("\n## ", 1)[0].split())


def test_tables_agree_with_api_notes_text() -> None:
    accounts = _notes_section("Accounts")
    listed = re.search(r"Countries: (.*?)\.", accounts)
    assert listed
    countries = {int(i): name for i, name in re.findall(r"(\d+) ([A-Z][a-z]+(?: [A-Z][a-z]+)?)", listed[1])}
    assert countries == {c.country_id: c.name for c in COUNTRIES.values()}

    tables = _notes_section("Reference ids seen in Koywe's tables")
    listed = re.search(r"Currencies: (.*?)\.", tables)
    assert listed
    assert {int(i): code for i, code in re.findall(r"(\d+) ([A-Z]{3})", listed[1])} == {
        c.currency_id: c.code for c in CURRENCIES.values()
    }

    listed = re.search(r"Document types \(issued\): (.*?)\. Taxes:", tables)
    assert listed
    seen = 0
    for segment in listed[1].split(";"):
        name, entries = segment.strip().split(" ", 1)
        home = next(c for c in COUNTRIES.values() if c.name == name)
        for ids, parenthesis in re.findall(r"(\d+(?:/\d+)*) [^,(]+?(?: \(([^)]*)\))?(?:,|$)", entries):
            type_ids = [int(i) for i in ids.split("/")]
            parts = [p.strip() for p in parenthesis.split(",")] if parenthesis else []
            codes = parts[0].removeprefix("SII ").split("/") if parts else [None] * len(type_ids)
            for type_id, code in zip(type_ids, codes, strict=True):
                entry = document_type(type_id)
                seen += 1
                assert entry.country_id == home.country_id, entry
                assert code is None or entry.taxbureau_code == code, entry
                if len(parts) > 1:  # Peru: "(01, series F001)"
                    assert entry.series_prefix == parts[1].removeprefix("series ")[0], entry
    assert seen == len(DOCUMENT_TYPES) - 1  # all but 31, known from Koywe's example only


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}{key}", item
            yield from _walk(item, f"{path}{key}.")
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, path)


def _example_fields() -> list[tuple[str, str, Any]]:
    if not REQUESTS.is_dir():
        pytest.skip(f"Koywe reference examples not found at {REQUESTS} (a fresh clone has no ../shared)")
    fields = []
    for path in sorted(REQUESTS.glob("*.json")):
        if path.name in PLACEHOLDER_EXAMPLES:
            continue
        for key, value in _walk(json.loads(path.read_text(encoding="utf-8"))):
            fields.append((path.name, key, value))
    assert fields, f"no example request in {REQUESTS}"
    return fields


@pytest.mark.parametrize(
    ("suffix", "lookup"),
    [
        ("document_type_id", document_type),
        ("currency_id", currency),
        ("country_id", country),  # country_id, issuer_/receiver_/address_country_id…
        ("tax_id_type", country_of_tax_id_type),
    ],
)
def test_example_ids_are_known(suffix: str, lookup) -> None:
    seen = set()
    unknown = []
    for name, key, value in _example_fields():
        if key.rsplit(".", 1)[-1].endswith(suffix) and value not in (None, ""):
            seen.add(str(value))
            try:
                lookup(value)
            except UnknownCatalogueEntry as exc:
                unknown.append(f"{name}: {key} = {value!r} ({exc.field})")
    assert seen, f"no {suffix} in Koywe's examples"
    assert not unknown, "\n".join(unknown)


def test_placeholder_example_is_only_placeholders() -> None:
    if not REQUESTS.is_dir():
        pytest.skip(f"Koywe reference examples not found at {REQUESTS} (a fresh clone has no ../shared)")
    for name in PLACEHOLDER_EXAMPLES:
        body = json.loads((REQUESTS / name).read_text(encoding="utf-8"))
        assert body["registration_tax_id_type"] == "registration_tax_id_type"
        with pytest.raises(UnknownCatalogueEntry):
            country(body["country_id"])
