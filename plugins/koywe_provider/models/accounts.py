"""Typed Koywe account payloads (``POST /accounts``) and their validation before any API call.

Source: seed ``003_…`` ("Create a new account", field table), Koywe's OpenAPI ``AccountsPost`` and
``API_NOTES.md`` ("Accounts"). Pure: pydantic v2, python-stdnum (through
:func:`koywe_provider.models.taxids.validate_tax_id`), phonenumbers and cryptography; no Airflow.

:func:`validate_account` returns the payload to send (tax id in Koywe's format, phone in E.164,
``registration_company_size`` as the string Koywe documents) or raises
:class:`AccountValidationError` listing **every** problem as ``(field, message)``. Messages never
contain ``admin_password``, certificate passwords or certificate bytes.

Country rules (``registration_additional_data``):

=======  ==========  =========================================================================
country  tax id      registration data
=======  ==========  =========================================================================
253 CL   ``CL-RUT``  ``certificate_file`` PKCS#12 (PFX) opening with ``certificate_password``
66 CO    ``CO-NIT``  ``registration_test_set_id`` (DIAN) + ``registration_form_rut`` (PDF)
80 MX    ``MX-RFC``  ``certificate_cer`` X.509 DER + ``certificate_key`` DER key opening with
                     ``certificate_password`` (the SAT files), the key must match the certificate
83 PE    ``PE-RUC``  none
89 US    ``US-EIN``, ``US-SSN``  none
88 AR    ``AR-CUIT`` ``certificate_key`` + ``certificate_cer`` (ARCA files, PEM or DER)
=======  ==========  =========================================================================

Binary fields travel as base64 strings. Certificates whose ``notAfter`` is in the past are refused
with the expiry date in the message.

Also refused, each as one ``(field, message)`` of the same report:

- a generic tax id as ``registration_tax_id_code`` (Mexico's ``XAXX010101000`` / ``XEXX010101000``,
  :func:`koywe_provider.models.taxids.is_generic_tax_id`): it stands for a receiver without RFC, never
  for a company;
- a placeholder in a name field (:data:`NAME_FIELDS`, patterns in :data:`PLACEHOLDER_NAMES`):
  ``"string"``, ``"test"``, ``"my company"``, ``"<name>"``, Lorem ipsum…;
- a weak ``admin_password`` (:func:`admin_password_problems`): fewer than
  :data:`ADMIN_PASSWORD_MIN_LENGTH` characters, a zxcvbn score below :data:`ADMIN_PASSWORD_MIN_SCORE`,
  or the company name, the admin e-mail's local part or the tax id inside it. The check runs on the
  resolved value: :func:`account_errors` receives the body after provisioning resolved the secret
  references (``conn:``, ``var:``, ``file:``).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator
from zxcvbn import zxcvbn

from koywe_provider import catalogue
from koywe_provider.models.taxids import is_generic_tax_id, validate_tax_id

__all__ = [
    "ACCOUNT_SECRET_FIELDS",
    "ADMIN_PASSWORD_MIN_LENGTH",
    "ADMIN_PASSWORD_MIN_SCORE",
    "COUNTRIES",
    "NAME_FIELDS",
    "PLACEHOLDER_NAMES",
    "AccountConfig",
    "AccountValidationError",
    "Country",
    "KoyweAccount",
    "RegistrationAdditionalData",
    "account_errors",
    "admin_password_problems",
    "placeholder_reason",
    "validate_account",
]


class Country(IntEnum):
    """Koywe ``country_id`` values accepted by ``POST /accounts`` (seed ``003_…``)."""

    # The catalogue's ids; tests/models/test_catalogue.py checks that no country is missing here.
    CHILE = catalogue.CHILE
    COLOMBIA = catalogue.COLOMBIA
    MEXICO = catalogue.MEXICO
    PERU = catalogue.PERU
    UNITED_STATES = catalogue.UNITED_STATES
    ARGENTINA = catalogue.ARGENTINA


@dataclass(frozen=True)
class CountryRules:
    """What Koywe expects from an account of one country."""

    name: str
    region: str  # phonenumbers region code
    tax_id_types: tuple[str, ...]
    tax_id_example: str


# What an error message shows as a valid registration_tax_id_code of the country.
_TAX_ID_EXAMPLES = {
    Country.CHILE: "76086428-5",
    Country.COLOMBIA: "900123456-8",
    Country.MEXICO: "EKU9003199C1 (12 or 13 characters)",
    Country.PERU: "20100047218 (11 digits, 10/15/17/20…)",
    Country.UNITED_STATES: "12-3456789",
    Country.ARGENTINA: "20-26756539-3 (11 digits)",
}

#: The account rules of every Koywe country: name, phone region and registration tax id types from
#: :mod:`koywe_provider.catalogue`, in its order.
COUNTRIES: dict[int, CountryRules] = {
    Country(c.country_id): CountryRules(
        c.name, c.iso_code, c.account_tax_id_types, _TAX_ID_EXAMPLES[Country(c.country_id)]
    )
    for c in catalogue.COUNTRIES.values()
}
#: Every ``registration_tax_id_type`` ``POST /accounts`` accepts (seed ``003_…``), in country order.
_ACCOUNT_TAX_ID_TYPES = tuple(kind for rules in COUNTRIES.values() for kind in rules.tax_id_types)

#: Fields that are secrets: never in a DAG run conf, an XCom, a rendered template or a log.
ACCOUNT_SECRET_FIELDS = (
    "admin_password",
    "certificate_password",
    "certificate_file",
    "certificate_key",
    "certificate_cer",
)

_TIME_ZONE = re.compile(r"^UTC[+-](0?\d|1[0-4])(:[0-5]\d)?$")
_PLACEHOLDERS = frozenset({"string", "contact_phone", "admin_email", "admin_password", "0"})
# Koywe's own Chile example spells the documented ``registration_company_industry_sector`` this way.
_FIELD_ALIASES = {"registration_company_industry": "registration_company_industry_sector"}


class AccountValidationError(ValueError):
    """An account request failed local validation; nothing was sent to Koywe.

    ``errors`` is a list of ``(field, message)`` (dotted field paths such as
    ``registration_additional_data.certificate_file``); every message says how to fix the field.
    ``str()`` names the request and every field. No secret value is ever part of the message.
    """

    def __init__(self, errors: list[tuple[str, str]], *, request: str | None = None) -> None:
        self.errors = errors
        self.request = request
        who = f"account request {request!r}" if request else "account request"
        detail = "; ".join(f"{field}: {msg}" for field, msg in errors)
        super().__init__(f"{who} is invalid: {detail}")


class AccountConfig(BaseModel):
    """``account_config`` of ``POST /accounts`` (all optional; Koywe's defaults are 0 and ``UTC+0``)."""

    model_config = ConfigDict(extra="forbid")

    rounding_format: Literal[0, 1] | None = Field(None, description="0 net rounding, 1 gross rounding")
    time_zone: str | None = Field(None, description="UTC offset such as UTC-3 or UTC+5:30")
    allow_issuance_based_on_stock: Literal[0, 1, 2] | None = None
    show_document_time: Literal[0, 1] | None = None
    adjust_draft_date: Literal[0, 1] | None = None
    sum_up_detail_lines: Literal[0, 1] | None = None
    order_of_added_products: Literal[0, 1] | None = None
    display_tax_receipt: Literal[0, 1, 2] | None = None
    stock_reservation_for_quotation: Literal[0, 1] | None = None
    cost_greater_than_the_price: Literal[0, 1] | None = None

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if not _TIME_ZONE.match(value):
            raise ValueError("must be a UTC offset such as 'UTC-3', 'UTC+0' or 'UTC+5:30'")
        return value


class RegistrationAdditionalData(BaseModel):
    """``registration_additional_data``: country registration files (base64) and identifiers."""

    model_config = ConfigDict(extra="forbid")

    registration_test_set_id: str | None = Field(None, description="Colombia: TEST SET ID from DIAN")
    registration_form_rut: str | None = Field(None, description="Colombia: DIAN RUT form, PDF as base64")
    certificate_file: str | None = Field(None, description="Chile: PFX (PKCS#12) as base64", repr=False)
    certificate_key: str | None = Field(
        None, description="Mexico/Argentina: private key as base64", repr=False
    )
    certificate_cer: str | None = Field(
        None, description="Mexico/Argentina: certificate as base64", repr=False
    )
    certificate_password: str | None = Field(
        None, description="Chile/Mexico: certificate password", repr=False
    )
    company_logo: str | None = Field(None, description="PNG as base64")


class KoyweAccount(BaseModel):
    """The body of ``POST /accounts`` (seed ``003_…``), typed. Cross-field rules: :func:`validate_account`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    country_id: Country
    contact_name: str = Field(min_length=1, max_length=200)
    contact_phone: str = Field(min_length=1)
    admin_email: EmailStr
    # Strength (length, zxcvbn, personal data) is account_errors' rule: one message with every problem.
    admin_password: str = Field(min_length=1, repr=False)
    registration_legal_name_company: str = Field(min_length=1, max_length=300)
    registration_tax_id_code: str = Field(min_length=1)
    # Literal[a_tuple] is Literal["CL-RUT", "CO-NIT", …] at run time (what pydantic reads).
    registration_tax_id_type: Literal[_ACCOUNT_TAX_ID_TYPES]  # type: ignore[valid-type]
    registration_company_size: Literal["1", "2", "3", "4"]
    registration_terms_of_use: Literal[1]
    registration_type_use: Literal[1]
    registration_company_industry_sector: str | None = None
    registration_additional_data: RegistrationAdditionalData
    account_config: AccountConfig | None = None

    @field_validator("registration_company_size", mode="before")
    @classmethod
    def _size_as_string(cls, value: Any) -> Any:
        # Koywe documents a string; its examples send 1 as well.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("registration_tax_id_type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("country_id", "registration_terms_of_use", "registration_type_use", mode="before")
    @classmethod
    def _int_like(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        return value

    def payload(self) -> dict[str, Any]:
        """The JSON body to POST (unset optional fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


# ------------------------------------------------------------------------------------- messages
_FIX = {
    "country_id": "use one of " + ", ".join(f"{int(c)} ({r.name})" for c, r in COUNTRIES.items()),
    "registration_tax_id_type": f"use {', '.join(_ACCOUNT_TAX_ID_TYPES[:-1])} or {_ACCOUNT_TAX_ID_TYPES[-1]}",
    "registration_company_size": 'use "1" micro, "2" small, "3" medium or "4" large',
    "registration_terms_of_use": "must be 1 (terms of use accepted)",
    "registration_type_use": "must be 1 (billing)",
    "admin_password": "give a strong password of at least 10 characters",
    "admin_email": "give a valid e-mail address such as admin@company.com",
}


def _field_name(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _pydantic_errors(exc: ValidationError) -> list[tuple[str, str]]:
    errors = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        field = _field_name(loc)
        top = str(loc[0]) if loc else ""
        kind = err["type"]
        if kind == "missing":
            message = "is required"
            if top in _FIX:
                message += f"; {_FIX[top]}"
        elif kind == "extra_forbidden":
            message = 'is not a Koywe POST /accounts field; remove it (check the spelling against Koywe\'s API reference, "Create a new account")'
        elif top in _FIX and len(loc) == 1:
            message = _FIX[top]
        elif top == "account_config":
            message = f'{err["msg"]}; see the account_config table of Koywe\'s API reference ("Create a new account") for the allowed values'
        else:
            message = err["msg"]
        errors.append((field, message))
    return errors


# ------------------------------------------------------------------------------------- binaries
def _decode(data: dict[str, Any], name: str, errors: list[tuple[str, str]], what: str) -> bytes | None:
    """Base64 content of ``registration_additional_data.<name>``; records an error when absent or bad."""
    field = f"registration_additional_data.{name}"
    value = data.get(name)
    if value in (None, ""):
        errors.append((field, f"is required: give the {what} as base64"))
        return None
    if not isinstance(value, str):
        errors.append((field, f"must be the {what} as a base64 string"))
        return None
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        errors.append((field, f"is not valid base64; encode the {what} file with base64 (no line prefixes)"))
        return None


def _expiry_error(cert: Any, field: str, now: datetime) -> tuple[str, str] | None:
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        subject = cert.subject.rfc4514_string() or "certificate"
        return (
            field,
            f"the certificate ({subject}) expired on {not_after.date().isoformat()}; "
            "renew it with the tax bureau and send the new file",
        )
    not_before = cert.not_valid_before_utc
    if not_before > now:
        return (field, f"the certificate is not valid before {not_before.date().isoformat()}")
    return None


def _password(data: dict[str, Any]) -> bytes | None:
    value = data.get("certificate_password")
    return value.encode() if isinstance(value, str) and value else None


def _check_chile(data: dict[str, Any], errors: list[tuple[str, str]], now: datetime) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    pfx = _decode(data, "certificate_file", errors, "PKCS#12 (.pfx/.p12) digital certificate")
    password = _password(data)
    if password is None:
        errors.append(
            (
                "registration_additional_data.certificate_password",
                "is required: the password of the .pfx file",
            )
        )
    if pfx is None or password is None:
        return
    field = "registration_additional_data.certificate_file"
    try:
        key, cert, _chain = pkcs12.load_key_and_certificates(pfx, password)
    except ValueError:
        errors.append(
            (
                field,
                "could not be opened as a PKCS#12 file with certificate_password: check that it is the "
                ".pfx/.p12 file and that the password is the one of that file",
            )
        )
        return
    if cert is None or key is None:
        errors.append((field, "the PKCS#12 file must hold both the certificate and its private key"))
        return
    if (problem := _expiry_error(cert, field, now)) is not None:
        errors.append(problem)


def _load_cert(raw: bytes) -> Any:
    from cryptography import x509

    if raw.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(raw)
    return x509.load_der_x509_certificate(raw)


def _load_key(raw: bytes, password: bytes | None, *, der_only: bool) -> Any:
    from cryptography.hazmat.primitives import serialization

    if not der_only and raw.lstrip().startswith(b"-----BEGIN"):
        return serialization.load_pem_private_key(raw, password)
    return serialization.load_der_private_key(raw, password)


def _same_key(key: Any, cert: Any) -> bool:
    from cryptography.hazmat.primitives import serialization

    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return key.public_key().public_bytes(enc, fmt) == cert.public_key().public_bytes(enc, fmt)


def _check_key_pair(
    data: dict[str, Any], errors: list[tuple[str, str]], now: datetime, *, mexico: bool
) -> None:
    cer_field = "registration_additional_data.certificate_cer"
    key_field = "registration_additional_data.certificate_key"
    authority = catalogue.country(Country.MEXICO if mexico else Country.ARGENTINA).tax_bureau
    cer = _decode(data, "certificate_cer", errors, f"{authority} certificate (.cer)")
    key_raw = _decode(data, "certificate_key", errors, f"{authority} private key (.key)")
    password = _password(data)
    if mexico and password is None:
        errors.append(
            (
                "registration_additional_data.certificate_password",
                "is required: the password of the SAT .key file",
            )
        )
    from cryptography import x509

    cert = key = None
    if cer is not None:
        try:
            cert = x509.load_der_x509_certificate(cer) if mexico else _load_cert(cer)
        except ValueError:
            fmt = (
                "an X.509 certificate in DER format (the .cer file as the SAT gives it)"
                if mexico
                else ("an X.509 certificate (.cer/.crt, PEM or DER)")
            )
            errors.append((cer_field, f"is not {fmt}"))
        else:
            if (problem := _expiry_error(cert, cer_field, now)) is not None:
                errors.append(problem)
    if key_raw is not None and (password is not None or not mexico):
        try:
            key = _load_key(key_raw, password, der_only=mexico)
        except TypeError:
            key = None
            if password is None:
                errors.append((key_field, "the key is encrypted: give its certificate_password"))
            else:
                errors.append((key_field, "the key is not encrypted: leave certificate_password empty"))
        except ValueError:
            key = None
            fmt = (
                "a private key in DER format (the .key file as the SAT gives it)"
                if mexico
                else ("a private key (.key, PEM or DER)")
            )
            errors.append(
                (
                    key_field,
                    f"could not be opened as {fmt} with certificate_password; check the file and password",
                )
            )
    if cert is not None and key is not None and not _same_key(key, cert):
        errors.append((key_field, "does not belong to certificate_cer: send the .key issued with that .cer"))


def _check_colombia(data: dict[str, Any], errors: list[tuple[str, str]]) -> None:
    if not str(data.get("registration_test_set_id") or "").strip():
        errors.append(
            (
                "registration_additional_data.registration_test_set_id",
                "is required for Colombia: the TEST SET ID DIAN gives when the company enables e-invoicing",
            )
        )
    pdf = _decode(data, "registration_form_rut", errors, "DIAN RUT form (PDF)")
    if pdf is not None and not (pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:]):
        errors.append(
            (
                "registration_additional_data.registration_form_rut",
                "is not a PDF file (no %PDF- header or %%EOF trailer): send the RUT form PDF downloaded from DIAN",
            )
        )


def _check_logo(data: dict[str, Any], errors: list[tuple[str, str]]) -> None:
    if data.get("company_logo") in (None, ""):
        return
    png = _decode(data, "company_logo", errors, "company logo (PNG)")
    if png is not None and not png.startswith(b"\x89PNG\r\n\x1a\n"):
        errors.append(("registration_additional_data.company_logo", "must be a PNG image encoded as base64"))


# ---------------------------------------------------------------------------------- placeholders
#: The free-text name fields of ``POST /accounts``, with what a real value is. The other strings are
#: ids, codes, files or the e-mail, checked by their own rules; ``registration_company_industry_sector``
#: is a sector, which Koywe's examples send as a code (``"1"``), not a name.
NAME_FIELDS: dict[str, str] = {
    "registration_legal_name_company": "the company's legal name",
    "contact_name": "the name of the person Koywe should contact",
}

#: Values that are not a name: ``(regular expression, why)``, each matched against the **whole**
#: value, trimmed, case-folded, accents dropped and inner blanks collapsed (``"  My  Company "`` is
#: ``"my company"``; ``"Test Labs SpA"`` matches nothing).
#:
#: Why refuse them: Koywe's own API reference example for ``POST /accounts`` (seed ``003_…``) has
#: ``"string"`` in every text field, its Postman examples send ``"my company"``/``"My company name"``
#: and field names as values, and forms get ``test``, ``asdf`` or ``n/a``. Koywe would create an
#: account with such a name and the tax bureau would get documents issued under it, so such a request
#: is pointless: it is refused before any call, naming the field.
PLACEHOLDER_NAMES: tuple[tuple[str, str], ...] = (
    (r"string|str|text|varchar", "a type name, as in Koywe's API reference example"),
    (r"[a-z]+(?:_[a-z0-9]+)+", "a field name, as in Koywe's API reference example"),
    (
        r"(?:tests?|testing|prueba|pruebas)\d*(?: (?:tests?|testing|prueba|pruebas|\d+))*"
        r"|(?:(?:company|empresa|compania|cuenta|account|user|usuario|nombre|name)(?: de)? )"
        r"(?:tests?|testing|prueba|pruebas|demo)"
        r"|(?:tests?|testing|prueba|demo) (?:company|empresa|compania|cuenta|account|user|usuario|name|nombre)",
        "a test value",
    ),
    (r"(?:asdf|qwer|zxcv|qwerty|asdfgh|jkl|hjkl)\w*|asd|qwe|sdf|dfg", "keyboard mashing"),
    (r"x+(?: x+)*|(.)\1*", 'one character repeated ("xxx", "-")'),
    (r"[\W\d_]+", "no letter at all"),
    (r"n\.? ?/? ?a\.?|n\.? ?/? ?d\.?|s/n|not applicable|no aplica|sin nombre", '"not applicable"'),
    (
        r"null|none|nil|nan|undefined|empty|blank|vacio|ninguno|ninguna|nada|unknown|desconocido",
        "an empty value",
    ),
    (r"<.*>|\{.*\}|\[.*\]|\$\{.*\}|%[a-z_]*%", "a template marker such as <company name>"),
    (
        r"(?:(?:your|my|our|the|a|su|mi|tu|nuestra|la) )?(?:company|empresa|compania|business|negocio)"
        r"(?: (?:name|nombre|legal name|razon social))?",
        "a generic company",
    ),
    (
        r"(?:(?:your|my|the|company|legal|contact|full|first|last) )*name|nombre(?: (?:de (?:la )?empresa"
        r"|del contacto|completo|y apellidos?))?|razon social|apellidos?|contact|contacto"
        r"|admin(?:istrator|istrador)?|user(?:name)?|usuario",
        "a form label instead of its value",
    ),
    (
        r"(?:an? )?(?:examples?|samples?|ejemplos?|muestra|demo|dummy|placeholder|fake|foo|bar|foobar|baz)"
        r"(?: (?:company|empresa|name|nombre|inc|corp|user|usuario|s\.?a\.?))?"
        r"|(?:company|empresa|nombre|name)(?: de)? (?:example|ejemplo|muestra)|tbd|tba|todo|por definir",
        "an example value",
    ),
    (r"(?:lorem|ipsum)\b.*|.*\bdolor sit amet\b.*", "Lorem ipsum filler text"),
)
_PLACEHOLDER_RULES = tuple((re.compile(pattern), why) for pattern, why in PLACEHOLDER_NAMES)


def _fold(value: str) -> str:
    """Lower case, accents dropped (``"Compañía"`` → ``"compania"``)."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def placeholder_reason(value: str | None) -> str | None:
    """Why ``value`` is a placeholder rather than a name (a :data:`PLACEHOLDER_NAMES` reason), or ``None``.

    ``placeholder_reason(" TEST test ") == "a test value"``; ``placeholder_reason("Ana Rojas") is None``.
    """
    if not isinstance(value, str):
        return None
    text = " ".join(_fold(value).split())
    if not text:
        return None  # empty is the model's "required" error
    for pattern, why in _PLACEHOLDER_RULES:
        if pattern.fullmatch(text):
            return why
    return None


def _check_names(
    payload: dict[str, Any], failed: set[str], country: int | None, errors: list[tuple[str, str]]
) -> None:
    known = catalogue.COUNTRIES.get(country) if country is not None else None
    for field, what in NAME_FIELDS.items():
        value = payload.get(field)
        if field in failed or (why := placeholder_reason(value)) is None:
            continue
        shown = value.strip() if len(value.strip()) <= 60 else value.strip()[:57] + "..."
        if field == "registration_legal_name_company":
            where = f" with the {known.tax_bureau}" if known is not None else ""
            fix = f"give the company's legal name as registered{where}"
        else:
            fix = "give the real name of the person Koywe should contact"
        errors.append((field, f"{shown!r} is a placeholder ({why}), not {what}; {fix}"))


# ------------------------------------------------------------------------------ admin password
#: Fewest characters an ``admin_password`` may have.
ADMIN_PASSWORD_MIN_LENGTH = 10
#: Lowest zxcvbn score (0–4) an ``admin_password`` may have: 3 is zxcvbn's "safely unguessable"
#: (at least 10^8 guesses: moderate protection against an offline attack on a slow hash).
ADMIN_PASSWORD_MIN_SCORE = 3
# zxcvbn refuses to score longer input (its matching is quadratic): the first 72 characters decide.
_ZXCVBN_MAX_LENGTH = 72
#: Words an attacker of a Koywe admin account tries first, given to zxcvbn as known words (with the
#: request's own values and the ``POST /accounts`` field names): the service, the role, and the words
#: of the passwords in Koywe's own account examples ("nuevaclave", "enternewpassword"; Spanish words
#: are not in zxcvbn's English dictionaries).
_PASSWORD_CONTEXT = (
    "koywe",
    "billing",
    "factura",
    "facturacion",
    "admin",
    "administrador",
    "password",
    "contraseña",
    "contrasena",
    "clave",
    "nueva",
    "nuevaclave",
    "enter",
    "new",
    "enternewpassword",
)
# Legal-form words: "Andes SpA" → only "andes" counts as the company name inside a password.
_LEGAL_FORM_WORDS = frozenset(
    [
        "spa",
        "ltda",
        "limitada",
        "sociedad",
        "anonima",
        "responsabilidad",
        "cerrada",
        "abierta",
        "capital",
        "variable",
        "individual",
        "eirl",
        "company",
        "compania",
        "corp",
        "corporation",
        "incorporated",
        "limited",
        "group",
        "grupo",
        "holding",
        "holdings",
    ]
)
# A name, e-mail or tax id part shorter than this is not looked for inside the password ("ana" would
# refuse "banana…"): zxcvbn still gets it as a known word.
_MIN_PERSONAL_TOKEN = 4
_ZXCVBN_PATTERNS = {
    "spatial": "a keyboard pattern",
    "repeat": "repeated characters or words",
    "sequence": "a sequence such as abc or 123",
    "date": "a date",
    "regex": "a recent year",
}
_ZXCVBN_DICTIONARIES = {
    "passwords": "a commonly used password",
    "user_inputs": "words of the request itself or of Koywe's examples (koywe, admin, clave…)",
    "surnames": "a common name",
    "male_names": "a common name",
    "female_names": "a common name",
}


def _alnum(value: str) -> str:
    return "".join(ch for ch in _fold(value) if ch.isalnum())


def _words(value: str) -> list[str]:
    return [w for w in re.split(r"[^0-9a-z]+", _fold(value)) if w]


def _company_tokens(name: str) -> set[str]:
    tokens = {_alnum(name)} | {w for w in _words(name) if w not in _LEGAL_FORM_WORDS}
    return {t for t in tokens if len(t) >= _MIN_PERSONAL_TOKEN}


def _email_tokens(email: str) -> set[str]:
    local = email.rsplit("@", 1)[0] if "@" in email else ""
    tokens = {_alnum(local), *_words(local)}
    return {t for t in tokens if len(t) >= _MIN_PERSONAL_TOKEN}


def _tax_id_tokens(code: str) -> set[str]:
    tokens = {_alnum(code)}
    if "-" in code:  # the number without its check digit: "76.086.428-5" → "76086428"
        tokens.add(_alnum(code.rsplit("-", 1)[0]))
    tokens.update(re.findall(r"\d{6,}", _alnum(code)))
    return {t for t in tokens if len(t) >= 6}


def _guessability(result: dict[str, Any]) -> str:
    found: list[str] = []
    for match in result.get("sequence", ()):
        pattern = match.get("pattern")
        if pattern == "dictionary":
            what = _ZXCVBN_DICTIONARIES.get(match.get("dictionary_name"), "a common word")
        else:
            what = _ZXCVBN_PATTERNS.get(pattern)
        if what and what not in found:
            found.append(what)
    return f": it is made of {', '.join(found)}" if found else ""


def admin_password_problems(
    password: str,
    *,
    company_name: str | None = None,
    admin_email: str | None = None,
    tax_id_code: str | None = None,
    contact_name: str | None = None,
) -> list[str]:
    """Why ``password`` is too weak for an ``admin_password``; an empty list when it is strong enough.

    Refused: fewer than :data:`ADMIN_PASSWORD_MIN_LENGTH` characters; a zxcvbn (Dropbox's password
    strength estimator, with its own dictionaries of common passwords, words and names) score below
    :data:`ADMIN_PASSWORD_MIN_SCORE`, the company, contact, e-mail and Koywe's own words counted as
    known words; the company name (or one of its words of 4+ letters, legal forms aside), the admin
    e-mail's local part (or one of its parts of 4+ characters) or the tax id (with or without its
    check digit) inside it, case and accents ignored.

    Run it on the **clear** value (after secret references are resolved). The phrases never contain
    the password nor any part of it, so they may be logged and stored.
    """
    if not isinstance(password, str):
        return ["must be a string"]
    password = password.strip()  # as KoyweAccount sends it (str_strip_whitespace)
    problems: list[str] = []
    if len(password) < ADMIN_PASSWORD_MIN_LENGTH:
        problems.append(f"it has fewer than {ADMIN_PASSWORD_MIN_LENGTH} characters")
    folded = _alnum(password)
    checks = (
        (company_name, _company_tokens, "the company name (registration_legal_name_company)"),
        (admin_email, _email_tokens, "the admin e-mail's local part (admin_email)"),
        (tax_id_code, _tax_id_tokens, "the tax id (registration_tax_id_code)"),
    )
    for value, tokens_of, what in checks:
        if isinstance(value, str) and any(token in folded for token in tokens_of(value)):
            problems.append(f"it contains {what}")
    # Koywe's API reference example sends each field's own name ("admin_password") or "string".
    known = [
        *_PASSWORD_CONTEXT,
        "string",
        *KoyweAccount.model_fields,
        *RegistrationAdditionalData.model_fields,
    ]
    for value in (company_name, admin_email, tax_id_code, contact_name):
        if isinstance(value, str) and value.strip():
            known += [value.strip(), _alnum(value), *_words(value)]
    result = zxcvbn(password[:_ZXCVBN_MAX_LENGTH], user_inputs=known)
    if result["score"] < ADMIN_PASSWORD_MIN_SCORE:
        problems.append(
            f"it is easy to guess (zxcvbn strength {result['score']} of 4, at least "
            f"{ADMIN_PASSWORD_MIN_SCORE} needed){_guessability(result)}"
        )
    return problems


def _check_admin_password(payload: dict[str, Any], failed: set[str], errors: list[tuple[str, str]]) -> None:
    password = payload.get("admin_password")
    if "admin_password" in failed or not isinstance(password, str):
        return

    def text(name: str) -> str | None:
        value = payload.get(name)
        return value if isinstance(value, str) else None

    problems = admin_password_problems(
        password,
        company_name=text("registration_legal_name_company"),
        admin_email=text("admin_email"),
        tax_id_code=text("registration_tax_id_code"),
        contact_name=text("contact_name"),
    )
    if problems:
        errors.append(
            (
                "admin_password",
                "is too weak: "
                + "; ".join(problems)
                + f". Choose a passphrase of several uncommon words, at least {ADMIN_PASSWORD_MIN_LENGTH} "
                "characters, without the company name, the e-mail or the tax id, and update the secret",
            )
        )


# ---------------------------------------------------------------------------------- validation
def _as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def account_errors(
    payload: dict[str, Any], *, now: datetime | None = None
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Every problem of an account payload, and the normalised payload (meaningful only without errors).

    Runs the pydantic model and, independently, the cross-field rules (country ↔ tax id type, tax id
    check digits, phone of the country, registration data of the country), so that one run lists
    every error. ``now`` (aware UTC) is the instant certificates must be valid at.
    """
    now = now or datetime.now(UTC)
    if not isinstance(payload, dict):
        return [("", "the account request must be a JSON object with the POST /accounts fields")], {}
    payload = dict(payload)
    for alias, name in _FIELD_ALIASES.items():
        if alias in payload and name not in payload:
            payload[name] = payload.pop(alias)
    errors: list[tuple[str, str]] = []
    normalised: dict[str, Any] = {}
    try:
        normalised = KoyweAccount.model_validate(payload).payload()
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc))
    failed = {field.split(".")[0] for field, _ in errors}

    country = _as_int(payload.get("country_id"))
    rules = COUNTRIES.get(country) if country is not None else None
    tax_type = str(payload.get("registration_tax_id_type") or "").strip().upper()
    code = payload.get("registration_tax_id_code")
    if rules is not None and tax_type and tax_type not in rules.tax_id_types:
        errors.append(
            (
                "registration_tax_id_type",
                f"{tax_type!r} is not a tax id type of {rules.name} (country_id {country}); "
                f"use {' or '.join(rules.tax_id_types)}",
            )
        )
    elif "registration_tax_id_code" not in failed and is_generic_tax_id(tax_type, code):
        errors.append(
            (
                "registration_tax_id_code",
                f"{str(code).strip()!r} is a generic RFC (the SAT's code for an invoice receiver without "
                "an RFC of its own), valid only as a receiver: a company cannot be onboarded under it; "
                "give the company's own RFC" + (f" such as {rules.tax_id_example}" if rules else ""),
            )
        )
    elif "registration_tax_id_code" not in failed and code not in (None, "") and tax_type:
        try:
            formatted = validate_tax_id(tax_type, str(code))
        except ValueError as exc:
            example = f" such as {rules.tax_id_example}" if rules else ""
            errors.append(("registration_tax_id_code", f"{exc}; give the company's real {tax_type}{example}"))
        else:
            if normalised:
                normalised["registration_tax_id_code"] = formatted

    phone = payload.get("contact_phone")
    if "contact_phone" not in failed and isinstance(phone, str) and rules is not None:
        problem = _phone_problem(phone, rules)
        if problem:
            errors.append(("contact_phone", problem))
        elif normalised:
            normalised["contact_phone"] = phonenumbers.format_number(
                phonenumbers.parse(phone, rules.region), phonenumbers.PhoneNumberFormat.E164
            )

    _check_names(payload, failed, country, errors)
    _check_admin_password(payload, failed, errors)

    data = payload.get("registration_additional_data")
    if isinstance(data, dict) and country is not None:
        if country == Country.CHILE:
            _check_chile(data, errors, now)
        elif country == Country.COLOMBIA:
            _check_colombia(data, errors)
        elif country == Country.MEXICO:
            _check_key_pair(data, errors, now, mexico=True)
        elif country == Country.ARGENTINA:
            _check_key_pair(data, errors, now, mexico=False)
        _check_logo(data, errors)
    # One message per field and problem, in a stable order.
    unique = list(dict.fromkeys(errors))
    return unique, (normalised if not unique else {})


