"""Pydantic v2 models of a Koywe document payload (``POST /documents`` body) and its validation.

Source: Koywe Billing API ``POST /documents`` (OpenAPI schema ``DocumentPost``) and ``API_NOTES.md``
("Documents", "Reference ids seen in Koywe's tables"). Shape::

    {"options": {...}?, "header": {...}, "details": [{..., "taxes": [{...}]}],
     "references": [{...}]?, "totals": {"net_amount", "taxes_amount", "total_amount"}}

Conventions:

* Money, quantities and percentages are :class:`~decimal.Decimal`, parsed from ``int``, ``float`` or a
  numeric string with ``Decimal(str(x))`` (so ``1400``, ``1400.0`` and ``"1400"`` are equal).
  Amounts are in the document currency (``header.currency_id``); percentages are 0-100.
* Ids Koywe sends as numbers or numeric strings (``document_type_id``, ``currency_id``,
  ``*_country_id``, ``account_id``, ``tax_type_id``…) are ``int``.
* ``reference_code`` is a ``str``: ``5`` → ``"5"``, ``"01"`` (Peru SUNAT motive) stays ``"01"``.
* Unknown fields are kept (``extra="allow"``) and sent back by :meth:`KoyweDocument.to_payload`.
* Reference tables (currencies and their precision, document types) live in
  :mod:`koywe_provider.catalogue`; the internal transaction id reference (code 5) in
  :mod:`koywe_provider.models.references`. Both are re-exported here for existing callers.

Arithmetic rules (exact, in :class:`~decimal.Decimal`, rounded half-up to the currency's places and
with no other slack, see :func:`arithmetic_errors`)::

    line net          = round(quantity * unit_price * (1 + modifier_percentage/100) + modifier_amount)
    tax_amount        = round(line net * tax_percentage / 100)          (each details[].taxes[])
    total_taxes       = Σ taxes[].tax_amount
    total_amount_line = line net + total_taxes
    totals.net_amount   = Σ line nets (± globals_discounts_surcharges)
    totals.taxes_amount = Σ details[].total_taxes   (or, Koywe's "net" rounding, Σ per rate of
                          round(Σ nets at that rate * rate / 100))
    totals.total_amount = net_amount + taxes_amount

Country rules (the document type's currencies, receiver, tax types and rates, dates, thresholds) are
:mod:`koywe_provider.country_rules`, checked by :mod:`koywe_provider.models.country_checks`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from koywe_provider import catalogue
from koywe_provider.catalogue import CURRENCIES, currency_places
from koywe_provider.models.country_checks import country_rule_errors
from koywe_provider.models.references import (
    INTERNAL_REFERENCE_CODE,
    internal_reference,
    internal_reference_number,
    is_internal_reference,
)
from koywe_provider.models.taxids import (
    check_tax_id_type,
    is_generic_tax_id,
    is_known_tax_id_type,
    validate_tax_id,
)

__all__ = [
    "MAX_NUMBER",
    "WHOLE_UNIT_CURRENCIES",
    "DocumentDetail",
    "DocumentHeader",
    "DocumentOptions",
    "DocumentReference",
    "DocumentTax",
    "DocumentTotals",
    "HeaderAdditional",
    "INTERNAL_REFERENCE_CODE",
    "KoyweDocument",
    "MxHeader",
    "PeHeader",
    "arithmetic_errors",
    "currency_places",
    "hash_of_payload",
    "internal_reference",
    "internal_reference_number",
    "is_internal_reference",
    "payload_hash",
    "validate_document",
]

#: Currencies whose amounts are whole units: 39 CLP, 28 COP. Others: 2 dp (0.01).
#: From :mod:`koywe_provider.catalogue`, like :func:`currency_places` (re-exported here).
WHOLE_UNIT_CURRENCIES = frozenset(c.currency_id for c in CURRENCIES.values() if c.decimals == 0)

_FIELDS_ERROR = "koywe_fields"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PAYMENT_CONDITIONS = re.compile(r"^\s*\d+(\s*,\s*\d+)*\s*$")
#: Every number of a document is below this in absolute value (amounts of 15 integral digits: far above
#: any real invoice, and far below what would overflow the arithmetic).
MAX_NUMBER = Decimal(10) ** 15
#: The arithmetic's context: wide enough that no product of bounded numbers is ever inexact or raises.
_ARITHMETIC = Context(prec=80, rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------------------------------
# Scalar parsing
# --------------------------------------------------------------------------------------------------


def _to_decimal(value: Any) -> Any:
    """Parse int, float, Decimal or numeric string into a finite Decimal (``Decimal(str(x))``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | float):
        result = Decimal(str(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"expected a number, got {value!r}") from None
    else:
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    if abs(result) >= MAX_NUMBER:
        raise ValueError(f"{_short(value)} is too large: numbers must be below 10^15 in absolute value")
    return result


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _to_int(value: Any) -> Any:
    """Parse an id sent as int, integral float or digit string (``"96"``) into an int."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer id, got {value!r}")
    if isinstance(value, int):
        result = value
    elif (
        isinstance(value, float)
        and value.is_integer()
        or isinstance(value, str)
        and re.fullmatch(r"\s*-?\d{1,19}\s*", value)
    ):
        result = int(value)
    else:
        raise ValueError(f"expected an integer id, got {_short(repr(value))}")
    if abs(result) >= 2**63:
        raise ValueError(f"{_short(value)} is too large for an id")
    return result


def _to_date(value: Any) -> Any:
    """Accept a ``date`` or an ISO ``YYYY-MM-DD`` string; reject every other spelling."""
    if isinstance(value, datetime):
        raise ValueError(f"expected a date YYYY-MM-DD, got a datetime {value.isoformat()!r}")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a valid calendar date (YYYY-MM-DD)") from None
    raise ValueError(f"expected an ISO date YYYY-MM-DD, got {value!r}")


def _to_reference_code(value: Any) -> Any:
    """``5`` → ``"5"``; strings kept as given (stripped): ``"01"`` stays ``"01"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a reference code, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"expected a reference code such as 5 or '01', got {value!r}")


