"""Country rules of Koywe documents: one table of what Koywe and each tax bureau accept, with sources.

:mod:`koywe_provider.catalogue` says *what exists* (countries, currencies, document types, tax id types);
this module says *what a document of each type may carry*, as the tax bureau will check it:

* :data:`DOCUMENT_RULES` — per Koywe ``document_type_id`` (Koywe's id, never the bureau's code): the
  currencies it may be issued in, the tax types its lines may carry (``None``: not checked, no source
  lists them; ``()``: none, an exempt or export document), how many days back its ``issue_date`` may
  lie, the amount above which a receipt must identify its buyer, and whether ``options.gross_values``
  applies. Whether a receiver is required is the catalogue's :attr:`DocumentType.receiver_required`,
  exposed here as :attr:`DocumentRules.receiver_required`.
* :data:`TAX_TYPES` — per Koywe ``tax_type_id``: its country, name (IVA, IGV, IEPS…) and the
  ``tax_percentage`` values the law allows.
* :data:`TIMEZONES` — the civil time zone of each country: "today" and "in the future" are the
  country's (a Chilean document dated tomorrow in Santiago is in the future even when UTC is there).
* :data:`PE_RETENTION_REGIMES` — SUNAT's retention regimes (Koywe's Peru retention examples).

Every entry carries ``source``: a Koywe endpoint or documentation page (the OpenAPI ``DocumentPost``
schema, the request examples of Koywe's Postman collection "koywe-billing" by name), a law or bureau
resolution, or ``docs/COUNTRY_RULES.md`` of this project where the project had to decide (sources
disagree, or none gives a figure). Dates are calendar days in the country's time zone.

API: :func:`document_rules`, :func:`tax_rule`, :func:`local_today`, :func:`earliest_issue_date`. A
document type the catalogue does not know raises
:class:`~koywe_provider.catalogue.UnknownCatalogueEntry`.

Pure module: no Airflow import; imports only :mod:`koywe_provider.catalogue`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from types import MappingProxyType
from zoneinfo import ZoneInfo

from koywe_provider import catalogue
from koywe_provider.catalogue import ARGENTINA, CHILE, COLOMBIA, MEXICO, PERU, UNITED_STATES

__all__ = [
    "DOCUMENT_RULES",
    "GROSS_VALUES_TYPES",
    "PE_RETENTION_REGIMES",
    "TAX_TYPES",
    "TIMEZONES",
    "DocumentRules",
    "TaxRule",
    "document_rules",
    "earliest_issue_date",
    "local_today",
    "tax_rule",
]

_DECISIONS = "docs/COUNTRY_RULES.md"
_OPENAPI = "Koywe OpenAPI DocumentPost (POST /documents)"
_POSTMAN = "Koywe Postman collection 'koywe-billing'"

#: Civil time zone of each country (IANA names): the country's "today".
TIMEZONES: Mapping[int, str] = MappingProxyType(
    {
        CHILE: "America/Santiago",
        PERU: "America/Lima",
        COLOMBIA: "America/Bogota",
        MEXICO: "America/Mexico_City",
        ARGENTINA: "America/Argentina/Buenos_Aires",
        UNITED_STATES: "America/New_York",
    }
)


@dataclass(frozen=True, slots=True)
class TaxRule:
    """A Koywe tax type (``details[].taxes[].tax_type_id``).

    :ivar tax_type_id: Koywe's id (``387`` Chile IVA), not the bureau's code.
    :ivar country_id: the country whose documents may carry it.
    :ivar name: the tax's local name (``"IVA"``, ``"IGV"``, ``"IEPS"``).
    :ivar rates: the ``tax_percentage`` values allowed (0-100), compared as numbers (``19 == 19.00``).
    :ivar source: where the id and the rates come from.
    """

    tax_type_id: int
    country_id: int
    name: str
    rates: tuple[Decimal, ...]
    source: str


@dataclass(frozen=True, slots=True)
class DocumentRules:
    """What a document of one Koywe type may carry.

    :ivar document_type_id: Koywe's id (``2`` Chile factura, ``97`` Peru boleta).
    :ivar currencies: Koywe ``currency_id`` values it may be issued in.
    :ivar tax_types: Koywe ``tax_type_id`` values its lines may carry; ``()`` none (exempt and export
        documents), ``None`` not checked (no source lists them).
    :ivar max_days_back: how many calendar days before the country's today ``issue_date`` may lie
        (``0``: today only). No document may be dated after the country's today.
    :ivar receiver_id_above: a receipt whose ``totals.total_amount`` (in the country's currency) is above
        this amount must identify its buyer (``receiver_tax_id_type`` and ``receiver_tax_id_code``);
        ``None`` when no such threshold applies.
    :ivar gross_values: whether ``options.gross_values`` (prices VAT included) applies to this type.
    :ivar source: where the row's figures come from (currencies; taxes; dates; threshold).
    """

    document_type_id: int
    currencies: tuple[int, ...]
    tax_types: tuple[int, ...] | None
    max_days_back: int
    source: str
    receiver_id_above: Decimal | None = None
    gross_values: bool = False

    @property
    def document_type(self) -> catalogue.DocumentType:
        """The catalogue entry (name, kind, country, bureau code, ``receiver_required``)."""
        return catalogue.DOCUMENT_TYPES[self.document_type_id]

    @property
    def country(self) -> catalogue.Country:
        """The issuing country."""
        return catalogue.COUNTRIES[self.document_type.country_id]

    @property
    def receiver_required(self) -> bool:
        """The receiver must be named (the catalogue's rule: Koywe's OpenAPI, invoices and notes)."""
        return self.document_type.receiver_required


def _rates(*values: str | int) -> tuple[Decimal, ...]:
    return tuple(Decimal(str(v)) for v in values)


# --------------------------------------------------------------------------------------------------
# Tax types (Koywe ids as Koywe's request examples send them; rates as the law allows)
# --------------------------------------------------------------------------------------------------

_TAXES = (
    TaxRule(
        387,
        CHILE,
        "IVA",
        _rates(19),
        f"{_POSTMAN}, Chile 'Create new documents - Invoice'; rate: DL 825 (Ley del IVA) art. 14",
    ),
    TaxRule(
        413,
        PERU,
        "IGV",
        _rates(18, 10),
        f"{_POSTMAN}, Peru 'Create new documents - Invoice'; rates: TUO Ley del IGV art. 17 (16 %) + "
        "IPM 2 % = 18 %; Ley 31556 (MYPE restaurants and hotels) 10 %",
    ),
    # Sources disagree on 412: the project's Koywe notes give 16 %, Koywe's own example 18 %.
    TaxRule(
        412,
        PERU,
        "IGV",
        _rates(16, 18),
        f"{_POSTMAN}, Peru 'Receipt under 700 soles' (18 %) and {_DECISIONS} 'Peru 412' (16 %)",
    ),
    TaxRule(414, PERU, "IGV exonerado", _rates(0), f"{_DECISIONS} 'Tax types'"),
    TaxRule(
        425,
        PERU,
        "IGV exportación",
        _rates(0),
        f"{_POSTMAN}, Peru 'Invoice on exports use case'",
    ),
    TaxRule(
        388,
        COLOMBIA,
        "IVA",
        _rates(19, 5, 0),
        f"{_POSTMAN}, Colombia 'Create new documents - Invoice'; rates: Estatuto Tributario art. 468 "
        "(19 %), 468-1 (5 %), 477 (exempt 0 %)",
    ),
    TaxRule(
        362,
        MEXICO,
        "IVA",
        _rates(16, 8, 0),
        f"{_POSTMAN}, México 'Invoice I'; rates: LIVA art. 1 (16 %), art. 2-A (0 %), Decreto de estímulos "
        "fiscales región fronteriza (8 %)",
    ),
    TaxRule(
        368,
        MEXICO,
        "IEPS",
        _rates(3, 6, 7, 8, 9, 25, "26.5", 30, 53, 160),
        f"{_POSTMAN}, México 'Invoice I with VAT and IEPS taxes' (3 %); rates: LIEPS art. 2",
    ),
)

#: Koywe ``tax_type_id`` → :class:`TaxRule` (read-only).
TAX_TYPES: Mapping[int, TaxRule] = MappingProxyType({t.tax_type_id: t for t in _TAXES})

#: SUNAT retention regimes (``header.additional.pe_retention_header.pe_sunat_retention_system_code``)
#: and their percentage: catálogo 23 of SUNAT's electronic receipts; Koywe's Peru "Retention receipt"
#: examples send ``"01"`` with ``"3.00"``.
PE_RETENTION_REGIMES: Mapping[str, Decimal] = MappingProxyType({"01": Decimal(3), "02": Decimal(6)})

#: Document types whose ``options.gross_values`` applies: Chile's receipts (Koywe OpenAPI
#: ``options.gross_values``: "only valid for electronic receipts").
GROSS_VALUES_TYPES = frozenset({37, 41})

# --------------------------------------------------------------------------------------------------
# Document types
# --------------------------------------------------------------------------------------------------

_CLP, _PEN, _MXN, _COP, _ARS, _USD, _EUR = 39, 7, 31, 28, 1, 5, 38
_ALL_CURRENCIES = tuple(catalogue.CURRENCIES)

_CL_CURRENCY = "SII: domestic DTE amounts are in pesos (CLP)"
_CL_DATES = f"SII publishes no age limit for FchEmis: 60 days, {_DECISIONS} 'Dates'"
_CL = f"{_CL_CURRENCY}; taxes: {_POSTMAN} Chile; dates: {_CL_DATES}"
_CL_EXEMPT = f"{_CL_CURRENCY}; taxes: none (exempt document, SII type 34/41); dates: {_CL_DATES}"
_CL_EXPORT = (
    f"currency: any of Koywe's table ({_POSTMAN} Chile exports send USD); taxes: none (exports are "
    f"exempt, DL 825 art. 12 E); dates: {_CL_DATES}"
)
_PE_CURRENCY = "SUNAT catálogo 02 (PEN, USD, EUR)"
_PE_DATES = "3 days: Resolución de Superintendencia 000003-2023/SUNAT (facturas and linked notes)"
_PE = f"currencies: {_PE_CURRENCY}; taxes: {_POSTMAN} Peru; dates: {_PE_DATES}"
_PE_BOLETA = (
    f"currencies: {_PE_CURRENCY}; taxes: {_POSTMAN} Peru; dates: today only (Koywe, Peru boletas; "
    f"{_DECISIONS} 'Dates'); buyer identified above S/ 700: Reglamento de Comprobantes de Pago "
    "(RS 007-99/SUNAT) art. 8 num. 3.3 and Koywe example 'Receipt under 700 soles'"
)
_PE_RETENTION = (
    f"currency: PEN (a retention receipt is in soles, SUNAT); taxes: {_POSTMAN} Peru 'Retention "
    f"receipt'; dates: {_PE_DATES}"
)
_CO_DATES = f"DIAN publishes no age limit: 60 days, {_DECISIONS} 'Dates'"
_CO = f"currencies: COP, USD, EUR (DIAN: foreign currency with TRM); taxes: {_POSTMAN} Colombia; dates: {_CO_DATES}"
_CO_POS = f"currency: COP; taxes: {_POSTMAN} Colombia POS; dates: {_CO_DATES}"
_MX_DATES = (
    "2 days: a CFDI is certified within 72 hours of its date (RMF 2.7.2.x, Anexo 20), counted from the "
    f"date's first hour, {_DECISIONS} 'Dates'"
)
_MX = f"currencies: MXN, USD, EUR (CFDI with TipoCambio); taxes: {_POSTMAN} México; dates: {_MX_DATES}"
_AR = f"currencies: ARS, USD; taxes: no Koywe source lists Argentina's, not checked; dates: 10 days ({_DECISIONS})"

_PE_TAXES = (413, 412, 414, 425)
_MX_TAXES = (362, 368)

_DOCUMENT_RULES = (
    # Chile (America/Santiago). Amounts in CLP, whole pesos (catalogue: CLP has 0 decimals).
    DocumentRules(2, (_CLP,), (387,), 60, _CL),
    DocumentRules(32, (_CLP,), (), 60, _CL_EXEMPT),
    DocumentRules(37, (_CLP,), (387,), 60, _CL, gross_values=True),
    DocumentRules(41, (_CLP,), (), 60, _CL_EXEMPT, gross_values=True),
    DocumentRules(16, (_CLP,), (387,), 60, _CL),
    DocumentRules(17, (_CLP,), (387,), 60, _CL),
    DocumentRules(54, (_CLP,), (387,), 60, _CL),
    DocumentRules(31, (_CLP,), (387,), 60, _CL),
    DocumentRules(46, _ALL_CURRENCIES, (), 60, _CL_EXPORT),
    DocumentRules(47, _ALL_CURRENCIES, (), 60, _CL_EXPORT),
    DocumentRules(48, _ALL_CURRENCIES, (), 60, _CL_EXPORT),
    # Peru (America/Lima).
    DocumentRules(96, (_PEN, _USD, _EUR), _PE_TAXES, 3, _PE),
    DocumentRules(97, (_PEN, _USD, _EUR), _PE_TAXES, 0, _PE_BOLETA, receiver_id_above=Decimal(700)),
    DocumentRules(98, (_PEN, _USD, _EUR), _PE_TAXES, 3, _PE),
    DocumentRules(99, (_PEN, _USD, _EUR), _PE_TAXES, 3, _PE),
    DocumentRules(100, (_PEN, _USD, _EUR), _PE_TAXES, 3, _PE),
    DocumentRules(109, (_PEN,), _PE_TAXES, 3, _PE_RETENTION),
    # Colombia (America/Bogota). COP whole pesos (catalogue).
    DocumentRules(82, (_COP, _USD, _EUR), (388,), 60, _CO),
    DocumentRules(83, (_COP, _USD, _EUR), (388,), 60, _CO),
    DocumentRules(84, (_COP, _USD, _EUR), (388,), 60, _CO),
    DocumentRules(87, (_COP,), (388,), 60, _CO_POS),
    DocumentRules(88, (_COP,), (388,), 60, _CO_POS),
    # Mexico (America/Mexico_City). Koywe's CFDI T examples carry IVA too: accepted as Koywe sends them.
    DocumentRules(76, (_MXN, _USD, _EUR), _MX_TAXES, 2, _MX),
    DocumentRules(77, (_MXN, _USD, _EUR), _MX_TAXES, 2, _MX),
    DocumentRules(78, (_MXN, _USD, _EUR), _MX_TAXES, 2, _MX),
    # Argentina (America/Argentina/Buenos_Aires).
    DocumentRules(111, (_ARS, _USD), None, 10, _AR),
)

#: Koywe ``document_type_id`` → :class:`DocumentRules`: every document type of the catalogue (read-only).
DOCUMENT_RULES: Mapping[int, DocumentRules] = MappingProxyType(
    {r.document_type_id: r for r in _DOCUMENT_RULES}
)


# --------------------------------------------------------------------------------------------------
# Lookups
# --------------------------------------------------------------------------------------------------


def document_rules(document_type_id: int | str) -> DocumentRules:
    """The rules of Koywe ``document_type_id`` (``96`` or ``"96"``).

    :raises UnknownCatalogueEntry: a document type the catalogue does not know.
    """
    return DOCUMENT_RULES[catalogue.document_type(document_type_id).document_type_id]


def tax_rule(tax_type_id: int | str) -> TaxRule | None:
    """The tax type of Koywe ``tax_type_id``, or ``None`` when no source lists it."""
    if isinstance(tax_type_id, bool):
        return None
    try:
        return TAX_TYPES.get(int(tax_type_id))
    except (TypeError, ValueError):
        return None


@cache
def _zone(country_id: int) -> ZoneInfo:
    return ZoneInfo(TIMEZONES[country_id])


def local_today(country_id: int, now: datetime | None = None) -> date:
    """The calendar date in ``country_id``'s time zone at ``now`` (aware; naive means UTC; default: the
    system clock)."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return _local_today(country_id, now)


@lru_cache(maxsize=256)
def _local_today(country_id: int, now: datetime) -> date:
    # A file's lines are judged at one ``now``: one conversion per country, not one per line.
    return now.astimezone(_zone(country_id)).date()


def earliest_issue_date(document_type_id: int | str, now: datetime | None = None) -> date:
    """The oldest ``issue_date`` a document of this type may carry at ``now`` (in its country).

    :raises UnknownCatalogueEntry: a document type the catalogue does not know.
    """
    rules = document_rules(document_type_id)
    return local_today(rules.document_type.country_id, now) - timedelta(days=rules.max_days_back)


def _check_table() -> None:
    """Every catalogue document type has rules and every tax type a country: a missing row is a bug."""
    missing = set(catalogue.DOCUMENT_TYPES) ^ set(DOCUMENT_RULES)
    if missing:  # pragma: no cover - guarded by the tests
        raise RuntimeError(f"country_rules and catalogue disagree on document types {sorted(missing)}")


_check_table()
