"""Credit and debit notes: the country rules (reason codes, Peru series) and the pure builder of a note's
``POST /documents`` body from its original's.

A note is a document of its own (Chile 61/56 — Koywe 16/17, exports 48/47; Peru 07/08 — Koywe 98/99;
Colombia 91/92 — Koywe 83/84, POS 88; Mexico CFDI de egreso — Koywe 77) whose ``references[]`` points to
the original the way Koywe's examples do (``docs/DESIGN.md``, "Credit and debit notes")::

    {"document_type_id": <original's Koywe type>, "reference_document_id": <original's Koywe id>,
     "reference_code": <the country's reason code>, "description": <reason>,
     "reference_date": <original's issue date>}

with ``reference_number`` (the original's folio) in place of ``reference_document_id`` when the original
was issued elsewhere (Koywe's OpenAPI: one or the other, never both).

What a note credits (:func:`build_note`):

* the whole document (no ``amount`` and no ``lines``, nothing credited yet): the original's lines and
  totals, the country's "cancel" reason code;
* a partial ``amount`` (tax included, in the document's currency, at most what is left to credit): one
  line per tax rate of the original, the amount shared between them in proportion to the original's
  totals, each net ``amount / (1 + rate)`` rounded half-up to the currency's places and the tax the rest;
* ``lines`` (1-based numbers, optionally a smaller ``quantity``): those lines, a smaller quantity
  scaling a fixed discount and recomputing net, taxes and total with the currency's rounding;
* the whole document once something was credited already: what is left, as a partial amount.

A debit note always takes an ``amount`` (one line at the original's main tax rate). Every amount is a
:class:`~decimal.Decimal`; the note is validated like any document before it is returned.

Pure module: no Airflow, no ledger, no network.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from koywe_provider import catalogue

NoteKind = Literal["credit_note", "debit_note"]
NOTE_KINDS: tuple[str, ...] = ("credit_note", "debit_note")
#: The ledger reference of a note: ``<original>/NC-<n>`` (credit) or ``<original>/ND-<n>`` (debit).
NOTE_REFERENCE_PREFIX = {"credit_note": "NC", "debit_note": "ND"}
#: Mexico: ``mx_header.receiver_cfdi_usage`` of an egreso (SAT c_UsoCFDI G02 "Devoluciones, descuentos o
#: bonificaciones").
MX_EGRESO_CFDI_USAGE = "G02"

Scope = Literal["full", "partial", "any"]

_SII = "SII 'Formato DTE' CodRef (Koywe OpenAPI DocumentPost references[].reference_code 1/3)"
_SUNAT_09 = "SUNAT catálogo 09 (tipo de nota de crédito); Koywe Peru credit note examples send '01'"
_SUNAT_10 = "SUNAT catálogo 10 (tipo de nota de débito); Koywe Peru debit note examples send '03'"
_DIAN_CREDIT = "DIAN Anexo técnico factura electrónica, 'Concepto de corrección para notas crédito'"
_DIAN_DEBIT = (
    "DIAN Anexo técnico factura electrónica, 'Concepto de corrección para notas débito'; "
    "Koywe's Colombia debit note example sends 3"
)
_SAT = "SAT c_TipoRelacion (CFDI de egreso related to the ingreso it credits)"


@dataclass(frozen=True, slots=True)
class ReasonCode:
    """One ``references[].reference_code`` a country's note may carry.

    :ivar code: as sent (``"1"`` is sent as the integer 1; ``"01"`` keeps its spelling, as Koywe's Peru
        examples send it).
    :ivar scope: ``full`` (the whole document only), ``partial`` (part of it only) or ``any``.
    """

    code: str
    description: str
    scope: Scope
    source: str


def _codes(*codes: ReasonCode) -> tuple[ReasonCode, ...]:
    return codes


#: (country id, note kind) → the reason codes the project sends, the default of each case first
#: (see :func:`default_reason_code`).
REASON_CODES: Mapping[tuple[int, str], tuple[ReasonCode, ...]] = {
    (catalogue.CHILE, "credit_note"): _codes(
        ReasonCode("1", "Anula documento de referencia", "full", _SII),
        ReasonCode("3", "Corrige montos", "partial", _SII),
    ),
    (catalogue.CHILE, "debit_note"): _codes(ReasonCode("3", "Corrige montos", "any", _SII)),
    (catalogue.PERU, "credit_note"): _codes(
        ReasonCode("01", "Anulación de la operación", "full", _SUNAT_09),
        ReasonCode("02", "Anulación por error en el RUC", "full", _SUNAT_09),
        ReasonCode("06", "Devolución total", "full", _SUNAT_09),
        ReasonCode("09", "Disminución en el valor", "partial", _SUNAT_09),
        ReasonCode("07", "Devolución por ítem", "partial", _SUNAT_09),
        ReasonCode("04", "Descuento global", "partial", _SUNAT_09),
        # "05" (descuento por ítem) is left out on purpose: reference_code 5 is the internal transaction
        # id (models.references), and a note reference carrying it would be taken for one.
        ReasonCode("10", "Otros conceptos", "any", _SUNAT_09),
    ),
    (catalogue.PERU, "debit_note"): _codes(
        ReasonCode("02", "Aumento en el valor", "any", _SUNAT_10),
        ReasonCode("01", "Intereses por mora", "any", _SUNAT_10),
        ReasonCode("03", "Penalidades / otros conceptos", "any", _SUNAT_10),
    ),
    (catalogue.COLOMBIA, "credit_note"): _codes(
        ReasonCode("2", "Anulación de factura electrónica", "full", _DIAN_CREDIT),
        ReasonCode("3", "Rebaja o descuento parcial o total", "any", _DIAN_CREDIT),
        ReasonCode(
            "1",
            "Devolución parcial de los bienes y/o no aceptación parcial del servicio",
            "partial",
            _DIAN_CREDIT,
        ),
        ReasonCode("4", "Ajuste de precio", "partial", _DIAN_CREDIT),
    ),
    (catalogue.COLOMBIA, "debit_note"): _codes(
        ReasonCode("3", "Cambio del valor", "any", _DIAN_DEBIT),
        ReasonCode("1", "Intereses", "any", _DIAN_DEBIT),
        ReasonCode("2", "Gastos por cobrar", "any", _DIAN_DEBIT),
        ReasonCode("4", "Otros", "any", _DIAN_DEBIT),
    ),
    (catalogue.MEXICO, "credit_note"): _codes(
        ReasonCode("01", "Nota de crédito de los documentos relacionados", "any", _SAT),
        ReasonCode("03", "Devolución de mercancía sobre facturas o traslados previos", "partial", _SAT),
    ),
}

#: Default reason code per (country, kind, case): case ``full``, ``amount`` or ``lines``.
_DEFAULTS: dict[tuple[int, str, str], str] = {
    (catalogue.CHILE, "credit_note", "full"): "1",
    (catalogue.CHILE, "credit_note", "amount"): "3",
    (catalogue.CHILE, "credit_note", "lines"): "3",
    (catalogue.CHILE, "debit_note", "amount"): "3",
    (catalogue.PERU, "credit_note", "full"): "01",
    (catalogue.PERU, "credit_note", "amount"): "09",
    (catalogue.PERU, "credit_note", "lines"): "07",
    (catalogue.PERU, "debit_note", "amount"): "02",
    (catalogue.COLOMBIA, "credit_note", "full"): "2",
    (catalogue.COLOMBIA, "credit_note", "amount"): "3",
    (catalogue.COLOMBIA, "credit_note", "lines"): "1",
    (catalogue.COLOMBIA, "debit_note", "amount"): "3",
    (catalogue.MEXICO, "credit_note", "full"): "01",
    (catalogue.MEXICO, "credit_note", "amount"): "01",
    (catalogue.MEXICO, "credit_note", "lines"): "01",
}


class NoteRefused(ValueError):
    """The note cannot be built (the country has no such note, an amount beyond what is left, a bad line
    number…); nothing was recorded or sent. ``field`` names the request field at fault (``amount``,
    ``lines``, ``reason_code``, ``action``…) or ``None``; ``str()`` says what to do instead."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class LineSelection:
    """One line of the original to credit: ``line`` is 1-based; ``quantity`` (``None``: all of it) at most
    the original's."""

    line: int
    quantity: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OriginalDocument:
    """What a note needs of its original: the payload it was issued with (``header``, ``details``,
    ``totals``), its Koywe ``document_id`` (``None`` when it was issued elsewhere) and its folio."""

    reference: str
    payload: Mapping[str, Any]
    koywe_document_id: str | None = None
    folio: str | None = None