#: Decimal parsed from int, float or numeric string.
Money = Annotated[Decimal, BeforeValidator(_to_decimal)]
#: Integer id parsed from int or numeric string.
IntId = Annotated[int, BeforeValidator(_to_int)]
#: Date parsed from ``YYYY-MM-DD`` only.
IsoDate = Annotated[date, BeforeValidator(_to_date)]


def _reference_code_out(value: str) -> int | str:
    """Sent back as Koywe's spec types it (integer) unless the spelling matters (``"01"``)."""
    return int(value) if value.isdigit() and not value.startswith("0") else value


#: Reference code normalised to str (``5`` and ``"5"`` compare equal); sent as an int when plainly numeric.
ReferenceCode = Annotated[str, BeforeValidator(_to_reference_code), PlainSerializer(_reference_code_out)]

_CONFIG = ConfigDict(extra="allow", coerce_numbers_to_str=True)


def _fields_error(fields: list[tuple[str, str]]) -> PydanticCustomError:
    """One pydantic error carrying several ``(relative field path, message)`` pairs."""
    summary = "; ".join(f"{f}: {m}" if f else m for f, m in fields)
    return PydanticCustomError(_FIELDS_ERROR, "{summary}", {"summary": summary, "fields": fields})


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


class PeHeader(BaseModel):
    """``header.additional.pe_header`` (Peru): SUNAT ``operation_type`` ("0101" internal sale,
    "0200" export…) and ``signature_id``."""

    model_config = _CONFIG
    operation_type: str | None = None
    signature_id: str | None = None


class MxHeader(BaseModel):
    """``header.additional.mx_header`` (Mexico CFDI): ``receiver_cfdi_usage`` (e.g. "G03", "S01"),
    ``reported_payment_code`` (SAT forma de pago, e.g. "01"), global invoice fields as extras."""

    model_config = _CONFIG
    receiver_cfdi_usage: str | None = None
    reported_payment_code: str | None = None


