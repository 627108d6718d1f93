"""Koywe document rules of the sandbox: validation, tax bureau codes, folios, filters, list items.

Everything here is pure (no I/O, no awaits) so that callers can run it atomically on the event loop.
"""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

CHILE, COLOMBIA, MEXICO, PERU, ARGENTINA = 253, 66, 80, 83, 88

#: Koywe document type id -> (country id, tax bureau code).
DOCUMENT_TYPES: dict[int, tuple[int, str]] = {
    2: (CHILE, "33"),
    32: (CHILE, "34"),
    37: (CHILE, "39"),
    41: (CHILE, "41"),
    16: (CHILE, "61"),
    17: (CHILE, "56"),
    54: (CHILE, "52"),
    46: (CHILE, "110"),
    47: (CHILE, "111"),
    48: (CHILE, "112"),
    96: (PERU, "01"),
    97: (PERU, "03"),
    98: (PERU, "07"),
    99: (PERU, "08"),
    100: (PERU, "09"),
    109: (PERU, "20"),
    82: (COLOMBIA, "01"),
    83: (COLOMBIA, "91"),
    84: (COLOMBIA, "92"),
    87: (COLOMBIA, "87"),
    88: (COLOMBIA, "88"),
    76: (MEXICO, "I"),
    77: (MEXICO, "E"),
    78: (MEXICO, "T"),
    111: (ARGENTINA, "111"),
}

#: Default Peru series per document type (used when header.document_sequence_code is absent).
PERU_SERIES = {96: "F001", 97: "B001", 98: "FC01", 99: "FD01", 100: "T001", 109: "R001"}
PERU_BOLETA = 97
LIMA = timezone(timedelta(hours=-5))
#: ``result.error_message`` of a document generated but not sent to the tax bureau (``result.status`` 2;
#: API_NOTES "Errors", Peru's ``Error 1033``).
RESULT_2_MESSAGE = (
    "Error 1033: El comprobante fue generado pero no pudo ser enviado a la entidad tributaria (sandbox)"
)
#: Fields of a flat ``GET /documents`` item, in the order of the OpenAPI ``SimplifiedDocument`` schema,
#: with the JSON type that schema gives each one (``references`` is a sandbox addition, see list_item).
LIST_ITEM_FIELDS: dict[str, str] = {
    "document_id": "string",
    "account_id": "integer",
    "taxbureau_sending_status": "string",
    "taxbureau_validation_status": "string",
    "issue_date": "string",
    "document_number": "string",
    "document_type_id": "string",
    "issuer_tax_id_code": "string",
    "issuer_tax_id_type": "string",
    "receiver_legal_name": "string",
    "receiver_tax_id_code": "string",
    "receiver_tax_id_type": "string",
    "document_status": "number",
    "currency_id": "number",
    "received_issued_flag": "number",
    "net_amount": "string",
    "taxes_amount": "string",
    "total_amount": "string",
    "document_type_taxbureau": "string",
}


class ValidationError(ValueError):
    """A Koywe-style 400; the message names the offending field."""


