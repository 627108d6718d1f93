"""A document against its country's rules (:mod:`koywe_provider.country_rules`), as the bureau checks it.

:func:`country_rule_errors` reads a :class:`~koywe_provider.models.documents.KoyweDocument` or a raw
payload (leniently: values that do not parse are the field validators' to report) and returns every
``(dotted field, message)`` that breaks a rule of the document's type: its currency, a receiver it must
name, tax types and rates of its country, the amounts' decimals, negative totals, the issuer's tax id
type and generic codes, its date against the country's today, a Peru boleta above the bureau's
threshold without the buyer's id, ``options.gross_values`` off Chile's boletas, and Peru's retention
regimes. Arithmetic (sums and rounding) is :func:`koywe_provider.models.documents.arithmetic_errors`'s.

Pure: no Airflow import.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel

from koywe_provider import catalogue, country_rules
from koywe_provider.models.taxids import is_generic_tax_id

__all__ = ["MAX_QUANTITY_DECIMALS", "country_rule_errors"]

#: Decimals of ``quantity`` and ``unit_price`` (Koywe OpenAPI ``details[]``: "up to 6 decimals").
MAX_QUANTITY_DECIMALS = 6
_SIX = Decimal(1).scaleb(-MAX_QUANTITY_DECIMALS)
_AMOUNT_FIELDS = ("modifier_amount", "total_taxes", "total_amount_line")
_TOTAL_FIELDS = ("net_amount", "taxes_amount", "total_amount")
_RECEIVER_FIELDS = ("receiver_tax_id_type", "receiver_tax_id_code", "receiver_legal_name")


def _get(obj: Any, name: str) -> Any:
    if type(obj) is dict:
        return obj.get(name)
    if isinstance(obj, BaseModel):
        return getattr(obj, name, None)  # declared fields and extras alike
    if isinstance(obj, Mapping):
        return obj.get(name)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _dec(value: Any) -> Decimal | None:
    if type(value) is Decimal:
        return value if value.is_finite() else None
    if value is None or isinstance(value, bool):
        return None
    try:
        result = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def _date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()) if len(value.strip()) == 10 else None
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _fmt(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _currency_label(currency_id: int) -> str:
    entry = catalogue.CURRENCIES.get(currency_id)
    return f"{currency_id} {entry.code}" if entry else str(currency_id)


_WIDE = Context(prec=80)
_UNITS = {places: Decimal(1).scaleb(-places) for places in range(7)}


def _has_places(value: Decimal, places: int) -> bool:
    """``value`` needs no more than ``places`` decimals (``1400.00`` has 0)."""
    if value.as_tuple().exponent >= -places:  # type: ignore[operator]
        return True
    return value == value.quantize(_UNITS.get(places) or Decimal(1).scaleb(-places), context=_WIDE)


def country_rule_errors(
    document: Any, *, now: datetime | None = None, check_dates: bool = True
) -> list[tuple[str, str]]:
    """Every rule of :mod:`koywe_provider.country_rules` that ``document`` breaks, as ``(field, message)``.

    :param document: a ``KoyweDocument`` or a raw ``POST /documents`` payload.
    :param now: the moment "today" is taken at, in each country's own time zone (aware, naive = UTC;
        default: the system clock).
    :param check_dates: ``False`` leaves ``issue_date`` unchecked against today (a stored payload being
        hashed or compared, not a document about to be sent).
    :returns: ``[]`` when the document type is unknown (the field validator names it) or every rule holds.
    """
    header = _get(document, "header") or {}
    type_id = _int(_get(header, "document_type_id"))
    rules = country_rules.DOCUMENT_RULES.get(type_id) if type_id is not None else None
    if rules is None:
        return []
    kind = rules.document_type
    country = rules.country
    what = f"a {kind.name} (document_type_id {type_id}, {country.name})"
    errors: list[tuple[str, str]] = []

    # Currency
    currency_id = _int(_get(header, "currency_id"))
    currency = catalogue.CURRENCIES.get(currency_id) if currency_id is not None else None
    if currency_id is not None and currency_id not in rules.currencies:
        allowed = ", ".join(_currency_label(c) for c in rules.currencies)
        known = "" if currency else " (not in Koywe's currency table)"
        errors.append(
            ("header.currency_id", f"{currency_id}{known} is not a currency of {what}; allowed: {allowed}")
        )

    # Receiver
    if kind.receiver_required:
        for name in _RECEIVER_FIELDS:
            if not _text(_get(header, name)):
                errors.append((f"header.{name}", f"required: {what} names its receiver (Koywe OpenAPI)"))

    # Issuer: a company of the document's country, never a generic "no tax id" code
    issuer_type = _text(_get(header, "issuer_tax_id_type")).upper()
    issuer_code = _get(header, "issuer_tax_id_code")
    if issuer_type and issuer_type not in country.account_tax_id_types:
        errors.append(
            (
                "header.issuer_tax_id_type",
                f"{issuer_type} is not a tax id type of a {country.name} issuer; {what} is issued under "
                f"{', '.join(country.account_tax_id_types)}",
            )
        )
    if is_generic_tax_id(issuer_type, issuer_code):
        errors.append(
            (
                "header.issuer_tax_id_code",
                f"{_text(issuer_code)} is a generic code for a receiver without a tax id; it never "
                "identifies an issuer",
            )
        )
    for party in ("issuer", "receiver"):
        if _text(_get(header, f"{party}_tax_id_code")) and not _text(_get(header, f"{party}_tax_id_type")):
            errors.append((f"header.{party}_tax_id_type", f"required with {party}_tax_id_code"))

    # Date: never after the country's today, never older than the bureau accepts
    issue_date = _date(_get(header, "issue_date"))
    if check_dates and issue_date is not None:
        today = country_rules.local_today(country.country_id, now)
        zone = country_rules.TIMEZONES[country.country_id]
        earliest = country_rules.earliest_issue_date(type_id, now)
        if issue_date > today:
            errors.append(
                (
                    "header.issue_date",
                    f"{issue_date} is in the future: today in {country.name} is {today} ({zone})",
                )
            )
        elif issue_date < earliest:
            if rules.max_days_back == 0:
                limit = f"{what} must carry today's date in {country.name} ({today}, {zone})"
            else:
                limit = (
                    f"{what} may be dated at most {rules.max_days_back} days before today in {country.name} "
                    f"({today}, {zone}), so from {earliest}"
                )
            errors.append(("header.issue_date", f"{issue_date} is too old: {limit}"))

    # Options
    options = _get(document, "options") or {}
    gross = _get(options, "gross_values")
    if gross not in (None, False, 0, "0", "") and type_id not in country_rules.GROSS_VALUES_TYPES:
        errors.append(
            (
                "options.gross_values",
                f"applies only to Chile's boletas (document_type_id 37, 41), not to {what} (Koywe OpenAPI "
                "options.gross_values)",
            )
        )

    # Lines: tax types and rates, decimals
    places = currency.decimals if currency is not None else None
    details = _get(document, "details")
    details = list(details) if isinstance(details, list | tuple) else []
    country_taxes = [t for t in country_rules.TAX_TYPES.values() if t.country_id == country.country_id]
    for i, line in enumerate(details):
        if line is None or isinstance(line, str | int | float):
            continue
        for name in ("quantity", "unit_price"):
            value = _dec(_get(line, name))
            if value is not None and not _has_places(value, MAX_QUANTITY_DECIMALS):
                errors.append(
                    (
                        f"details.{i}.{name}",
                        f"{_fmt(value)} has more than {MAX_QUANTITY_DECIMALS} decimals (Koywe OpenAPI)",
                    )
                )
        if places is not None:
            for name in _AMOUNT_FIELDS:
                value = _dec(_get(line, name))
                if value is not None and not _has_places(value, places):
                    errors.append((f"details.{i}.{name}", _places_message(value, currency)))
        taxes = _get(line, "taxes")
        for j, tax in enumerate(taxes if isinstance(taxes, list | tuple) else []):
            errors.extend(_tax_errors(f"details.{i}.taxes.{j}", tax, rules, what, country, country_taxes))
            amount = _dec(_get(tax, "tax_amount"))
            if places is not None and amount is not None and not _has_places(amount, places):
                errors.append((f"details.{i}.taxes.{j}.tax_amount", _places_message(amount, currency)))

    # Totals: decimals, no negative totals
    totals = _get(document, "totals") or {}
    for name in _TOTAL_FIELDS:
        value = _dec(_get(totals, name))
        if value is None:
            continue
        if name != "taxes_amount" and value < 0:
            errors.append(
                (f"totals.{name}", f"{_fmt(value)} is negative: a document's totals are never below 0")
            )
        if places is not None and not _has_places(value, places):
            errors.append((f"totals.{name}", _places_message(value, currency)))

    # A receipt above the bureau's threshold names its buyer
    if rules.receiver_id_above is not None:
        errors.extend(_buyer_errors(header, totals, rules, what, country, currency))

    # Peru retention receipts: SUNAT's regime and its percentage
    if type_id == 109:
        errors.extend(_retention_errors(header))
    return errors


def _places_message(value: Decimal, currency: catalogue.Currency | None) -> str:
    assert currency is not None
    if currency.decimals == 0:
        return f"{_fmt(value)} is not a whole amount: {currency.code} amounts have no decimals"
    return f"{_fmt(value)} has more than {currency.decimals} decimals, the precision of {currency.code}"


def _tax_errors(
    where: str,
    tax: Any,
    rules: country_rules.DocumentRules,
    what: str,
    country: catalogue.Country,
    country_taxes: list[country_rules.TaxRule],
) -> list[tuple[str, str]]:
    if rules.tax_types is None or tax is None or isinstance(tax, str | int | float):
        return []
    tax_type_id = _int(_get(tax, "tax_type_id"))
    if tax_type_id is None:
        return []
    rule = country_rules.TAX_TYPES.get(tax_type_id)
    ours = ", ".join(f"{t.tax_type_id} {t.name}" for t in country_taxes if t.tax_type_id in rules.tax_types)
    if tax_type_id not in rules.tax_types:
        if not rules.tax_types:
            message = f"{what} carries no taxes (an exempt or export document)"
        elif rule is None:
            message = f"{tax_type_id} is not a Koywe tax type of {country.name}; {what} carries {ours}"
        elif rule.country_id != country.country_id:
            other = catalogue.COUNTRIES[rule.country_id].name
            message = f"{tax_type_id} ({rule.name}) is {other}'s; {what} carries {ours}"
        else:
            message = f"{tax_type_id} ({rule.name}) does not apply to {what}; it carries {ours}"
        return [(f"{where}.tax_type_id", message)]
    assert rule is not None
    rate = _dec(_get(tax, "tax_percentage"))
    if rate is not None and rate not in rule.rates:
        allowed = ", ".join(f"{_fmt(r)}%" for r in rule.rates)
        return [
            (
                f"{where}.tax_percentage",
                f"{_fmt(rate)}% is not a rate of {rule.name} ({tax_type_id}, {country.name}): {allowed}",
            )
        ]
    return []


def _buyer_errors(
    header: Any,
    totals: Any,
    rules: country_rules.DocumentRules,
    what: str,
    country: catalogue.Country,
    currency: catalogue.Currency | None,
) -> list[tuple[str, str]]:
    if _text(_get(header, "receiver_tax_id_type")) and _text(_get(header, "receiver_tax_id_code")):
        return []
    total = _dec(_get(totals, "total_amount"))
    if total is None or currency is None:
        return []
    threshold = rules.receiver_id_above
    assert threshold is not None
    local = catalogue.CURRENCIES[country.currency_id].code
    if currency.currency_id == country.currency_id:
        amount: Decimal | None = total
    else:
        rate = _dec(_get(header, "exchange_rate_value"))
        amount = total * rate if rate is not None and rate > 0 else None
    if amount is not None and amount <= threshold:
        return []
    if amount is None:
        why = (
            f"its total {_fmt(total)} {currency.code} cannot be compared with the bureau's {local} "
            f"{_fmt(threshold)} threshold without header.exchange_rate_value"
        )
    else:
        why = f"its total {_fmt(amount)} {local} is above {local} {_fmt(threshold)}"
    return [
        (
            "header.receiver_tax_id_code",
            f"required: {what} must identify its buyer (receiver_tax_id_type and receiver_tax_id_code) when "
            f"{why} ({country.tax_bureau})",
        )
    ]


def _retention_errors(header: Any) -> list[tuple[str, str]]:
    additional = _get(header, "additional") or {}
    block = _get(additional, "pe_retention_header")
    if not isinstance(block, Mapping):
        return []
    where = "header.additional.pe_retention_header"
    code = block.get("pe_sunat_retention_system_code")
    if code is None:
        return []
    regimes = country_rules.PE_RETENTION_REGIMES
    if str(code).strip() not in regimes:
        known = ", ".join(f"{c} ({_fmt(p)}%)" for c, p in regimes.items())
        return [
            (f"{where}.pe_sunat_retention_system_code", f"{code!r} is not a SUNAT retention regime: {known}")
        ]
    percent = _dec(block.get("pe_sunat_retention_percent"))
    expected = regimes[str(code).strip()]
    if percent is not None and percent != expected:
        return [
            (
                f"{where}.pe_sunat_retention_percent",
                f"{_fmt(percent)} != {_fmt(expected)}, the rate of SUNAT retention regime {str(code).strip()}",
            )
        ]
    return []