class HeaderAdditional(BaseModel):
    """``header.additional``: country blocks. ``pe_header`` and ``mx_header`` are typed; the others
    (``co_header``, ``ar_header``, ``mx_exports``, ``mx_shipping``, ``pe_shipping``,
    ``pe_retention_header``…) are kept as given."""

    model_config = _CONFIG
    pe_header: PeHeader | None = None
    mx_header: MxHeader | None = None
    co_header: dict[str, Any] | None = None
    ar_header: dict[str, Any] | None = None


class DocumentHeader(BaseModel):
    """``header``: document type, issue date, currency, issuer and receiver.

    ``document_type_id`` is Koywe's id (2 Chile factura, 37 boleta, 96 Peru factura, 97 boleta,
    82 Colombia factura, 76 Mexico ingreso…), not the tax bureau code, and must be in the catalogue.
    ``issue_date`` (``YYYY-MM-DD``) and ``currency_id`` are required (Koywe's document fields table:
    "Siempre obligatorio"; the OpenAPI leaves the currency optional but every example carries it).
    Tax id types must be Koywe's (:func:`~koywe_provider.models.taxids.check_tax_id_type`: a misspelt
    ``CL-RTU`` is refused; case is normalised). Codes of a checked type are verified and normalised
    to Koywe's format — the issuer's always, the receiver's when its type is the document's country's:
    a foreign receiver's id (an ``MX-RFC`` on a Chile export) is the other country's business and is
    kept as given. A receiver may carry a SAT generic RFC (``XAXX010101000``/``XEXX010101000``), an
    issuer never.
    """

    model_config = _CONFIG

    account_id: IntId | None = None
    document_type_id: IntId
    issue_date: IsoDate
    document_number: IntId | None = None
    document_sequence_code: str | None = None
    received_issued_flag: IntId | None = None
    currency_id: IntId
    exchange_rate_value: Money | None = None
    payment_conditions: str | None = None

    issuer_tax_id_type: str | None = None
    issuer_tax_id_code: str | None = None
    issuer_legal_name: str | None = None
    issuer_address: str | None = None
    issuer_district: str | None = None
    issuer_city: str | None = None
    issuer_state_id: IntId | None = None
    issuer_country_id: IntId | None = None
    issuer_phone: str | None = None
    issuer_activity: str | None = None
    issuer_postalcode: str | None = None

    receiver_tax_id_type: str | None = None
    receiver_tax_id_code: str | None = None
    receiver_legal_name: str | None = None
    receiver_address: str | None = None
    receiver_district: str | None = None
    receiver_city: str | None = None
    receiver_state_id: IntId | None = None
    receiver_country_id: IntId | None = None
    receiver_phone: str | None = None
    receiver_email: str | None = None
    receiver_activity: str | None = None
    receiver_postalcode: str | None = None

    additional: HeaderAdditional | None = None

    @field_validator("payment_conditions")
    @classmethod
    def _payment_conditions(cls, value: str | None) -> str | None:
        if value is not None and not _PAYMENT_CONDITIONS.match(value):
            raise ValueError(f"expected days separated by commas such as '0' or '0,30', got {value!r}")
        return value

    @field_validator("document_type_id")
    @classmethod
    def _document_type_id(cls, value: int) -> int:
        if value in catalogue.DOCUMENT_TYPES:
            return value
        known = ", ".join(str(t) for t in catalogue.DOCUMENT_TYPES)
        codes = [t for t in catalogue.DOCUMENT_TYPES.values() if t.taxbureau_code == str(value)]
        hint = "".join(
            f"; {value} is the {catalogue.COUNTRIES[t.country_id].tax_bureau} code of {t.name}, whose Koywe id "
            f"is {t.document_type_id}"
            for t in codes[:1]
        )
        raise ValueError(
            f"unknown Koywe document_type_id {value} (Koywe's ids, not the tax bureau's codes{hint}); known: {known}"
        )

    @field_validator("issuer_tax_id_type", "receiver_tax_id_type")
    @classmethod
    def _tax_id_type(cls, value: str | None) -> str | None:
        if value is None or not str(value).strip():
            return None
        return check_tax_id_type(value)

    @field_validator("issuer_tax_id_code", "receiver_tax_id_code")
    @classmethod
    def _tax_id_code(cls, value: str | None, info: ValidationInfo) -> str | None:
        party = info.field_name.split("_", 1)[0]
        kind = info.data.get(f"{party}_tax_id_type")
        if value is None:
            return value
        if party == "issuer" and is_generic_tax_id(kind, value):
            raise ValueError(
                f"{str(value).strip()} is a generic code for a receiver without a tax id; it never "
                "identifies an issuer"
            )
        if not is_known_tax_id_type(kind):
            return value
        if party == "receiver" and _is_foreign(kind, info.data.get("document_type_id")):
            if not str(value).strip():
                raise ValueError(f"empty {kind} code")
            return str(value).strip()
        return validate_tax_id(kind, value, allow_generic_rfc=party == "receiver")

    @model_validator(mode="after")
    def _tax_id_code_present(self) -> DocumentHeader:
        errors = [
            (f"{party}_tax_id_code", f"required when {party}_tax_id_type is {kind}")
            for party in ("issuer", "receiver")
            if is_known_tax_id_type(kind := getattr(self, f"{party}_tax_id_type"))
            and not (getattr(self, f"{party}_tax_id_code") or "").strip()
        ]
        if errors:
            raise _fields_error(errors)
        return self