@dataclass(frozen=True, slots=True)
class NoteDraft:
    """A built note: its ``POST /documents`` body, its total (tax included) and how it was made.

    :ivar case: ``full`` (the whole document), ``amount`` or ``lines``.
    :ivar referenced_by: ``document_id`` or ``folio``: how ``references[]`` names the original.
    """

    kind: str
    document_type_id: int
    payload: dict[str, Any]
    total: Decimal
    reason_code: ReasonCode
    case: str
    referenced_by: str
    places: int = field(default=2)


# --------------------------------------------------------------------------------------------------
# Reading input
# --------------------------------------------------------------------------------------------------


def parse_amount(value: Any, *, field: str = "amount") -> Decimal | None:
    """An amount given as a number or numeric text (``"1500.50"``, ``1500``) as a Decimal (``None`` for
    ``None``/``""``). Raises :class:`NoteRefused` for anything else, zero or a negative amount."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise NoteRefused(f"{field} must be a number, got {value!r}", field=field)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise NoteRefused(f"{field} must be a number, got {value!r}", field=field) from None
    if not amount.is_finite() or amount <= 0:
        raise NoteRefused(f"{field} must be a positive amount, got {value!r}", field=field)
    return amount


def parse_lines(value: Any) -> list[LineSelection] | None:
    """Lines to credit: ``[1, 3]``, ``"1,3"`` or ``[{"line": 1, "quantity": 2}, …]`` (1-based line
    numbers); ``None`` for nothing. Raises :class:`NoteRefused` naming the bad entry."""
    if value is None or (isinstance(value, str) and not value.strip()) or value == []:
        return None
    if isinstance(value, str):
        value = [part for part in value.replace(";", ",").split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise NoteRefused(f"lines must be a list of line numbers, got {value!r}", field="lines")
    selections: list[LineSelection] = []
    for entry in value:
        raw_line, raw_quantity = (
            (entry.get("line"), entry.get("quantity"))
            if isinstance(entry, Mapping)
            else (
                entry,
                None,
            )
        )
        try:
            number = int(str(raw_line).strip())
        except (TypeError, ValueError):
            raise NoteRefused(f"lines: {entry!r} is not a line number (1, 2, …)", field="lines") from None
        quantity = None if raw_quantity in (None, "") else parse_amount(raw_quantity, field="lines.quantity")
        selections.append(LineSelection(number, quantity))
    return selections


def reason_codes(country_id: int, kind: str) -> tuple[ReasonCode, ...]:
    """The reason codes of a country's ``kind`` of note (``()`` when it has none)."""
    return tuple(REASON_CODES.get((country_id, kind), ()))