def _phone_problem(phone: str, rules: CountryRules) -> str | None:
    fix = (
        f"give the {rules.name} number in E.164, e.g. +{phonenumbers.country_code_for_region(rules.region)}…"
    )
    if phone.strip().lower() in _PLACEHOLDERS:
        return f"is a placeholder; {fix}"
    if not phone.strip().startswith("+"):
        return f"{phone!r} is not in E.164 (it must start with + and the country code); {fix}"
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return f"{phone!r} is not a phone number; {fix}"
    if not phonenumbers.is_valid_number_for_region(parsed, rules.region):
        return f"{phone!r} is not a valid {rules.name} phone number; {fix}"
    return None


def validate_account(
    payload: dict[str, Any], *, request: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Validate a ``POST /accounts`` body and return it normalised for Koywe.

    :param payload: the body, with secrets already resolved (``admin_password``, certificate files
        and passwords in ``registration_additional_data``).
    :param request: name of the provisioning request, used in the error message.
    :returns: the body to send: tax id in Koywe's format (Chile ``NNNNNNNN-D``), phone in E.164,
        ``registration_company_size`` as a string, ``registration_company_industry`` renamed to the
        documented ``registration_company_industry_sector``.
    :raises AccountValidationError: with every ``(field, message)`` found.
    """
    errors, normalised = account_errors(payload, now=now)
    if errors:
        raise AccountValidationError(errors, request=request)
    return normalised
