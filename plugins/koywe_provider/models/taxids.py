"""Tax identifier validation and formatting for Koywe documents and accounts.

Koywe identifies issuers and receivers by ``(<tax_id_type>, <tax_id_code>)`` pairs such as
``("CL-RUT", "76399932-7")``. Source: Koywe tax id table, summarised in ``API_NOTES.md``
("Tax id types and formats"). Check digits are verified with python-stdnum.

Koywe formats (what :func:`validate_tax_id` returns):

===========  =====================================  ==========================================
type         Koywe format                            validator
===========  =====================================  ==========================================
``CL-RUT``   ``NNNNNNNN-D`` (7-8 digits, D may be K)  ``stdnum.cl.rut``
``PE-RUC``   11 digits                               ``stdnum.pe.ruc``
``PE-DNI``   8 digits                                ``stdnum.pe.cui`` (check digit dropped)
``CO-NIT``   ``NNNNNNNNN-D`` (the dash is required)  ``stdnum.co.nit``
``MX-RFC``   12/13 chars, upper case                 ``stdnum.mx.rfc`` (+ generic RFCs)
``AR-CUIT``  11 digits                               ``stdnum.ar.cuit``
``US-EIN``   9 digits                                ``stdnum.us.ein``
``US-SSN``   9 digits                                ``stdnum.us.ssn``
===========  =====================================  ==========================================

Other types (``CO-CC``, ``CO-NOP``, foreign ids…) are accepted as any non-empty string, stripped of
surrounding blanks. Which *type* names a document may carry (a misspelt ``CL-RTU`` is refused, a foreign
receiver's id is not checked with a domestic rule) is :func:`check_tax_id_type`'s and the document
model's. The country of each type
(:func:`koywe_provider.catalogue.country_of_tax_id_type`) and Mexico's generic RFCs
(``Country.generic_tax_id_codes``) are catalogue data: :func:`is_generic_tax_id` tells a generic code
apart, for the places where only a receiver may carry one (an account's RFC, a document's issuer).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from stdnum.ar import cuit
from stdnum.cl import rut
from stdnum.co import nit
from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.mx import rfc
from stdnum.pe import cui, ruc
from stdnum.us import ein, ssn

from koywe_provider import catalogue

__all__ = [
    "GENERIC_MX_RFCS",
    "KNOWN_TAX_ID_TYPES",
    "check_tax_id_type",
    "is_generic_tax_id",
    "is_known_tax_id_type",
    "validate_tax_id",
]

#: SAT generic RFCs: ``XAXX010101000`` (national receiver without RFC, "público en general") and
#: ``XEXX010101000`` (foreign receiver). Koywe's Mexico examples send the latter with the foreign
#: receiver's own id type (``US-EIN``), see :func:`validate_tax_id` ``allow_generic_rfc``.
GENERIC_MX_RFCS = frozenset(catalogue.country(catalogue.MEXICO).generic_tax_id_codes)
# Every country's generic codes (only Mexico has any today), letters and digits only, upper case.
_GENERIC_CODES = frozenset(
    "".join(ch for ch in code if ch.isalnum()).upper()
    for c in catalogue.COUNTRIES.values()
    for code in c.generic_tax_id_codes
)


def _cl_rut(code: str) -> str:
    number = rut.validate(code)  # compact, upper case K
    return f"{number[:-1]}-{number[-1]}"


def _co_nit(code: str) -> str:
    # Koywe's format is NNNNNNNNN-D. Without the dash a NIT whose check digit was left out
    # ("860517022") would be read as another taxpayer (86051702, check digit 2): refuse it.
    if "-" not in code:
        raise nit.InvalidFormat(
            "write the check digit after a dash (NNNNNNNNN-D); without it the last digit would be read "
            "as the check digit of another NIT"
        )
    number = nit.validate(code)
    return f"{number[:-1]}-{number[-1]}"


def _pe_dni(code: str) -> str:
    number = cui.validate(code)
    return number[:8]


def _mx_rfc(code: str) -> str:
    number = rfc.compact(code)
    if number in GENERIC_MX_RFCS:
        return number
    # Real RFCs with a wrong homoclave check digit exist (SAT issued them), like stdnum's default.
    number = rfc.validate(number)
    if len(number) not in (12, 13):
        raise rfc.InvalidLength("an RFC with homoclave has 12 (company) or 13 (person) characters")
    return number


_VALIDATORS: dict[str, tuple[str, Callable[[str], str]]] = {
    "CL-RUT": ("Chilean RUT, NNNNNNNN-D", _cl_rut),
    "PE-RUC": ("Peruvian RUC, 11 digits", ruc.validate),
    "PE-DNI": ("Peruvian DNI, 8 digits", _pe_dni),
    "CO-NIT": ("Colombian NIT, NNNNNNNNN-D", _co_nit),
    "MX-RFC": ("Mexican RFC, 12 or 13 characters", _mx_rfc),
    "AR-CUIT": ("Argentine CUIT, 11 digits", cuit.validate),
    "US-EIN": ("US EIN, 9 digits", ein.validate),
    "US-SSN": ("US SSN, 9 digits", ssn.validate),
}

#: Tax id types whose code is checked (format and check digit); any other type is free text.
KNOWN_TAX_ID_TYPES = frozenset(_VALIDATORS)


def is_known_tax_id_type(tax_id_type: str | None) -> bool:
    """True when :func:`validate_tax_id` checks codes of this type (case-insensitive)."""
    return bool(tax_id_type) and tax_id_type.strip().upper() in KNOWN_TAX_ID_TYPES


#: Tax id types of Koywe's table that the catalogue knows (checked or free-text codes), upper case.
_CATALOGUE_TYPES = frozenset(kind for c in catalogue.COUNTRIES.values() for kind in c.tax_id_types)
_KOYWE_ISO_CODES = frozenset(c.iso_code for c in catalogue.COUNTRIES.values())
_FOREIGN_TYPE = re.compile(r"^[A-Z]{2}-[A-Z0-9]{2,12}$")


def check_tax_id_type(tax_id_type: str) -> str:
    """``tax_id_type`` in Koywe's spelling (upper case), or ``ValueError`` for a misspelt one.

    Accepted: a type of the catalogue (``CL-RUT``, ``PE-DNI``, ``CO-NOP``… any case), and a type of a
    country Koywe does not issue in written as Koywe writes them, ``<ISO 3166 code>-<name>``
    (``BR-CNPJ``: a foreign receiver's id, not checked). Refused: a type that looks like one of a Koywe
    country's but is not in its table (``CL-RTU``, ``PE_RUC``, ``RUT``), with the closest known type.
    """
    import difflib

    kind = str(tax_id_type).strip().upper()
    if kind in _CATALOGUE_TYPES:
        return kind
    if _FOREIGN_TYPE.match(kind) and kind[:2] not in _KOYWE_ISO_CODES:
        return kind
    close = difflib.get_close_matches(kind.replace("_", "-"), sorted(_CATALOGUE_TYPES), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ValueError(
        f"unknown tax id type {tax_id_type!r}{hint}; Koywe's types: {', '.join(sorted(_CATALOGUE_TYPES))}"
    )


def is_generic_tax_id(tax_id_type: str | None, code: str | None) -> bool:
    """True when ``code`` is a tax bureau's generic "no tax id" code, such as Mexico's
    ``XAXX010101000`` (público en general) and ``XEXX010101000`` (foreigner).

    A generic code only stands for a *receiver* that has no tax id of its own: it never identifies
    a company, so an account (``registration_tax_id_code``) or a document's issuer must not carry
    one. The codes are the catalogue's (``Country.generic_tax_id_codes``).

    :param tax_id_type: the type declared with the code. It does not narrow the answer: Koywe's own
        Mexico "foreign receiver without RFC" example types ``XEXX010101000`` as ``US-EIN``, so a
        generic code is generic under any type (and with none).
    :param code: the code as typed: case, blanks, dots and dashes are ignored (``"xaxx-010101-000"``).
    """
    if code is None:
        return False
    return "".join(ch for ch in str(code) if ch.isalnum()).upper() in _GENERIC_CODES


def validate_tax_id(tax_id_type: str, code: str, *, allow_generic_rfc: bool = False) -> str:
    """Validate ``code`` as a tax id of ``tax_id_type`` and return it in Koywe's format.

    :param tax_id_type: Koywe tax id type such as ``"CL-RUT"`` (case-insensitive).
    :param code: the identifier as typed by a person: dots, blanks and dashes are tolerated
        (``"76.399.932-7"`` → ``"76399932-7"``; ``"860.517.022-2"`` → ``"860517022-2"``).
    :param allow_generic_rfc: also accept the SAT generic RFCs (``XAXX010101000``,
        ``XEXX010101000``) whatever the declared type: Koywe's Mexico "foreign receiver without RFC"
        example sends ``XEXX010101000`` typed ``US-EIN``. Used for receivers only.
    :returns: the normalised code (Koywe format). Unknown types return the stripped code.
    :raises ValueError: the code is empty, malformed or its check digit is wrong; the message names
        the type and the code.
    """
    if code is None or not str(code).strip():
        raise ValueError(f"empty {tax_id_type or 'tax id'} code")
    code = str(code).strip()
    kind = (tax_id_type or "").strip().upper()
    if allow_generic_rfc and code.upper() in GENERIC_MX_RFCS:
        return code.upper()
    entry = _VALIDATORS.get(kind)
    if entry is None:
        return code
    label, validator = entry
    try:
        return validator(code)
    except StdnumValidationError as exc:
        reason = str(exc).rstrip(".") or "invalid"
        raise ValueError(f"{code!r} is not a valid {kind} ({label}): {reason}") from None