def default_reason_code(country_id: int, kind: str, case: str) -> ReasonCode:
    """The reason code sent when the request names none: per country, kind and case (``full``, ``amount``
    or ``lines``). Raises :class:`NoteRefused` when the country has no such note."""
    code = _DEFAULTS.get((country_id, kind, case)) or _DEFAULTS.get((country_id, kind, "amount"))
    for reason in reason_codes(country_id, kind):
        if reason.code == code:
            return reason
    raise NoteRefused(f"no {kind.replace('_', ' ')} reason code for country {country_id}", field="action")


def choose_reason_code(country_id: int, kind: str, case: str, wanted: Any) -> ReasonCode:
    """``wanted`` (``None``: the default) checked against the country's codes and the case: a "full" code
    (Peru ``01`` anulación) cannot go on a partial note and the reverse. ``1`` and ``"01"`` are the same
    code. Raises :class:`NoteRefused` (``field="reason_code"``) listing the codes that apply."""
    if wanted is None or (isinstance(wanted, str) and not wanted.strip()):
        return default_reason_code(country_id, kind, case)
    text = str(wanted).strip()
    scope_ok = ("full", "any") if case == "full" else ("partial", "any")
    known = reason_codes(country_id, kind)
    for reason in known:
        if reason.code == text or (
            text.isdigit() and reason.code.isdigit() and int(text) == int(reason.code)
        ):
            if reason.scope in scope_ok:
                return reason
            whole = "the whole document" if reason.scope == "full" else "part of the document"
            raise NoteRefused(
                f"reason_code {text} ({reason.description}) is for {whole}; this note credits "
                f"{'the whole document' if case == 'full' else 'part of it'}. Codes that apply: "
                + ", ".join(f"{r.code} {r.description}" for r in known if r.scope in scope_ok),
                field="reason_code",
            )
    raise NoteRefused(
        f"reason_code {text} is not one the project sends for this note; use one of: "
        + ", ".join(f"{r.code} {r.description}" for r in known if r.scope in scope_ok),
        field="reason_code",
    )