def as_int(value: Any) -> int | None:
    """``5``, ``"5"`` or ``"05"`` -> 5; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _decimal(value: Any, field: str) -> Decimal:
    if value is None or value == "" or isinstance(value, bool):
        raise ValidationError(f"{field} is required")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(f"{field} must be a number") from None
    if not number.is_finite():
        raise ValidationError(f"{field} must be a number")
    return number


def _require(obj: dict[str, Any], key: str, prefix: str) -> Any:
    value = obj.get(key)
    if value is None or value == "":
        raise ValidationError(f"{prefix}{key} is required")
    return value


def validate_document(body: Any, today: date | None = None, boleta_date: bool = True) -> int:
    """Validate a ``POST /documents`` body; returns the document type id. Raises ValidationError.

    Checks: header.account_id, header.document_type_id (int or numeric string), header.issue_date
    (YYYY-MM-DD), header.currency_id; non-empty details each with quantity, unit_price and
    total_amount_line; totals.net_amount and totals.total_amount with net + taxes == total (+-0.01);
    a Peru boleta (type 97) must carry today's date (local or Lima date accepted) unless
    ``boleta_date`` is false (planted documents may be old).
    """
    if not isinstance(body, dict):
        raise ValidationError("Request body must be a JSON object")
    header = body.get("header")
    if not isinstance(header, dict):
        raise ValidationError("header is required")
    _require(header, "account_id", "header.")
    type_id = as_int(_require(header, "document_type_id", "header."))
    if type_id is None:
        raise ValidationError("header.document_type_id must be an integer")
    issue_date = _require(header, "issue_date", "header.")
    try:
        parsed_date = (
            date.fromisoformat(issue_date) if isinstance(issue_date, str) and len(issue_date) == 10 else None
        )
    except ValueError:
        parsed_date = None
    if parsed_date is None:
        raise ValidationError("header.issue_date must be a date YYYY-MM-DD")
    _require(header, "currency_id", "header.")
    details = body.get("details")
    if not isinstance(details, list) or not details:
        raise ValidationError("details must be a non-empty list")
    for index, line in enumerate(details):
        if not isinstance(line, dict):
            raise ValidationError(f"details[{index}] must be an object")
        for key in ("quantity", "unit_price", "total_amount_line"):
            _decimal(line.get(key), f"details[{index}].{key}")
    references = body.get("references")
    if references is not None and not isinstance(references, list):
        raise ValidationError("references must be a list")
    totals = body.get("totals")
    if not isinstance(totals, dict):
        raise ValidationError("totals is required")
    net = _decimal(totals.get("net_amount"), "totals.net_amount")
    total = _decimal(totals.get("total_amount"), "totals.total_amount")
    taxes_raw = totals.get("taxes_amount")
    taxes = Decimal(0) if taxes_raw in (None, "") else _decimal(taxes_raw, "totals.taxes_amount")
    if abs(net + taxes - total) > Decimal("0.01"):
        raise ValidationError("totals.total_amount must equal totals.net_amount + totals.taxes_amount")
    if type_id == PERU_BOLETA and boleta_date:
        allowed = {today} if today else {date.today(), datetime.now(LIMA).date()}
        if parsed_date not in allowed:
            raise ValidationError("header.issue_date of a Peru boleta must be today's date")
    return type_id


def country_of(type_id: int, header: dict[str, Any], accounts: dict[str, dict[str, Any]]) -> int | None:
    """Country of a document: from the document type, else the sandbox account, else issuer_country_id."""
    if type_id in DOCUMENT_TYPES:
        return DOCUMENT_TYPES[type_id][0]
    account = accounts.get(str(header.get("account_id")))
    if account is not None and as_int(account.get("country_id")) is not None:
        return as_int(account.get("country_id"))
    return as_int(header.get("issuer_country_id"))


def taxbureau_code(type_id: int) -> str:
    """Tax bureau code of a Koywe document type id (``str(type_id)`` when unknown)."""
    return DOCUMENT_TYPES.get(type_id, (None, str(type_id)))[1]


def format_folio(type_id: int, country: int | None, sequence: int, header: dict[str, Any]) -> int | str:
    """Peru: ``"F001-00000001"`` (series from header.document_sequence_code); others: the integer."""
    if country == PERU:
        series = header.get("document_sequence_code") or PERU_SERIES.get(type_id, "F001")
        return f"{series}-{sequence:08d}"
    return sequence


def electronic_document(
    document_id: int, bureau_code: str, folio: Any, total: Any, stamp: bool
) -> dict[str, str]:
    """Base64 ``document_xml`` and ``document_pdf`` (plus ``stamp_img`` when a stamp was asked for)."""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Document><Id>{document_id}</Id><Type>{bureau_code}</Type>"
        f"<Number>{folio}</Number><Total>{total}</Total><Sandbox>true</Sandbox></Document>\n"
    )
    pdf = f"%PDF-1.4\n% Koywe sandbox document {document_id} type {bureau_code} number {folio}\n%%EOF\n"
    result = {
        "document_xml": base64.b64encode(xml.encode()).decode(),
        "document_pdf": base64.b64encode(pdf.encode()).decode(),
    }
    if stamp:
        result["stamp_img"] = base64.b64encode(f"sandbox-stamp-{document_id}".encode()).decode()
    return result


def reference_numbers(references: Any, code: int = 5) -> set[str]:
    """Distinct ``reference_number`` values of the entries with ``reference_code`` == code."""
    found: set[str] = set()
    for ref in references or []:
        if isinstance(ref, dict) and as_int(ref.get("reference_code")) == code:
            number = ref.get("reference_number")
            if number is not None and number != "":
                found.add(str(number))
    return found


def _same(a: Any, b: Any) -> bool:
    ia, ib = as_int(a), as_int(b)
    if ia is not None and ib is not None:
        return ia == ib
    return str(a) == str(b)


def matches(document: dict[str, Any], filters: dict[str, str]) -> bool:
    """Whether a stored document matches the ``GET /documents`` filters (all as query strings)."""
    header = document["header"]
    issue_date = str(header.get("issue_date", ""))
    if "issue_date_from" in filters and issue_date < filters["issue_date_from"]:
        return False
    if "issue_date_to" in filters and issue_date > filters["issue_date_to"]:
        return False
    for key in (
        "document_type_id",
        "document_number",
        "receiver_tax_id_code",
        "taxbureau_sending_status",
        "taxbureau_validation_status",
        "account_id",
    ):
        if key in filters and not _same(header.get(key), filters[key]):
            return False
    code, number = filters.get("reference_code"), filters.get("reference_number")
    if code is None and number is None:
        return True
    for ref in document.get("references") or []:
        if not isinstance(ref, dict):
            continue
        if code is not None and not _same(ref.get("reference_code"), code):
            continue
        if number is not None and str(ref.get("reference_number")) != number:
            continue
        return True
    return False


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> Any:
    number = as_int(value)
    if number is not None:
        return number
    try:
        return float(value) if isinstance(value, str) and value.strip() else value
    except ValueError:
        return value


def list_item(document: dict[str, Any]) -> dict[str, Any]:
    """The flat ``GET /documents`` item of a stored document (``list_items: "flat"``).

    Every field of the OpenAPI ``SimplifiedDocument`` (:data:`LIST_ITEM_FIELDS`), flattened out of
    ``header`` and ``totals`` and typed as that schema says: ids, statuses, the folio and amounts as
    strings (``"1000"``, ``"3"``, ``"F001-00000001"``, ``"1190"``), ``account_id`` an integer,
    ``currency_id`` and ``received_issued_flag`` numbers; a field the document lacks is ``null``.
    ``document_status`` is the top-level one (the document's life: 0 draft, 1 issued, 2 cancelled), not
    ``header.document_status`` (the counterparty's view), which a flat item does not carry. The sandbox
    adds ``references`` (the document's ``references[]``, ``[]`` when none), which the schema omits.
    """
    header = document.get("header") or {}
    totals = document.get("totals") or {}
    values: dict[str, Any] = {
        **{key: header.get(key) for key in LIST_ITEM_FIELDS},
        **{key: totals.get(key) for key in ("net_amount", "taxes_amount", "total_amount")},
        "document_id": document.get("document_id"),
        "document_status": document.get("document_status"),
    }
    item: dict[str, Any] = {}
    for key, kind in LIST_ITEM_FIELDS.items():
        value = values[key]
        item[key] = _text(value) if kind == "string" else (None if value is None else _number(value))
    item["references"] = list(document.get("references") or [])
    return item


# --------------------------------------------------------------------------------------------------
# Credit and debit notes, validated against their original
# --------------------------------------------------------------------------------------------------

#: Koywe note type -> (kind, the Koywe types of the documents it may modify). Chile: NC 61 / ND 56 modify
#: facturas (33, 34, 46 compra), boletas (39, 41) and each other; export NC 112 / ND 111 modify the export
#: factura 110 and each other. Peru: 07 / 08 modify a factura 01 or a boleta 03. Colombia: 91 / 92 modify a
#: factura 01; the POS credit note modifies a POS document. Mexico: an egreso modifies an ingreso.
NOTE_TYPES: dict[int, tuple[str, frozenset[int]]] = {
    16: ("credit", frozenset({2, 32, 37, 41, 31, 17})),
    17: ("debit", frozenset({2, 32, 37, 41, 31, 16})),
    48: ("credit", frozenset({46, 47})),
    47: ("debit", frozenset({46, 48})),
    98: ("credit", frozenset({96, 97})),
    99: ("debit", frozenset({96, 97})),
    83: ("credit", frozenset({82})),
    84: ("debit", frozenset({82})),
    88: ("credit", frozenset({87})),
    77: ("credit", frozenset({76})),
}
#: (country, kind) -> the reason codes (``references[].reference_code``) the sandbox accepts: Chile SII
#: CodRef 1-3; Peru SUNAT catálogos 09 / 10; Colombia DIAN "concepto de corrección"; Mexico SAT
#: c_TipoRelacion 01-07. Peru and Mexico codes compare as two digits ("01"), the others as integers.
NOTE_REASON_CODES: dict[tuple[int, str], frozenset[str]] = {
    (CHILE, "credit"): frozenset({"1", "2", "3"}),
    (CHILE, "debit"): frozenset({"1", "2", "3"}),
    (PERU, "credit"): frozenset(f"{n:02d}" for n in range(1, 14)),
    (PERU, "debit"): frozenset({"01", "02", "03", "10", "11"}),
    (COLOMBIA, "credit"): frozenset(str(n) for n in range(1, 7)),
    (COLOMBIA, "debit"): frozenset(str(n) for n in range(1, 5)),
    (MEXICO, "credit"): frozenset(f"{n:02d}" for n in range(1, 8)),
}
#: Tolerance when credit notes are added up against their original's total (amounts are exact decimals).
NOTE_TOLERANCE = Decimal(0)


def _reason_code(value: Any, country: int | None) -> str | None:
    number = as_int(value)
    if number is None:
        return None
    return f"{number:02d}" if country in (PERU, MEXICO) else str(number)


def _compact(value: Any) -> str:
    return "".join(ch for ch in str(value or "") if ch not in ".- ").upper()


def document_references(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``references[]`` entries that name a tax document (they carry ``document_type_id``, or a
    ``reference_document_id``), as opposed to the internal transaction id (code 5, no document type)."""
    return [
        r
        for r in body.get("references") or []
        if isinstance(r, dict)
        and (r.get("document_type_id") not in (None, "") or r.get("reference_document_id") not in (None, ""))
    ]


def note_original(
    reference: dict[str, Any], account_id: Any, documents: dict[int, dict[str, Any]]
) -> dict[str, Any] | None:
    """The stored document a note's reference names (by ``reference_document_id``, or by
    ``document_type_id`` + ``reference_number`` = folio within the same account), or None."""
    if reference.get("reference_document_id") not in (None, ""):
        found = documents.get(as_int(reference["reference_document_id"]) or -1)
        if found is not None and str(found["header"].get("account_id")) == str(account_id):
            return found
        return None
    type_id, number = as_int(reference.get("document_type_id")), str(reference.get("reference_number"))
    for document in documents.values():
        header = document["header"]
        if (
            str(header.get("account_id")) == str(account_id)
            and as_int(header.get("document_type_id")) == type_id
            and str(header.get("document_number")) == number
        ):
            return document
    return None


def note_problem(body: dict[str, Any], documents: dict[int, dict[str, Any]]) -> str | None:
    """Why a (validated) ``POST /documents`` body of a note type cannot be issued against its original, or
    None (also for documents that are not notes). Koywe-style 400 messages naming the field.

    A note must reference one tax document (``reference_document_id`` or ``reference_number`` = folio,
    never both) of a type it may modify, with a reason code of its country. When the original is stored
    here: of the same account, not a draft, not cancelled, same receiver and currency, a Peru note in the
    original's series (F… for a factura, B… for a boleta), and the credit notes against it never add up to
    more than its total. An original named by a folio the sandbox does not hold was issued elsewhere:
    only the reference itself is checked.
    """
    header = body["header"]
    type_id = as_int(header.get("document_type_id"))
    if type_id not in NOTE_TYPES:
        return None
    kind, modifies = NOTE_TYPES[type_id]
    country = DOCUMENT_TYPES[type_id][0]
    references = document_references(body)
    if not references:
        return (
            f"references: a {kind} note must reference the document it modifies (document_type_id with "
            "reference_document_id or reference_number)"
        )
    reference = references[0]
    by_id = reference.get("reference_document_id") not in (None, "")
    by_number = reference.get("reference_number") not in (None, "")
    if by_id and by_number:
        return "references[].reference_document_id: use reference_number or reference_document_id, never both"
    if not by_id and not by_number:
        return "references[]: reference_document_id or reference_number is required"
    code = _reason_code(reference.get("reference_code"), country)
    if code not in NOTE_REASON_CODES.get((country, kind), frozenset()):
        return f"references[].reference_code {reference.get('reference_code')!r} is not a {kind} note reason here"
    referenced_type = as_int(reference.get("document_type_id"))
    original = note_original(reference, header.get("account_id"), documents)
    if by_id and original is None:
        return f"references[].reference_document_id {reference['reference_document_id']} not found"
    if original is None:
        if referenced_type not in modifies:
            return f"references[].document_type_id {reference.get('document_type_id')!r} cannot be modified by type {type_id}"
        return None  # a folio issued elsewhere: nothing more to compare
    original_header = original["header"]
    original_type = as_int(original_header.get("document_type_id"))
    if referenced_type is not None and referenced_type != original_type:
        return f"references[].document_type_id {referenced_type} does not match the referenced document (type {original_type})"
    if original_type not in modifies:
        return f"references[]: a document of type {original_type} cannot be modified by type {type_id}"
    status = as_int(original.get("document_status"))
    if status == 0:
        return "references[]: the referenced document is a draft; issue it first"
    if status == 2:
        return "references[]: the referenced document is cancelled"
    if country == PERU:
        series = str(header.get("document_sequence_code") or PERU_SERIES[type_id])[:1].upper()
        wanted = str(original_header.get("document_number") or "")[:1].upper()
        if series != wanted:
            return (
                f"header.document_sequence_code {header.get('document_sequence_code')!r}: a note of document "
                f"{original_header.get('document_number')} takes a {wanted} series"
            )
    for field in ("receiver_tax_id_code",):
        if (
            header.get(field)
            and original_header.get(field)
            and _compact(header[field]) != _compact(original_header[field])
        ):
            return f"header.{field} differs from the referenced document's"
    if as_int(header.get("currency_id")) != as_int(original_header.get("currency_id")):
        return "header.currency_id differs from the referenced document's"
    if kind == "credit":
        total = _decimal(body["totals"].get("total_amount"), "totals.total_amount")
        credited = Decimal(0)
        for other in documents.values():
            other_type = as_int(other["header"].get("document_type_id"))
            if other_type not in NOTE_TYPES or NOTE_TYPES[other_type][0] != "credit":
                continue
            for ref in document_references(other)[:1]:
                if note_original(ref, other["header"].get("account_id"), documents) is original:
                    credited += _decimal(other["totals"].get("total_amount"), "totals.total_amount")
        limit = _decimal(original["totals"].get("total_amount"), "totals.total_amount")
        if credited + total > limit + NOTE_TOLERANCE:
            return (
                f"totals.total_amount {total}: credit notes would exceed the referenced document's total "
                f"{limit} ({credited} credited already)"
            )
    return None
