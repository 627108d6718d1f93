"""``POST /accounts`` validation of the sandbox, like Koywe's (seed ``003_…``): 400 ``{"error": …}``.

Independent of the provider: the checks are written from Koywe's field table, with python-stdnum for
check digits. The sandbox stores certificates but never returns them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from stdnum import exceptions as stdnum_exceptions
from stdnum.ar import cuit
from stdnum.cl import rut
from stdnum.co import nit
from stdnum.mx import rfc
from stdnum.pe import ruc
from stdnum.us import ein, ssn

REQUIRED = (
    "country_id",
    "contact_name",
    "contact_phone",
    "admin_email",
    "admin_password",
    "registration_legal_name_company",
    "registration_tax_id_code",
    "registration_tax_id_type",
    "registration_company_size",
    "registration_terms_of_use",
    "registration_type_use",
)
#: country_id -> (tax id types, phone prefix)
COUNTRIES = {
    253: (("CL-RUT",), "+56"),
    66: (("CO-NIT",), "+57"),
    80: (("MX-RFC",), "+52"),
    83: (("PE-RUC",), "+51"),
    89: (("US-EIN", "US-SSN"), "+1"),
    88: (("AR-CUIT",), "+54"),
}
TAX_ID_CHECKS = {
    "CL-RUT": rut,
    "CO-NIT": nit,
    "MX-RFC": rfc,
    "PE-RUC": ruc,
    "US-EIN": ein,
    "US-SSN": ssn,
    "AR-CUIT": cuit,
}
#: Registration data Koywe requires per country (in ``registration_additional_data``).
COUNTRY_DATA = {
    253: ("certificate_file", "certificate_password"),
    66: ("registration_test_set_id", "registration_form_rut"),
    80: ("certificate_key", "certificate_cer", "certificate_password"),
    88: ("certificate_key", "certificate_cer"),
}
BASE64_FIELDS = ("certificate_file", "certificate_key", "certificate_cer", "registration_form_rut")


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def account_error(body: Any) -> str | None:
    """Koywe's 400 message for an invalid ``POST /accounts`` body, or ``None`` when it is acceptable."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    for key in REQUIRED:
        if body.get(key) in (None, ""):
            return f"{key} is required"
    country = _int(body["country_id"])
    if country not in COUNTRIES:
        return f"country_id {body['country_id']} is not supported"
    types, prefix = COUNTRIES[country]
    kind = str(body["registration_tax_id_type"]).upper()
    if kind not in TAX_ID_CHECKS:
        return f"registration_tax_id_type {kind} is not supported"
    if kind not in types:
        return f"registration_tax_id_type {kind} does not match country_id {country}"
    code = str(body["registration_tax_id_code"])
    try:
        TAX_ID_CHECKS[kind].validate(code)
    except stdnum_exceptions.ValidationError:
        return f"registration_tax_id_code {code} is not a valid {kind}"
    if kind in ("CL-RUT", "CO-NIT") and ("." in code or "-" not in code):
        return f"registration_tax_id_code {code} must be written without dots, with a dash before the check digit"
    if not str(body["contact_phone"]).startswith(prefix):
        return f"contact_phone must start with {prefix}"
    if str(body["registration_company_size"]) not in ("1", "2", "3", "4"):
        return "registration_company_size must be 1, 2, 3 or 4"
    if _int(body["registration_terms_of_use"]) != 1:
        return "registration_terms_of_use must be 1"
    if _int(body["registration_type_use"]) != 1:
        return "registration_type_use must be 1"
    additional = body.get("registration_additional_data")
    if additional is None:
        additional = {}
    if not isinstance(additional, dict):
        return "registration_additional_data must be an object"
    for key in COUNTRY_DATA.get(country, ()):
        # Koywe's OpenAPI also lists certificate_file/certificate_password at the top level.
        value = additional.get(key, body.get(key))
        if value in (None, ""):
            return f"registration_additional_data.{key} is required for country_id {country}"
        if key in BASE64_FIELDS:
            try:
                base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                return f"registration_additional_data.{key} must be base64"
    return None


def public_view(account: dict[str, Any]) -> dict[str, Any]:
    """``GET /accounts/{id}`` body (OpenAPI ``AccountsResponseGet``): no password, no certificate."""
    created = {
        k: v
        for k, v in account.items()
        if k not in ("account_id", "admin_password", "registration_additional_data")
        and not k.startswith("certificate_")
    }
    created.setdefault("certification_status", "pending")
    created.setdefault("certification_status_trace", [])
    return {"account_id": account["account_id"], "account_created": created}
