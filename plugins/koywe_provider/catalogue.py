"""Koywe's reference tables: countries, currencies and document types, and their lookups.

Koywe names countries, currencies and document types by its **own** numeric ids (``country_id`` 253
Chile, ``currency_id`` 39 CLP, ``document_type_id`` 2 Chile factura), never by ISO codes nor by the
tax bureau's codes (the Chile factura is SII type 33, the Peru factura SUNAT type ``"01"``). This module
is the project's single copy of those tables; every other module reads them from here.

Sources (each entry names its own in ``source``): Koywe docs "Create a new account"
(``POST /accounts``: ``country_id``, ``registration_tax_id_type``, phone formats); Koywe's OpenAPI
``DocumentPost`` (``POST /documents``: ``header.document_type_id`` of Chile, which documents need a
receiver); Koywe's Postman examples "Create new documents" per country; and the project's Koywe notes
(``API_NOTES``, "Reference ids seen in Koywe's tables").

API, one rule for all:

* :func:`country`, :func:`country_by_iso_code`, :func:`country_of_tax_id_type`, :func:`currency`,
  :func:`document_type`, :func:`document_types_of` and :func:`country_of_document_type` return the
  entry or raise :class:`UnknownCatalogueEntry` (a :class:`KeyError`) naming the field, the unknown
  value and the known ones. Ids are accepted as ``int`` or digit string (``96`` or ``"96"``), as
  Koywe sends both.
* :data:`COUNTRIES`, :data:`CURRENCIES` and :data:`DOCUMENT_TYPES` are read-only mappings ``int id →
  entry`` in Koywe's order: iterate them, test ``in``, or ``.get(id)`` for ``None`` instead of an error
  (``int`` keys only).
* :func:`currency_places` is lenient on purpose (it reads raw payloads before validation): unknown ids
  fall back to 2 decimals.

Pure module: no Airflow import, no other ``koywe_provider`` import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Literal, TypeVar, get_args

__all__ = [
    "ARGENTINA",
    "CHILE",
    "COLOMBIA",
    "COUNTRIES",
    "CURRENCIES",
    "DEFAULT_PLACES",
    "DOCUMENT_KINDS",
    "DOCUMENT_TYPES",
    "MEXICO",
    "NOTE_TYPES",
    "PERU",
    "UNITED_STATES",
    "Country",
    "Currency",
    "DocumentKind",
    "DocumentType",
    "UnknownCatalogueEntry",
    "country",
    "country_by_iso_code",
    "country_of_document_type",
    "country_of_tax_id_type",
    "currency",
    "currency_places",
    "document_type",
    "document_types_of",
    "note_type",
]

#: Koywe ``country_id`` values (Koywe docs "Create a new account", ``POST /accounts``).
CHILE, COLOMBIA, MEXICO, PERU, UNITED_STATES, ARGENTINA = 253, 66, 80, 83, 89, 88

#: Decimal places of an amount whose currency is unknown (Koywe's usual precision).
DEFAULT_PLACES = 2

#: What a document is, whatever its country calls it.
DocumentKind = Literal[
    "invoice",
    "receipt",
    "credit_note",
    "debit_note",
    "waybill",
    "export_invoice",
    "export_credit_note",
    "export_debit_note",
    "retention",
    "purchase_invoice",
]
DOCUMENT_KINDS: tuple[str, ...] = get_args(DocumentKind)

_T = TypeVar("_T")


class UnknownCatalogueEntry(KeyError):
    """A Koywe id or code that the catalogue does not know.

    ``field`` is what was looked up (``"country_id"``, ``"currency_id"``, ``"document_type_id"``,
    ``"iso_code"``, ``"tax_id_type"``), ``value`` the value given; ``str()`` also lists the known ones.
    """

    def __init__(self, field: str, value: object, known: str) -> None:
        self.field = field
        self.value = value
        self.known = known
        super().__init__(f"unknown Koywe {field} {value!r}; known: {known}")

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])

    def __reduce__(self) -> tuple:
        return type(self), (self.field, self.value, self.known)


@dataclass(frozen=True, slots=True)
class Country:
    """A country Koywe issues documents in.

    :ivar country_id: Koywe's id (not ISO): 253 Chile, 66 Colombia, 80 Mexico, 83 Peru, 89 United
        States, 88 Argentina.
    :ivar iso_code: ISO 3166-1 alpha-2 (also the ``phonenumbers`` region).
    :ivar tax_id_types: the Koywe tax id types of the country's table that the project knows, the
        companies' type first (``("PE-RUC", "PE-DNI")``).
    :ivar account_tax_id_types: the ``registration_tax_id_type`` values ``POST /accounts`` accepts.
    :ivar phone_prefix: E.164 country calling code (``"+56"``).
    :ivar tax_bureau: the tax authority's short name (``"SII"``).
    :ivar currency_id: Koywe id of the local currency.
    :ivar generic_tax_id_codes: codes the bureau defines for a receiver without a tax id (Mexico's SAT
        generic RFCs).
    """

    country_id: int
    iso_code: str
    name: str
    tax_id_types: tuple[str, ...]
    account_tax_id_types: tuple[str, ...]
    phone_prefix: str
    tax_bureau: str
    currency_id: int
    source: str
    generic_tax_id_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Currency:
    """A currency of Koywe's currency table; ``decimals`` is the precision of amounts in it."""

    currency_id: int
    code: str  # ISO 4217
    name: str
    decimals: int
    source: str

    @property
    def unit(self) -> Decimal:
        """The smallest amount: ``Decimal("1")`` for whole units, ``Decimal("0.01")`` for cents."""
        return Decimal(1).scaleb(-self.decimals)

    def quantize(self, amount: Decimal | int | str) -> Decimal:
        """``amount`` rounded half-up to the currency's places: CLP ``1404.5`` → ``1405``, PEN
        ``40.665`` → ``40.67``. Ints and numeric strings are read with ``Decimal(str(x))``."""
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
        return value.quantize(self.unit, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class DocumentType:
    """A document type of Koywe's table (``GET /document_types``), issued side.

    :ivar document_type_id: Koywe's id, what ``header.document_type_id`` carries (**not** the bureau code).
    :ivar country_id: the issuing country (Koywe id).
    :ivar name: the document's local name.
    :ivar kind: what it is, see :data:`DocumentKind`.
    :ivar taxbureau_code: the tax bureau's code for it, as a string (SII ``"33"``, SUNAT ``"01"``, CFDI
        ``"I"``), compare with ``str(header.document_type_taxbureau)``; ``None`` where the project's
        sources do not give it.
    :ivar receiver_required: the receiver (``receiver_tax_id_*``, name, address) must be given
        (Koywe's OpenAPI: invoices, credit and debit notes, not receipts unless nominative; waybills
        and retentions name their addressee, a CFDI always has a receiver).
    :ivar whole_units: amounts are whole units when the document carries no ``currency_id`` (its
        usual currency is CLP or COP); export documents are in a foreign currency.
    :ivar series_prefix: first letter of the ``document_sequence_code`` (Peru ``F001``, ``B001``…)
        where it is fixed by the type.
    """

    document_type_id: int
    country_id: int
    name: str
    kind: DocumentKind
    taxbureau_code: str | None
    receiver_required: bool
    whole_units: bool
    source: str
    series_prefix: str | None = None


# --------------------------------------------------------------------------------------------------
# The tables
# --------------------------------------------------------------------------------------------------

_NOTES = "API_NOTES 'Reference ids seen in Koywe's tables'"
_ACCOUNTS = "Koywe docs 'Create a new account' (POST /accounts) and API_NOTES 'Accounts'"
_OPENAPI_CHILE = "OpenAPI DocumentPost header.document_type_id (Chile) and " + _NOTES
_DIAN = "; code: DIAN technical annex, 'Tipo de documento'"

_COUNTRIES = (
    Country(CHILE, "CL", "Chile", ("CL-RUT",), ("CL-RUT",), "+56", "SII", 39, _ACCOUNTS),
    Country(
        COLOMBIA,
        "CO",
        "Colombia",
        # CO-NOP: Koywe example colombia__create_new_documents_invoice_with_a_foreign_receiver…;
        # CO-CC (cédula): free-text type of the project's tax id notes (models.taxids).
        ("CO-NIT", "CO-CC", "CO-NOP"),
        ("CO-NIT",),
        "+57",
        "DIAN",
        28,
        _ACCOUNTS,
    ),
    Country(
        MEXICO,
        "MX",
        "Mexico",
        ("MX-RFC",),
        ("MX-RFC",),
        "+52",
        "SAT",
        31,
        _ACCOUNTS + "; generic RFCs: " + _NOTES,
        # XAXX010101000 national receiver without RFC ("público en general"), XEXX010101000 foreign.
        generic_tax_id_codes=("XAXX010101000", "XEXX010101000"),
    ),
    # PE-DNI: Peru boletas to a consumer (Koywe's boleta examples; models.taxids validates it).
    Country(PERU, "PE", "Peru", ("PE-RUC", "PE-DNI"), ("PE-RUC",), "+51", "SUNAT", 7, _ACCOUNTS),
    Country(
        UNITED_STATES,
        "US",
        "United States",
        ("US-EIN", "US-SSN"),
        ("US-EIN", "US-SSN"),
        "+1",
        "IRS",
        5,
        _ACCOUNTS,
    ),
    # ARCA replaced AFIP (Argentina's tax bureau) in October 2024; Koywe's account fields are the same.
    Country(ARGENTINA, "AR", "Argentina", ("AR-CUIT",), ("AR-CUIT",), "+54", "ARCA", 1, _ACCOUNTS),
)

_CURRENCIES = (
    Currency(39, "CLP", "Chilean peso", 0, _NOTES),
    Currency(7, "PEN", "Peruvian sol", 2, _NOTES),
    Currency(31, "MXN", "Mexican peso", 2, _NOTES),
    # ISO 4217 gives COP 2 decimals, but Colombian amounts are whole pesos in practice (API_NOTES
    # "Documents", Koywe's Colombia examples).
    Currency(28, "COP", "Colombian peso", 0, _NOTES + " and API_NOTES 'Documents'"),
    Currency(1, "ARS", "Argentine peso", 2, _NOTES),
    Currency(5, "USD", "US dollar", 2, _NOTES),
    Currency(38, "EUR", "Euro", 2, _NOTES),
)

_DOCUMENT_TYPES = (
    # id, country, name, kind, bureau code, receiver_required, whole_units, source[, series_prefix]
    # Chile (SII DTE codes)
    DocumentType(2, CHILE, "Factura electrónica", "invoice", "33", True, True, _OPENAPI_CHILE),
    DocumentType(32, CHILE, "Factura exenta electrónica", "invoice", "34", True, True, _OPENAPI_CHILE),
    DocumentType(37, CHILE, "Boleta electrónica", "receipt", "39", False, True, _OPENAPI_CHILE),
    DocumentType(41, CHILE, "Boleta exenta electrónica", "receipt", "41", False, True, _OPENAPI_CHILE),
    DocumentType(16, CHILE, "Nota de crédito electrónica", "credit_note", "61", True, True, _OPENAPI_CHILE),
    DocumentType(17, CHILE, "Nota de débito electrónica", "debit_note", "56", True, True, _OPENAPI_CHILE),
    # Waybills name their addressee (every Koywe waybill example carries the receiver).
    DocumentType(54, CHILE, "Guía de despacho electrónica", "waybill", "52", True, True, _OPENAPI_CHILE),
    # Exports are invoiced in a foreign currency (Koywe's export examples: USD), hence not whole units.
    DocumentType(
        46, CHILE, "Factura de exportación electrónica", "export_invoice", "110", True, False, _OPENAPI_CHILE
    ),
    DocumentType(
        47,
        CHILE,
        "Nota de débito de exportación electrónica",
        "export_debit_note",
        "111",
        True,
        False,
        _OPENAPI_CHILE,
    ),
    DocumentType(
        48,
        CHILE,
        "Nota de crédito de exportación electrónica",
        "export_credit_note",
        "112",
        True,
        False,
        _OPENAPI_CHILE,
    ),
    # Not in Koywe's published type list; Koywe's example uses id 31. SII code 46 (DTE type table).
    DocumentType(
        31,
        CHILE,
        "Factura de compra electrónica",
        "purchase_invoice",
        "46",
        True,
        True,
        "Koywe example chile__create_new_documents_purchase_invoice_factura_de_compra_electr_nica.json"
        "; code: SII DTE types",
    ),
    # Peru (SUNAT comprobante codes; series from Koywe's Peru examples: F001, B001, T001, R001)
    DocumentType(96, PERU, "Factura electrónica", "invoice", "01", True, False, _NOTES, series_prefix="F"),
    # A boleta names its customer only from 700 soles (Koywe example "receipt under 700 soles").
    DocumentType(
        97, PERU, "Boleta de venta electrónica", "receipt", "03", False, False, _NOTES, series_prefix="B"
    ),
    # Notes take the series of the document they modify: FC01/FD01 for a factura, BC01 for a boleta.
    DocumentType(98, PERU, "Nota de crédito electrónica", "credit_note", "07", True, False, _NOTES),
    DocumentType(99, PERU, "Nota de débito electrónica", "debit_note", "08", True, False, _NOTES),
    DocumentType(
        100,
        PERU,
        "Guía de remisión electrónica",
        "waybill",
        "09",
        True,
        False,
        _NOTES + "; series: Koywe example per__create_new_documents_bill_of_lading…",
        series_prefix="T",
    ),
    DocumentType(
        109,
        PERU,
        "Comprobante de retención electrónico",
        "retention",
        "20",
        True,
        False,
        _NOTES + "; series: Koywe example per__retention_receipt_with_reference_number…",
        series_prefix="R",
    ),
    # Colombia (DIAN). 82's code from Koywe's Colombia POST /documents response; DIAN codes 91/92 of
    # the notes from DIAN's technical annex ("Tipo de documento"); the POS codes are not in the sources.
    DocumentType(
        82,
        COLOMBIA,
        "Factura electrónica de venta",
        "invoice",
        "01",
        True,
        True,
        _NOTES + "; code: Koywe response postman__post_documents_response_sample_colombia_account.json",
    ),
    DocumentType(83, COLOMBIA, "Nota crédito electrónica", "credit_note", "91", True, True, _NOTES + _DIAN),
    DocumentType(84, COLOMBIA, "Nota débito electrónica", "debit_note", "92", True, True, _NOTES + _DIAN),
    # The POS equivalent document may go to an anonymous final consumer.
    DocumentType(87, COLOMBIA, "Documento equivalente electrónico POS", "receipt", None, False, True, _NOTES),
    DocumentType(
        88,
        COLOMBIA,
        "Nota de crédito de documento equivalente POS",
        "credit_note",
        None,
        True,
        True,
        _NOTES,
    ),
    # Mexico (CFDI TipoDeComprobante). A CFDI always names its receiver, with a generic RFC if need be.
    DocumentType(76, MEXICO, "Factura de ingreso (CFDI I)", "invoice", "I", True, False, _NOTES),
    DocumentType(77, MEXICO, "Factura de egreso (CFDI E)", "credit_note", "E", True, False, _NOTES),
    DocumentType(78, MEXICO, "Factura de traslado (CFDI T)", "waybill", "T", True, False, _NOTES),
    # Argentina: ARCA (ex AFIP) comprobante type 1 is the Factura A.
    DocumentType(
        111, ARGENTINA, "Factura A", "invoice", "1", True, False, _NOTES + "; code: ARCA comprobante types"
    ),
)

#: Koywe ``country_id`` → :class:`Country`, in Koywe's order (read-only).
COUNTRIES: Mapping[int, Country] = MappingProxyType({c.country_id: c for c in _COUNTRIES})
#: Koywe ``currency_id`` → :class:`Currency` (read-only).
CURRENCIES: Mapping[int, Currency] = MappingProxyType({c.currency_id: c for c in _CURRENCIES})
#: Koywe ``document_type_id`` → :class:`DocumentType`, grouped by country (read-only).
DOCUMENT_TYPES: Mapping[int, DocumentType] = MappingProxyType(
    {t.document_type_id: t for t in _DOCUMENT_TYPES}
)

_BY_ISO = {c.iso_code: c for c in _COUNTRIES}
_BY_TAX_ID_TYPE = {kind: c for c in _COUNTRIES for kind in c.tax_id_types}
_TYPES_OF = {
    c.country_id: tuple(t for t in _DOCUMENT_TYPES if t.country_id == c.country_id) for c in _COUNTRIES
}


# --------------------------------------------------------------------------------------------------
# Lookups
# --------------------------------------------------------------------------------------------------


def _id(value: object) -> int | None:
    """``96`` or ``"96"`` → 96; anything else (``None``, ``True``, ``"F96"``) → ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _entry(table: Mapping[int, _T], value: object) -> _T | None:
    key = _id(value)
    return None if key is None else table.get(key)


def _known_countries() -> str:
    return ", ".join(f"{c.country_id} {c.name}" for c in _COUNTRIES)


def country(country_id: int | str) -> Country:
    """The country of Koywe ``country_id`` (``253`` → Chile).

    :raises UnknownCatalogueEntry: not one of Koywe's countries.
    """
    entry = _entry(COUNTRIES, country_id)
    if entry is None:
        raise UnknownCatalogueEntry("country_id", country_id, _known_countries())
    return entry


def country_by_iso_code(iso_code: str) -> Country:
    """The country of an ISO 3166-1 alpha-2 code, case-insensitive (``"cl"`` → Chile).

    :raises UnknownCatalogueEntry: not a country Koywe issues in.
    """
    entry = _BY_ISO.get(iso_code.strip().upper()) if isinstance(iso_code, str) else None
    if entry is None:
        raise UnknownCatalogueEntry("iso_code", iso_code, ", ".join(_BY_ISO))
    return entry


def country_of_tax_id_type(tax_id_type: str) -> Country:
    """The country whose tax id table holds ``tax_id_type``, case-insensitive (``"PE-DNI"`` → Peru).

    The type says whose table it is, not where the party lives: Koywe's Colombia example types a
    foreign receiver ``CO-NOP``.

    :raises UnknownCatalogueEntry: a type the catalogue does not know.
    """
    entry = _BY_TAX_ID_TYPE.get(tax_id_type.strip().upper()) if isinstance(tax_id_type, str) else None
    if entry is None:
        raise UnknownCatalogueEntry("tax_id_type", tax_id_type, ", ".join(_BY_TAX_ID_TYPE))
    return entry


def currency(currency_id: int | str) -> Currency:
    """The currency of Koywe ``currency_id`` (``39`` → CLP, 0 decimals).

    :raises UnknownCatalogueEntry: not in Koywe's currency table as the project knows it.
    """
    entry = _entry(CURRENCIES, currency_id)
    if entry is None:
        known = ", ".join(f"{c.currency_id} {c.code}" for c in _CURRENCIES)
        raise UnknownCatalogueEntry("currency_id", currency_id, known)
    return entry


def document_type(document_type_id: int | str) -> DocumentType:
    """The document type of Koywe ``document_type_id`` (``96`` → Peru factura, SUNAT ``"01"``).

    :raises UnknownCatalogueEntry: not a document type the catalogue knows.
    """
    entry = _entry(DOCUMENT_TYPES, document_type_id)
    if entry is None:
        known = ", ".join(str(t.document_type_id) for t in _DOCUMENT_TYPES)
        raise UnknownCatalogueEntry("document_type_id", document_type_id, known)
    return entry


def document_types_of(country_id: int | str) -> tuple[DocumentType, ...]:
    """Every document type issued in ``country_id``, in Koywe's order.

    :raises UnknownCatalogueEntry: not one of Koywe's countries.
    """
    return _TYPES_OF[country(country_id).country_id]


def country_of_document_type(document_type_id: int | str) -> Country:
    """The country that issues ``document_type_id`` (``96`` → Peru).

    :raises UnknownCatalogueEntry: not a document type the catalogue knows.
    """
    return COUNTRIES[document_type(document_type_id).country_id]


def currency_places(currency_id: int | str | None, document_type_id: int | str | None = None) -> int:
    """Decimal places of amounts in ``currency_id``: 0 for CLP (39) and COP (28), 2 otherwise.

    Without a currency, a document type whose amounts are whole units (Chile's and Colombia's
    domestic types) gives 0, anything else 2. Lenient: unknown or malformed ids give
    :data:`DEFAULT_PLACES` rather than an error, since raw payloads are read before validation.
    """
    if currency_id is not None:
        entry = _entry(CURRENCIES, currency_id)
        return DEFAULT_PLACES if entry is None else entry.decimals
    kind = _entry(DOCUMENT_TYPES, document_type_id)
    return 0 if kind is not None and kind.whole_units else DEFAULT_PLACES


# --------------------------------------------------------------------------------------------------
# Notes: which document type credits or debits which
# --------------------------------------------------------------------------------------------------

#: Original ``document_type_id`` → (its credit note's type, its debit note's type); ``None`` where the
#: country has none (a Colombia POS document has no debit note; a Mexico CFDI has no debit note: another
#: CFDI de ingreso charges more). Sources: Koywe's examples (Chile export notes 48/47 referencing a 46;
#: Peru notes 98/99 referencing a 96 factura or a 97 boleta; Colombia 83/84 referencing an 82, 88 a POS
#: 87) and API_NOTES' type table (Chile 16 NC / 17 ND; Mexico 77 egreso).
NOTE_TYPES: Mapping[int, tuple[int | None, int | None]] = MappingProxyType(
    {
        2: (16, 17),
        32: (16, 17),
        37: (16, 17),
        41: (16, 17),
        46: (48, 47),
        96: (98, 99),
        97: (98, 99),
        82: (83, 84),
        87: (88, None),
        76: (77, None),
    }
)


def note_type(document_type_id: int | str, kind: str) -> DocumentType | None:
    """The type of the ``kind`` (``"credit_note"`` | ``"debit_note"``) that modifies a document of
    ``document_type_id`` (``2`` → 16 Chile NC; ``76``, ``"debit_note"`` → ``None``); ``None`` when the
    country has no such note for it.

    :raises UnknownCatalogueEntry: ``document_type_id`` is not a type the catalogue knows.
    :raises ValueError: ``kind`` is neither ``credit_note`` nor ``debit_note``.
    """
    original = document_type(document_type_id)
    if kind not in ("credit_note", "debit_note"):
        raise ValueError(f"kind must be credit_note or debit_note, got {kind!r}")
    pair = NOTE_TYPES.get(original.document_type_id, (None, None))
    found = pair[0] if kind == "credit_note" else pair[1]
    return None if found is None else DOCUMENT_TYPES[found]