# --------------------------------------------------------------------------------------------------
# Arithmetic helpers
# --------------------------------------------------------------------------------------------------


def _dec(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _num(value: Decimal) -> int | float | str:
    """JSON number of a Decimal: int when whole, else its text as a float (2 places at most here)."""
    return int(value) if value == value.to_integral_value() else float(value)


def _quantizer(places: int):
    unit = Decimal(1).scaleb(-places)

    def q(value: Decimal) -> Decimal:
        return value.quantize(unit, rounding=ROUND_HALF_UP)

    return q, unit


def _line_gross(line: Mapping[str, Any], q) -> Decimal:
    if line.get("total_amount_line") not in (None, ""):
        return _dec(line["total_amount_line"])
    net = q(
        _dec(line.get("quantity"))
        * _dec(line.get("unit_price"))
        * (1 + _dec(line.get("modifier_percentage")) / 100)
        + _dec(line.get("modifier_amount"))
    )
    return net + _dec(line.get("total_taxes"))


def _tax_key(line: Mapping[str, Any]) -> tuple[tuple[int, Decimal], ...]:
    taxes = line.get("taxes") if isinstance(line.get("taxes"), list) else []
    return tuple(
        (int(str(t.get("tax_type_id"))), _dec(t.get("tax_percentage")))
        for t in taxes
        if isinstance(t, Mapping) and t.get("tax_type_id") not in (None, "")
    )


# --------------------------------------------------------------------------------------------------
# Building a note
# --------------------------------------------------------------------------------------------------


def _kind_name(kind: str) -> str:
    return kind.replace("_", " ")


def _refuse_missing_type(original_type: catalogue.DocumentType, kind: str) -> NoteRefused:
    country = catalogue.COUNTRIES[original_type.country_id]
    hint = ""
    if country.country_id == catalogue.MEXICO and kind == "debit_note":
        hint = " Mexico has no debit note: charge the difference with a new CFDI de ingreso (76)."
    elif original_type.kind in ("credit_note", "debit_note", "export_credit_note", "export_debit_note"):
        hint = " A note is not credited or debited by another note here: name the original document."
    return NoteRefused(
        f"{country.name} has no {_kind_name(kind)} for a {original_type.name} "
        f"(document_type_id {original_type.document_type_id}).{hint}",
        field="action",
    )


def _header(
    original: Mapping[str, Any], note_type: catalogue.DocumentType, issue_date: date, kind: str
) -> dict:
    header = copy.deepcopy(dict(original))
    for key in ("document_number", "document_sequence_code", "document_status", "document_type_taxbureau"):
        header.pop(key, None)
    header["document_type_id"] = note_type.document_type_id
    header["issue_date"] = issue_date.isoformat()
    original_type = catalogue.document_type(original["document_type_id"])
    if note_type.country_id == catalogue.PERU:
        # Notes take the series of the document they modify (Koywe's examples: FC01/FD01 for a
        # factura, BC01 for a boleta; SUNAT: F… notes modify facturas, B… notes boletas).
        series = str(original.get("document_sequence_code") or original_type.series_prefix or "F")[:1].upper()
        header["document_sequence_code"] = f"{series}{'C' if kind == 'credit_note' else 'D'}01"
    if note_type.country_id == catalogue.MEXICO:
        additional = header.setdefault("additional", {})
        if isinstance(additional, dict):
            mx = additional.setdefault("mx_header", {})
            if isinstance(mx, dict):
                mx["receiver_cfdi_usage"] = MX_EGRESO_CFDI_USAGE
    return header


def _reference(
    original: OriginalDocument, header: Mapping[str, Any], reason: ReasonCode, description: str
) -> tuple[dict[str, Any], str]:
    entry: dict[str, Any] = {"document_type_id": int(str(header["document_type_id"]))}
    if original.koywe_document_id:
        entry["reference_document_id"] = int(original.koywe_document_id)
        by = "document_id"
    elif original.folio:
        entry["reference_number"] = str(original.folio)
        by = "folio"
    else:
        raise NoteRefused(
            f"{original.reference} has neither a Koywe document id nor a folio: a note cannot point to it",
            field="references",
        )
    entry["reference_code"] = (
        int(reason.code) if reason.code.isdigit() and not reason.code.startswith("0") else reason.code
    )
    entry["description"] = description[:100]
    if header.get("issue_date"):
        entry["reference_date"] = str(header["issue_date"])[:10]
    return entry, by


def _options(original: Mapping[str, Any], case: str) -> dict[str, Any] | None:
    options = original.get("options")
    if not isinstance(options, Mapping):
        return None
    kept = {k: v for k, v in options.items() if k not in ("draft_only",)}
    if case == "amount":
        kept.pop("gross_values", None)  # the note's lines are priced net
    return kept or None


def _amount_lines(
    details: Sequence[Mapping[str, Any]], amount: Decimal, description: str, places: int, *, main_only: bool
) -> list[dict[str, Any]]:
    """Lines carrying ``amount`` (tax included): one per tax rate of ``details``, in proportion to their
    totals (``main_only``: one line at the rate with the largest total)."""
    q, _ = _quantizer(places)
    groups: dict[tuple[tuple[int, Decimal], ...], list[Any]] = {}
    for line in details:
        key = _tax_key(line)
        entry = groups.setdefault(key, [Decimal(0), line])
        entry[0] += _line_gross(line, q)
    if main_only:
        key, (gross, first) = max(groups.items(), key=lambda kv: kv[1][0])
        groups = {key: [gross, first]}
    total = sum((g for g, _ in groups.values()), Decimal(0))
    items = list(groups.items())
    lines: list[dict[str, Any]] = []
    given = Decimal(0)
    for index, (key, (gross, first)) in enumerate(items):
        share = (
            amount - given if index == len(items) - 1 else q(amount * gross / total) if total else Decimal(0)
        )
        given += share
        if share <= 0:
            continue
        rate = sum((pct for _, pct in key), Decimal(0)) / 100
        net = q(share / (1 + rate))
        taxes: list[dict[str, Any]] = []
        left = share - net
        for position, (tax_type_id, pct) in enumerate(key):
            tax = left if position == len(key) - 1 else q(net * pct / 100)
            left -= tax
            taxes.append({"tax_type_id": tax_type_id, "tax_percentage": _num(pct), "tax_amount": _num(tax)})
        lines.append(
            {
                "quantity": 1,
                "line_description": description[:100],
                "unit_measure": first.get("unit_measure") or "UN",
                "unit_price": _num(net),
                "modifier_amount": 0,
                "modifier_percentage": 0,
                "total_taxes": _num(share - net),
                "total_amount_line": _num(share),
                "taxes": taxes,
            }
        )
    return lines


def _selected_lines(
    details: Sequence[Mapping[str, Any]], selections: Sequence[LineSelection], places: int, gross: bool
) -> list[dict[str, Any]]:
    q, _ = _quantizer(places)
    seen: set[int] = set()
    lines: list[dict[str, Any]] = []
    for selection in selections:
        if not 1 <= selection.line <= len(details):
            raise NoteRefused(
                f"lines: line {selection.line} does not exist (the original has {len(details)} line(s), "
                "numbered from 1)",
                field="lines",
            )
        if selection.line in seen:
            raise NoteRefused(f"lines: line {selection.line} is named twice", field="lines")
        seen.add(selection.line)
        original = details[selection.line - 1]
        quantity = _dec(original.get("quantity"))
        wanted = selection.quantity
        if wanted is None or wanted == quantity:
            lines.append(copy.deepcopy(dict(original)))
            continue
        if wanted > quantity:
            raise NoteRefused(
                f"lines: line {selection.line} has quantity {quantity}; {wanted} cannot be credited",
                field="lines",
            )
        if gross:
            raise NoteRefused(
                f"lines: line {selection.line} is priced VAT included (options.gross_values); credit the "
                "whole line or give an amount",
                field="lines",
            )
        ratio = wanted / quantity
        line = copy.deepcopy(dict(original))
        modifier = q(_dec(original.get("modifier_amount")) * ratio)
        net = q(
            wanted * _dec(original.get("unit_price")) * (1 + _dec(original.get("modifier_percentage")) / 100)
            + modifier
        )
        taxes = []
        for tax in original.get("taxes") or []:
            amount = q(net * _dec(tax.get("tax_percentage")) / 100)
            taxes.append({**tax, "tax_amount": _num(amount)})
        total_taxes = sum((_dec(t["tax_amount"]) for t in taxes), Decimal(0))
        line.update(
            quantity=_num(wanted),
            modifier_amount=_num(modifier),
            total_taxes=_num(total_taxes),
            total_amount_line=_num(net + total_taxes),
            taxes=taxes,
        )
        if "modifier_amount" not in original:
            line.pop("modifier_amount")
        lines.append(line)
    return lines


def _totals(lines: Sequence[Mapping[str, Any]], places: int, gross: bool) -> tuple[Decimal, Decimal, Decimal]:
    q, _ = _quantizer(places)
    net = taxes = total = Decimal(0)
    for line in lines:
        line_taxes = _dec(line.get("total_taxes"))
        line_total = _line_gross(line, q)
        if gross:
            line_net = line_total - line_taxes
        else:
            line_net = q(
                _dec(line.get("quantity"))
                * _dec(line.get("unit_price"))
                * (1 + _dec(line.get("modifier_percentage")) / 100)
                + _dec(line.get("modifier_amount"))
            )
        net += line_net
        taxes += line_taxes
        total += line_net + line_taxes if not gross else line_total
    return net, taxes, total


def build_note(
    original: OriginalDocument,
    kind: str,
    *,
    remaining: Decimal,
    issue_date: date,
    reason: str | None = None,
    reason_code: Any = None,
    amount: Decimal | None = None,
    lines: Sequence[LineSelection] | None = None,
) -> NoteDraft:
    """The ``kind`` note of ``original`` (see the module docstring).

    :param remaining: what is left to credit on the original (its total minus the credit notes issued or
        in progress), in its currency; a credit note never exceeds it. Ignored for a debit note.
    :param issue_date: the note's ``header.issue_date``.
    :param reason: the ``references[].description`` (default: the reason code's description).
    :param reason_code: the country's reason code (default: :func:`default_reason_code`).
    :param amount: tax included, in the original's currency, with at most its places.
    :param lines: lines of the original to credit (credit notes only).
    :raises NoteRefused: the country has no such note for this document, or the request does not fit
        (amount and lines together, amount beyond what is left, a line that does not exist …).
    """
    from koywe_provider.exceptions import DocumentValidationError
    from koywe_provider.models.documents import validate_document

    if kind not in NOTE_KINDS:
        raise NoteRefused(f"unknown note kind {kind!r}: credit_note or debit_note", field="action")
    payload = original.payload
    header = payload.get("header") if isinstance(payload.get("header"), Mapping) else None
    details = payload.get("details") if isinstance(payload.get("details"), list) else None
    totals = payload.get("totals") if isinstance(payload.get("totals"), Mapping) else None
    if header is None or not details or totals is None:
        raise NoteRefused(f"{original.reference}: the ledger holds no complete payload of the original")
    try:
        original_type = catalogue.document_type(header.get("document_type_id"))
    except catalogue.UnknownCatalogueEntry as err:
        raise NoteRefused(f"{original.reference}: {err}", field="document_type_id") from None
    note_type = catalogue.note_type(original_type.document_type_id, kind)
    if note_type is None:
        raise _refuse_missing_type(original_type, kind)
    country_id = original_type.country_id
    places = catalogue.currency_places(header.get("currency_id"), original_type.document_type_id)
    q, unit = _quantizer(places)
    original_total = _dec(totals.get("total_amount"))
    gross = bool(isinstance(payload.get("options"), Mapping) and payload["options"].get("gross_values"))
    currency_name = _currency_name(header.get("currency_id"))

    if amount is not None and lines:
        raise NoteRefused("give an amount or lines, not both", field="amount")
    if amount is not None and amount != amount.quantize(unit):
        raise NoteRefused(
            f"amount {amount} has more decimals than {currency_name} amounts ({places})", field="amount"
        )
    if kind == "debit_note":
        if lines:
            raise NoteRefused("a debit note takes an amount (what is charged), not lines", field="lines")
        if amount is None:
            raise NoteRefused("a debit note needs an amount (tax included) to charge", field="amount")
        case = "amount"
    elif lines:
        case = "lines"
        if payload.get("globals_discounts_surcharges"):
            raise NoteRefused(
                f"{original.reference} has global discounts or surcharges: credit it by amount, not by lines",
                field="lines",
            )
    elif amount is not None:
        case = "amount"
    elif remaining <= 0:
        raise NoteRefused(
            f"nothing is left to credit on {original.reference} (total {original_total}, "
            f"credited or in progress {original_total - remaining})",
            field="amount",
        )
    elif remaining >= original_total:
        case = "full"
    else:
        case, amount = "amount", remaining  # the rest of a document credited in part

    if kind == "credit_note" and case == "amount" and amount is not None and amount > remaining:
        raise NoteRefused(
            f"amount {amount} exceeds what is left to credit on {original.reference}: {remaining} "
            f"{currency_name} (total {original_total}, credited or in progress {original_total - remaining})",
            field="amount",
        )

    reason_entry = choose_reason_code(country_id, kind, case, reason_code)
    description = (reason or "").strip() or reason_entry.description
    folio = f" {original.folio}" if original.folio else ""
    label = "Nota de crédito" if kind == "credit_note" else "Nota de débito"
    line_text = f"{label} ref. {original_type.name}{folio}: {description}"

    if case == "full":
        note_details = copy.deepcopy(list(details))
        note_totals = copy.deepcopy(dict(totals))
        total = original_total
    elif case == "lines":
        note_details = _selected_lines(details, lines or [], places, gross)
        net, taxes, total = _totals(note_details, places, gross)
        note_totals = {"net_amount": _num(net), "taxes_amount": _num(taxes), "total_amount": _num(total)}
        if total > remaining:
            raise NoteRefused(
                f"the lines come to {total} {currency_name}, more than is left to credit on "
                f"{original.reference}: {remaining}",
                field="lines",
            )
    else:
        assert amount is not None
        note_details = _amount_lines(details, amount, line_text, places, main_only=kind == "debit_note")
        net, taxes, total = _totals(note_details, places, False)
        note_totals = {"net_amount": _num(net), "taxes_amount": _num(taxes), "total_amount": _num(total)}

    note_header = _header(header, note_type, issue_date, kind)
    entry, referenced_by = _reference(original, header, reason_entry, description)
    body: dict[str, Any] = {
        "header": note_header,
        "details": note_details,
        "references": [entry],
        "totals": note_totals,
    }
    if case == "full" and payload.get("globals_discounts_surcharges"):
        body["globals_discounts_surcharges"] = copy.deepcopy(payload["globals_discounts_surcharges"])
    options = _options(payload, case)
    if options:
        body["options"] = options
    try:
        validate_document(body, reference=f"{original.reference} ({_kind_name(kind)})")
    except DocumentValidationError as err:
        raise NoteRefused(str(err)) from err
    return NoteDraft(
        kind=kind,
        document_type_id=note_type.document_type_id,
        payload=body,
        total=q(total),
        reason_code=reason_entry,
        case=case,
        referenced_by=referenced_by,
        places=places,
    )


def _currency_name(currency_id: Any) -> str:
    try:
        return catalogue.currency(currency_id).code
    except catalogue.UnknownCatalogueEntry:
        return "currency units"


def note_reference(original_reference: str, kind: str, sequence: int) -> str:
    """``INV-1/NC-1``: the ledger reference of the ``sequence``-th (1-based) note of ``kind``."""
    return f"{original_reference}/{NOTE_REFERENCE_PREFIX[kind]}-{int(sequence)}"


def payload_total(payload: Mapping[str, Any] | None) -> Decimal:
    """``totals.total_amount`` of a payload as a Decimal (0 when absent or unreadable)."""
    totals = payload.get("totals") if isinstance(payload, Mapping) else None
    try:
        return _dec(totals.get("total_amount")) if isinstance(totals, Mapping) else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


__all__ = [
    "MX_EGRESO_CFDI_USAGE",
    "NOTE_KINDS",
    "NOTE_REFERENCE_PREFIX",
    "REASON_CODES",
    "LineSelection",
    "NoteDraft",
    "NoteKind",
    "NoteRefused",
    "OriginalDocument",
    "ReasonCode",
    "build_note",
    "choose_reason_code",
    "default_reason_code",
    "note_reference",
    "parse_amount",
    "parse_lines",
    "payload_total",
    "reason_codes",
]