def _is_foreign(tax_id_type: str, document_type_id: Any) -> bool:
    """The type is another country's than the document's (a foreign receiver's id)."""
    document_type = (
        catalogue.DOCUMENT_TYPES.get(document_type_id) if isinstance(document_type_id, int) else None
    )
    if document_type is None:
        return False
    try:
        return catalogue.country_of_tax_id_type(tax_id_type).country_id != document_type.country_id
    except catalogue.UnknownCatalogueEntry:
        return True


class DocumentTax(BaseModel):
    """``details[].taxes[]``: ``tax_type_id`` (387 Chile IVA, 413 Peru IGV, 388 Colombia IVA,
    362 Mexico IVA…), ``tax_percentage`` (0-100) and ``tax_amount`` (document currency)."""

    model_config = _CONFIG
    tax_type_id: IntId
    tax_percentage: Money
    tax_amount: Money


class DocumentDetail(BaseModel):
    """``details[]``: one line. ``line_description`` ≤ 100 chars; ``quantity`` > 0 and
    ``unit_price`` ≥ 0 (up to 6 decimals); ``modifier_amount`` (negative = discount) and/or
    ``modifier_percentage``; ``total_taxes`` and ``total_amount_line`` as computed by the sender."""

    model_config = _CONFIG
    quantity: Annotated[Money, Field(gt=0)]
    unit_price: Annotated[Money, Field(ge=0)]
    line_description: str
    unit_measure: str
    sku: str | None = None
    long_description: str | None = None
    modifier_amount: Money | None = None
    modifier_percentage: Money | None = None
    total_taxes: Money | None = None
    total_amount_line: Money | None = None
    taxes: list[DocumentTax] = Field(default_factory=list)
    additional: dict[str, Any] | None = None

    @field_validator("line_description")
    @classmethod
    def _line_description(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if len(value) > 100:
            raise ValueError(f"at most 100 characters (Koywe limit), got {len(value)}")
        return value


class DocumentReference(BaseModel):
    """``references[]``: a referenced document (credit note → invoice) or, with ``reference_code``
    5, a non-tax document such as the internal transaction id. ``reference_number`` and
    ``reference_document_id`` are mutually exclusive."""

    model_config = _CONFIG
    reference_code: ReferenceCode
    description: str
    document_type_id: IntId | None = None
    reference_number: str | None = None
    reference_document_id: IntId | None = None
    reference_type: IntId | None = None
    reference_date: IsoDate | None = None
    additional: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _number_or_id(self) -> DocumentReference:
        if self.reference_number is not None and self.reference_document_id is not None:
            raise _fields_error(
                [("reference_document_id", "use reference_number or reference_document_id, never both")]
            )
        return self


class DocumentTotals(BaseModel):
    """``totals`` in the document currency. ``net_amount`` is required except with
    ``options.gross_values``; a missing ``taxes_amount`` counts as 0."""

    model_config = _CONFIG
    net_amount: Money | None = None
    taxes_amount: Money | None = None
    total_amount: Money


class DocumentOptions(BaseModel):
    """``options``: ``draft_only``, ``send_email``, ``rounding_type`` ("net" | "gross"),
    ``gross_values`` (Chile boletas priced VAT included), ``template_id``…"""

    model_config = _CONFIG
    draft_only: int | bool | None = None
    send_email: int | bool | None = None
    rounding_type: Literal["net", "gross"] | None = None
    gross_values: int | bool | None = None
    template_id: IntId | None = None


class KoyweDocument(BaseModel):
    """A Koywe document payload (body of ``POST /documents``), validated.

    Build it with :func:`validate_document` (errors as ``DocumentValidationError``) or
    ``KoyweDocument.model_validate(payload)`` (errors as pydantic ``ValidationError``). Arithmetic
    rules: see :func:`arithmetic_errors`.
    """

    model_config = _CONFIG
    header: DocumentHeader
    details: Annotated[list[DocumentDetail], Field(min_length=1)]
    references: list[DocumentReference] = Field(default_factory=list)
    totals: DocumentTotals
    options: DocumentOptions | None = None

    @model_validator(mode="after")
    def _arithmetic_and_country_rules(self, info: ValidationInfo) -> KoyweDocument:
        context = info.context if isinstance(info.context, Mapping) else {}
        errors = country_rule_errors(
            self, now=context.get("now"), check_dates=context.get("check_dates", True)
        )
        known = {field for field, _ in errors}
        errors.extend(e for e in arithmetic_errors(self) if e[0] not in known)
        if errors:
            raise _fields_error(errors)
        return self

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready dict for ``POST /documents``.

        ``None`` fields are dropped; Decimals become ``int`` when integral, else ``float``; dates are
        ISO strings; ids are ints; unknown (extra) fields are kept as received.
        """
        return _jsonable(self.model_dump(mode="python", exclude_none=True))

    @property
    def internal_reference_number(self) -> str | None:
        """``reference_number`` of the first internal reference (code 5), or ``None``."""
        return internal_reference_number(self)


# --------------------------------------------------------------------------------------------------
# Arithmetic
# --------------------------------------------------------------------------------------------------


def _get(obj: Any, name: str) -> Any:
    if type(obj) is dict:
        return obj.get(name)
    if isinstance(obj, BaseModel):
        return getattr(obj, name, None)
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _lenient_decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    if type(value) is Decimal:  # already validated by the model
        return value
    try:
        return _to_decimal(value)
    except ValueError:
        return None


def _lenient_int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return _to_int(value)
    except ValueError:
        return None


def _fmt(value: Decimal) -> str:
    """Display a Decimal without exponent or trailing zeros: 1400.00 → '1400', 18.50 → '18.5'."""
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _line_net(line: Any) -> Decimal | None:
    qty = _lenient_decimal(_get(line, "quantity"))
    price = _lenient_decimal(_get(line, "unit_price"))
    if qty is None or price is None:
        return None
    pct = _lenient_decimal(_get(line, "modifier_percentage")) or Decimal(0)
    amount = _lenient_decimal(_get(line, "modifier_amount")) or Decimal(0)
    return qty * price * (1 + pct / 100) + amount


def arithmetic_errors(document: Any) -> list[tuple[str, str]]:
    """Check a document's amounts; return ``(dotted field, message)`` for every mismatch.

    Works on a :class:`KoyweDocument` or a raw payload dict (unparseable numbers are skipped: they
    are reported by the field validators). Exact: every amount is computed in :class:`~decimal.Decimal`
    (80 digits, so no product of the bounded numbers is ever inexact) and rounded half-up to the
    currency's places (0 for CLP/COP, 2 otherwise; :func:`currency_places`), with no other slack.

    * a line's net is ``quantity × unit_price × (1 + modifier_percentage/100) + modifier_amount``,
      rounded (Koywe "net" rounding: line by line);
    * each ``tax_amount`` is the line net × ``tax_percentage`` / 100, rounded (the unrounded net
      rounded once is accepted too: the same amount when the net needed no rounding);
    * ``total_taxes`` is the sum of the line's ``tax_amount``; ``total_amount_line`` net + taxes;
    * ``totals.net_amount`` the sum of the line nets (with ``globals_discounts_surcharges``);
      ``totals.taxes_amount`` the sum of the lines' taxes, or Koywe's "net" rounding of the document
      (per tax type and rate, the rate applied to the sum of those lines' nets, rounded once);
      ``totals.total_amount`` = ``net_amount`` + ``taxes_amount``.

    With ``options.gross_values`` (Chile boletas, prices VAT included) a line's total is its gross
    ``quantity × unit_price`` (± modifiers), rounded, and ``totals.total_amount`` their sum.
    """
    with localcontext(_ARITHMETIC):
        return _arithmetic_errors(document)


def _arithmetic_errors(document: Any) -> list[tuple[str, str]]:
    header = _get(document, "header") or {}
    details = _get(document, "details")
    details = list(details) if isinstance(details, list | tuple) else []
    totals = _get(document, "totals") or {}
    options = _get(document, "options") or {}
    globals_ = _get(document, "globals_discounts_surcharges")
    places = currency_places(
        _lenient_int(_get(header, "currency_id")), _lenient_int(_get(header, "document_type_id"))
    )
    unit = Decimal(1).scaleb(-places)
    gross = bool(_get(options, "gross_values")) and _get(options, "gross_values") not in ("0", "false")

    def q(value: Decimal) -> Decimal:
        return value.quantize(unit, rounding=ROUND_HALF_UP)

    errors: list[tuple[str, str]] = []
    nets: list[Decimal | None] = []
    line_taxes: list[Decimal | None] = []
    line_totals: list[Decimal | None] = []
    taxable: list[bool] = []
    # (tax_type_id, rate) -> sum of the nets of the lines carrying it: Koywe's document-level rounding.
    groups: dict[tuple[Any, Decimal], Decimal] | None = {}
    for i, line in enumerate(details):
        if not isinstance(line, Mapping | DocumentDetail):
            nets.append(None)
            line_taxes.append(None)
            line_totals.append(None)
            taxable.append(False)
            groups = None
            continue
        raw_net = _line_net(line)
        net = None if raw_net is None else q(raw_net)
        taxes = _get(line, "taxes")
        taxes = list(taxes) if isinstance(taxes, list | tuple) else []
        tax_sum: Decimal | None = Decimal(0)
        has_rate = False
        for j, tax in enumerate(taxes):
            amount = _lenient_decimal(_get(tax, "tax_amount"))
            pct = _lenient_decimal(_get(tax, "tax_percentage"))
            if amount is None or tax_sum is None:
                tax_sum = None
                groups = None
                continue
            tax_sum += amount
            has_rate = has_rate or bool(pct)
            if net is None or pct is None:
                groups = None
                continue
            if groups is not None:
                key = (_get(tax, "tax_type_id"), pct)
                groups[key] = groups.get(key, Decimal(0)) + net
            if not gross:
                expected = q(net * pct / 100)
                if amount not in (expected, q(raw_net * pct / 100)):
                    errors.append(
                        (
                            f"details.{i}.taxes.{j}.tax_amount",
                            f"{_fmt(amount)} != net {_fmt(net)} × {_fmt(pct)}% = {_fmt(expected)}",
                        )
                    )
        total_taxes = _lenient_decimal(_get(line, "total_taxes"))
        if total_taxes is not None and tax_sum is not None and total_taxes != tax_sum:
            errors.append(
                (
                    f"details.{i}.total_taxes",
                    f"{_fmt(total_taxes)} != sum of taxes[].tax_amount {_fmt(tax_sum)}",
                )
            )
        line_tax = total_taxes if total_taxes is not None else tax_sum
        total_line = _lenient_decimal(_get(line, "total_amount_line"))
        if gross:
            if total_line is not None and net is not None and total_line != net:
                errors.append(
                    (
                        f"details.{i}.total_amount_line",
                        f"{_fmt(total_line)} != gross quantity × unit_price {_fmt(net)} (options.gross_values)",
                    )
                )
        elif total_line is not None and net is not None and line_tax is not None:
            expected = net + line_tax
            if total_line != expected:
                errors.append(
                    (
                        f"details.{i}.total_amount_line",
                        f"{_fmt(total_line)} != net {_fmt(net)} + taxes {_fmt(line_tax)} = {_fmt(expected)}",
                    )
                )
        nets.append(net)
        line_taxes.append(line_tax)
        line_totals.append(total_line if total_line is not None else (None if net is None else net))
        taxable.append(has_rate)

    net_amount = _lenient_decimal(_get(totals, "net_amount"))
    taxes_amount = _lenient_decimal(_get(totals, "taxes_amount"))
    total_amount = _lenient_decimal(_get(totals, "total_amount"))

    if gross:
        if total_amount is not None and details and all(t is not None for t in line_totals):
            expected = sum(line_totals, Decimal(0))
            if total_amount != expected:
                errors.append(
                    (
                        "totals.total_amount",
                        f"{_fmt(total_amount)} != sum of details[].total_amount_line {_fmt(expected)}",
                    )
                )
        return errors

    if net_amount is None:
        if totals and _get(totals, "net_amount") is None and isinstance(totals, Mapping | DocumentTotals):
            errors.append(("totals.net_amount", "required (except with options.gross_values)"))
    elif details and all(n is not None for n in nets):
        expected = sum(nets, Decimal(0))
        adjustment = _global_adjustment(globals_, nets, taxable, q)
        if adjustment is not None:
            expected += adjustment
            how = f"sum of line nets {_fmt(expected - adjustment)} + global adjustments {_fmt(adjustment)}"
        elif len(nets) > 1:
            how = "sum of line nets " + " + ".join(_fmt(n) for n in nets) + f" = {_fmt(expected)}"
        else:
            how = f"line net {_fmt(expected)}"
        if net_amount != expected:
            errors.append(("totals.net_amount", f"{_fmt(net_amount)} != {how}"))

    if taxes_amount is not None and not globals_ and details and all(t is not None for t in line_taxes):
        expected = sum(line_taxes, Decimal(0))
        document_level = (
            None
            if groups is None
            else sum((q(base * rate / 100) for (_, rate), base in groups.items()), Decimal(0))
        )
        if taxes_amount not in (expected, document_level):
            also = (
                f" (or {_fmt(document_level)}, rounded once per rate on the document's nets)"
                if document_level is not None and document_level != expected
                else ""
            )
            errors.append(
                (
                    "totals.taxes_amount",
                    f"{_fmt(taxes_amount)} != sum of details[].total_taxes {_fmt(expected)}{also}",
                )
            )

    if total_amount is not None and net_amount is not None:
        taxes = taxes_amount if taxes_amount is not None else Decimal(0)
        expected = net_amount + taxes
        if total_amount != expected:
            errors.append(
                (
                    "totals.total_amount",
                    f"{_fmt(total_amount)} != net_amount {_fmt(net_amount)} + taxes_amount "
                    f"{_fmt(taxes)} = {_fmt(expected)}",
                )
            )
    return errors


def _global_adjustment(globals_: Any, nets: list, taxable: list[bool], q: Any) -> Decimal | None:
    """Net effect of ``globals_discounts_surcharges`` (DA/DE discounts, RA/RE surcharges on taxable/
    exempt lines, type ``$`` amount or ``%`` of those lines' nets); ``None`` when there are none."""
    if not isinstance(globals_, list) or not globals_:
        return None
    total = Decimal(0)
    for item in globals_:
        code = str(_get(item, "discount_surcharge_code") or "").upper()
        value = _lenient_decimal(_get(item, "discount_surcharge_value")) or Decimal(0)
        sign = -1 if code.startswith("D") else 1
        if str(_get(item, "discount_surcharge_type") or "$").strip() == "%":
            on_taxable = code.endswith("A")
            base = sum((n for n, t in zip(nets, taxable, strict=True) if t == on_taxable), Decimal(0))
            value = q(base * value / 100)
        total += sign * value
    return total


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def _join(*parts: Any) -> str:
    return ".".join(str(p) for p in parts if p != "" and p is not None)


def _convert(exc: ValidationError) -> list[tuple[str, str]]:
    """Pydantic errors → ``(dotted path, message)``, expanding multi-field errors."""
    errors: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = _join(*err["loc"])
        if err["type"] == _FIELDS_ERROR:
            for field, message in err["ctx"]["fields"]:
                errors.append((_join(loc, field), message))
            continue
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "missing":
            message = "required field is missing"
        errors.append((loc or "document", message))
    return errors


def validate_document(
    payload: Mapping[str, Any],
    *,
    reference: str | None = None,
    now: datetime | None = None,
    check_dates: bool = True,
) -> KoyweDocument:
    """Validate a ``POST /documents`` payload and return the typed :class:`KoyweDocument`.

    :param payload: the document as parsed JSON (numbers may be strings).
    :param reference: the caller's transaction id, named in the error message.
    :param now: the moment the document's ``issue_date`` is judged at, in its country's time zone
        (:mod:`koywe_provider.country_rules`: no future date, no older than the bureau accepts);
        default the system clock. Pass the run's clock in pipelines and tests.
    :param check_dates: ``False`` skips the date limits (a stored payload being compared or hashed).
    :raises koywe_provider.exceptions.DocumentValidationError: with **every** problem found as
        ``(field, message)``, e.g. ``("details.0.total_amount_line",
        "1624 != net 1400 + taxes 266 = 1666")`` or ``("header.receiver_tax_id_code", "...")``.
        Arithmetic and country rules are also checked when some fields are malformed (on what can be
        parsed).
    """
    from koywe_provider.exceptions import DocumentValidationError

    if not isinstance(payload, Mapping):
        raise DocumentValidationError(
            [("document", f"expected a JSON object, got {_json_type(payload)}")], reference=reference
        )
    try:
        return KoyweDocument.model_validate(payload, context={"now": now, "check_dates": check_dates})
    except ValidationError as exc:
        errors = _convert(exc)
        checks_ran = any(err["type"] == _FIELDS_ERROR and not err["loc"] for err in exc.errors())
    if not checks_ran:
        # The document-level checks did not run (a field failed first): run them on the raw payload so
        # that the caller sees every problem at once (a field already named keeps its first error).
        named = {field for field, _ in errors}
        raw = country_rule_errors(payload, now=now, check_dates=check_dates)
        with localcontext(_ARITHMETIC):
            raw += arithmetic_errors(payload)
        for field, message in raw:
            if field not in named:
                named.add(field)
                errors.append((field, message))
    raise DocumentValidationError(errors, reference=reference)


def _json_type(value: Any) -> str:
    """How JSON names ``value``'s type (``list`` is an array, ``str`` a string…)."""
    if isinstance(value, list | tuple):
        return "a JSON array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float | Decimal):
        return f"the number {value}"
    if value is None:
        return "null"
    return type(value).__name__


def _jsonable(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): _jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_jsonable(v) for v in value]
    if kind is Decimal:
        return int(value) if value == value.to_integral_value() else float(value)
    if kind is float:
        return int(value) if value.is_integer() else value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def payload_hash(payload: Mapping[str, Any] | KoyweDocument) -> str:
    """SHA-256 hex digest of the canonical JSON of ``to_payload()``.

    Canonical: ``sort_keys=True``, separators ``(",", ":")``, UTF-8, numbers normalised by
    validation, so payloads spelling ``1400``, ``1400.0`` or ``"1400"`` hash the same.

    :raises koywe_provider.exceptions.DocumentValidationError: a dict payload that does not validate
        (its date is not judged: a hash does not depend on the day it is computed).
    """
    document = (
        payload if isinstance(payload, KoyweDocument) else validate_document(payload, check_dates=False)
    )
    return hash_of_payload(document.to_payload())


def hash_of_payload(payload: Mapping[str, Any]) -> str:
    """:func:`payload_hash` of a payload already produced by :meth:`KoyweDocument.to_payload` (no second
    validation): SHA-256 hex of its canonical JSON."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
