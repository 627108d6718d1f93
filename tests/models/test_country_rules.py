"""The country rules table (``koywe_provider.country_rules``): complete, consistent with the catalogue,
every rule citing a source a user's clone has, and "today" taken in each country's time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from koywe_provider import catalogue, country_rules
from koywe_provider.country_rules import (
    DOCUMENT_RULES,
    TAX_TYPES,
    document_rules,
    earliest_issue_date,
    local_today,
    tax_rule,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "COUNTRY_RULES.md"


def test_every_catalogue_document_type_has_rules_consistent_with_it() -> None:
    assert set(DOCUMENT_RULES) == set(catalogue.DOCUMENT_TYPES)
    for type_id, rules in DOCUMENT_RULES.items():
        country = rules.country.country_id
        assert rules.currencies and set(rules.currencies) <= set(catalogue.CURRENCIES), type_id
        for tax_type_id in rules.tax_types or ():
            assert TAX_TYPES[tax_type_id].country_id == country, (type_id, tax_type_id)
        assert 0 <= rules.max_days_back <= 60, type_id
        assert rules.receiver_required == catalogue.DOCUMENT_TYPES[type_id].receiver_required
        assert country in country_rules.TIMEZONES
        if catalogue.DOCUMENT_TYPES[type_id].kind.startswith("export") or type_id in (32, 41):
            assert rules.tax_types == (), type_id  # exempt and export documents carry no taxes


def test_every_rule_cites_a_source_a_users_clone_has() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for entry in [*DOCUMENT_RULES.values(), *TAX_TYPES.values()]:
        assert entry.source.strip(), entry
        for forbidden in ("../shared", "/work/", "API_NOTES"):
            assert forbidden not in entry.source, entry
        if "docs/COUNTRY_RULES.md" in entry.source:
            assert DOCS.is_file()
    for type_id in DOCUMENT_RULES:
        assert f"| {type_id} |" in text or f" {type_id}," in text or f", {type_id} |" in text, type_id
    for tax in TAX_TYPES.values():
        assert f"| {tax.tax_type_id} |" in text, tax.tax_type_id


def test_lookups() -> None:
    assert document_rules("97").receiver_id_above == Decimal(700)
    assert document_rules(2).currencies == (39,)
    assert tax_rule("387").rates == (Decimal(19),) and tax_rule(999) is None and tax_rule(True) is None
    with pytest.raises(catalogue.UnknownCatalogueEntry, match="document_type_id 33"):
        document_rules(33)


@pytest.mark.parametrize(
    ("now", "country", "today"),
    [
        (datetime(2026, 12, 4, 2, 30, tzinfo=UTC), catalogue.CHILE, date(2026, 12, 3)),  # UTC-3 in summer
        (datetime(2026, 12, 4, 3, 30, tzinfo=UTC), catalogue.CHILE, date(2026, 12, 4)),
        (datetime(2026, 7, 4, 3, 30, tzinfo=UTC), catalogue.CHILE, date(2026, 7, 3)),  # UTC-4 in winter
        (datetime(2026, 12, 4, 4, 59, tzinfo=UTC), catalogue.PERU, date(2026, 12, 3)),
        (datetime(2026, 12, 4, 5, 0, tzinfo=UTC), catalogue.PERU, date(2026, 12, 4)),
        (datetime(2026, 12, 4, 5, 59, tzinfo=UTC), catalogue.MEXICO, date(2026, 12, 3)),
        (datetime(2026, 12, 4, 4, 0), catalogue.COLOMBIA, date(2026, 12, 3)),  # naive = UTC
    ],
)
def test_today_is_the_countrys(now: datetime, country: int, today: date) -> None:
    assert local_today(country, now) == today


def test_earliest_issue_dates() -> None:
    now = datetime(2026, 12, 3, 18, tzinfo=UTC)
    assert earliest_issue_date(97, now) == date(2026, 12, 3)  # Peru boleta: today only
    assert earliest_issue_date(96, now) == date(2026, 11, 30)  # Peru factura: 3 days
    assert earliest_issue_date(76, now) == date(2026, 12, 1)  # Mexico: 72 hours
    assert earliest_issue_date(2, now) == date(2026, 10, 4)  # Chile: 60 days
