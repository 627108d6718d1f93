"""Account rules of issue 11 item 4: generic RFCs, placeholder names, weak admin passwords.

Each refusal is one ``(field, message)`` of the same "every error at once" report; valid requests stay
valid. Passwords never appear in a message.
"""

from __future__ import annotations

import pytest

from koywe_account_support import (
    ADMIN_PASSWORD,
    LEGAL_NAMES,
    TAX_IDS,
    account_payload,
    provisioning_request,
)
from koywe_provider import catalogue
from koywe_provider.models.accounts import (
    ADMIN_PASSWORD_MIN_LENGTH,
    ADMIN_PASSWORD_MIN_SCORE,
    NAME_FIELDS,
    PLACEHOLDER_NAMES,
    AccountValidationError,
    account_errors,
    admin_password_problems,
    placeholder_reason,
    validate_account,
)
from koywe_provider.models.taxids import GENERIC_MX_RFCS, is_generic_tax_id
from koywe_provider.services.provisioning import SecretResolver, full_payload, parse_request

COUNTRIES = sorted(TAX_IDS)
# Mexico's generic RFCs as the catalogue has them (never re-typed here).
GENERIC_RFCS = sorted(catalogue.country(catalogue.MEXICO).generic_tax_id_codes)
STRONG = "Quetzal-ribera-Tamarindo-73"


def fields(payload: dict) -> dict[str, str]:
    errors, _ = account_errors(payload)
    return dict(errors)


# --- 1. generic RFCs ------------------------------------------------------------------------------
def test_generic_rfcs_come_from_the_catalogue():
    assert GENERIC_RFCS  # public in general and foreigner (tests/models/test_catalogue.py has them)
    assert frozenset(GENERIC_RFCS) == GENERIC_MX_RFCS


@pytest.mark.parametrize("code", GENERIC_RFCS)
@pytest.mark.parametrize("spelling", [str, str.lower, lambda c: f" {c[:4]}-{c[4:10]}-{c[10:]} "])
def test_generic_rfc_is_refused_as_the_account_rfc(code, spelling):
    typed = spelling(code)
    errors = fields(account_payload(80, registration_tax_id_code=typed))
    assert list(errors) == ["registration_tax_id_code"]
    message = errors["registration_tax_id_code"]
    assert "generic RFC" in message and "receiver" in message and "cannot be onboarded" in message
    assert typed.strip() in message


@pytest.mark.parametrize("code", GENERIC_RFCS)
def test_generic_rfc_under_another_type_is_refused_too(code):
    # Koywe's own foreign-receiver example types XEXX010101000 as US-EIN.
    errors = fields(account_payload(89, registration_tax_id_code=code))
    assert "generic RFC" in errors["registration_tax_id_code"]


@pytest.mark.parametrize("code", GENERIC_RFCS)
@pytest.mark.parametrize("kind", ["MX-RFC", "mx-rfc", "US-EIN", "EXT", "", None])
def test_is_generic_tax_id_for_every_declared_type(code, kind):
    assert is_generic_tax_id(kind, code)
    assert is_generic_tax_id(kind, code.lower())
    assert is_generic_tax_id(kind, f"{code[:4]} {code[4:10]}-{code[10:]}")


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("MX-RFC", "EKU9003199C1"),  # a real company RFC
        ("MX-RFC", "XAXX010101001"),  # not the generic code
        ("CL-RUT", "76086428-5"),
        ("MX-RFC", ""),
        ("MX-RFC", None),
        (None, None),
    ],
)
def test_is_generic_tax_id_is_false_for_real_and_empty_codes(kind, code):
    assert not is_generic_tax_id(kind, code)


def test_a_real_rfc_is_still_accepted():
    assert validate_account(account_payload(80))["registration_tax_id_code"] == "EKU9003199C1"


# --- 2. placeholder names -------------------------------------------------------------------------
PLACEHOLDERS = [
    "string",
    "String ",
    "test",
    "TEST",
    "test test",
    "  Test   TEST ",
    "prueba",
    "Empresa de Prueba",
    "asdf",
    "qwerty",
    "xxx",
    "XXX XXX",
    "n/a",
    "N/A",
    "null",
    "None",
    "-",
    "...",
    "<company name>",
    "<nombre>",
    "{{name}}",
    "your company",
    "Your Company Name",
    "My company name",  # Koywe's Chile example
    "my company",  # Koywe's Colombia, Mexico and Peru examples
    "example",
    "Example Company",
    "Lorem ipsum",
    "Lorem ipsum dolor sit amet, consectetur",
    "contact_name",  # Koywe's API reference example: every field its own name
    "registration_legal_name_company",
    "123",
]


@pytest.mark.parametrize("field", sorted(NAME_FIELDS))
@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_placeholder_name_is_refused_naming_the_field(field, value):
    errors = fields(account_payload(83, **{field: value}))
    assert list(errors) == [field], errors
    message = errors[field]
    assert message.startswith(f"{value.strip()!r} is a placeholder (")
    assert NAME_FIELDS[field] in message
    if field == "registration_legal_name_company":
        assert "as registered with the SUNAT" in message  # the country's tax bureau


@pytest.mark.parametrize(
    "value",
    [
        "Ana Rojas",
        "fernando rojas",
        "Bruce Wayne",
        "Xu Li",
        "Ña Pancha",
        "Testa Hermanos Ltda",
        "Demo Tecnologías SpA",
        "Example Consulting LLC",
        "Empresa Nacional del Petróleo",
        "Bar Central Ltda",
        "X Corp",
        "3M Chile S.A.",
        "Nonato Pérez",
        *LEGAL_NAMES.values(),
    ],
)
def test_real_names_are_not_placeholders(value):
    assert placeholder_reason(value) is None
    assert fields(account_payload(83, registration_legal_name_company=value, contact_name=value)) == {}


def test_placeholder_table_has_a_reason_per_pattern():
    assert all(pattern and why for pattern, why in PLACEHOLDER_NAMES)
    assert placeholder_reason("string") == PLACEHOLDER_NAMES[0][1]
    assert placeholder_reason(None) is None and placeholder_reason("") is None


# --- 3. weak admin passwords ----------------------------------------------------------------------
def _password_error(password: str, country: int = 253, **changes) -> str:
    payload = account_payload(country, admin_password=password, **changes)
    with pytest.raises(AccountValidationError) as info:
        validate_account(payload, request="onboard-cl")
    assert [f for f, _ in info.value.errors] == ["admin_password"], info.value.errors
    text = str(info.value)
    assert password not in text  # the password is never echoed, whole or stripped
    assert password.strip() not in text
    return dict(info.value.errors)["admin_password"]


def test_password_shorter_than_the_minimum_is_refused():
    assert ADMIN_PASSWORD_MIN_LENGTH == 10
    message = _password_error("Zq7#vLp2!")  # 9 random characters
    assert "fewer than 10 characters" in message
    assert "easy to guess" not in message  # random enough: only the length is wrong


@pytest.mark.parametrize(
    "password",
    [
        "password123",
        "qwertyuiop",
        "1234567890",
        "iloveyou2024",
        "Password2024!",
        "aaaaaaaaaaaa",
        "nuevaclave",  # Koywe's Chile and Colombia examples
        "enternewpassword",  # Koywe's Mexico and Peru examples
        "Koywe2024!",
        "admin12345",
    ],
)
def test_common_or_guessable_password_is_refused(password):
    message = _password_error(password)
    assert f"at least {ADMIN_PASSWORD_MIN_SCORE} needed" in message
    assert "zxcvbn strength" in message


def test_field_name_as_password_is_refused():
    # Koywe's API reference example: every field its own name (the field name is in every message).
    errors = dict(account_errors(account_payload(253, admin_password="admin_password"))[0])
    assert list(errors) == ["admin_password"] and "zxcvbn strength 0" in errors["admin_password"]
    assert "admin_password" not in errors["admin_password"]


@pytest.mark.parametrize(
    ("password", "what"),
    [
        ("Comercializadora-Tucan-91", "the company name"),
        ("LOS-ANDES-tucan-pampa", "the company name"),
        ("comercializadoralosandesspa", "the company name"),
        ("Pelicano-florencia.vidal-77", "the admin e-mail's local part"),
        ("Tucan-76086428-pampa", "the tax id"),
        ("Tucan-760864285-pampa", "the tax id"),
    ],
)
def test_password_containing_company_email_or_tax_id_is_refused(password, what):
    assert not admin_password_problems(password)  # strong on its own…
    message = _password_error(password, admin_email="florencia.vidal@losandes.example.cl")
    assert f"it contains {what}" in message  # …but not for this company


def test_short_personal_tokens_are_not_looked_for():
    # The e-mail local part "ana" is too short to refuse every password containing it.
    assert admin_password_problems("Banana-ribera-Tamarindo-73", admin_email="ana@empresa.example.com") == []


def test_every_password_problem_in_one_message():
    message = _password_error("andes1")
    assert "fewer than 10" in message
    assert "the company name" in message
    assert "easy to guess" in message


def test_admin_password_problems_never_contain_the_password():
    for password in ("aaaaaaaaaaaa", "abcdefghij", "qwertyuiop", "1990-01-01", "Andes2024!!x"):
        problems = admin_password_problems(password, company_name="Comercial Andes SpA")
        assert problems
        assert all(password not in p for p in problems)


def test_a_password_longer_than_zxcvbn_accepts_is_judged_on_its_start():
    long = STRONG + "-" + "x" * 200
    assert admin_password_problems(long) == []
    assert fields(account_payload(253, admin_password=long)) == {}


def test_an_empty_password_is_required():
    assert "at least 10 characters" in fields(account_payload(253, admin_password=""))["admin_password"]


def test_the_check_runs_on_the_resolved_secret(tmp_path):
    # provisioning resolves conn:/var:/file: references (full_payload) and then calls account_errors:
    # the weak clear value read from the file is refused, and never shown.
    obj = provisioning_request(253, tmp_path)
    (tmp_path / "cl" / "admin_password.txt").write_text("nuevaclave\n")
    request = parse_request(obj, source="test", default_id="r")
    payload, secret_errors = full_payload(request, SecretResolver(tmp_path, mask=lambda value: None))
    assert secret_errors == [] and payload["admin_password"] == "nuevaclave"
    errors = dict(account_errors(payload)[0])
    assert list(errors) == ["admin_password"]
    assert "nuevaclave" not in errors["admin_password"]


# --- all at once, and valid stays valid -----------------------------------------------------------
def test_every_new_refusal_is_in_one_report():
    payload = account_payload(
        80,
        registration_tax_id_code="XAXX010101000",
        registration_legal_name_company="string",
        contact_name="test test",
        admin_password="password1",
    )
    with pytest.raises(AccountValidationError) as info:
        validate_account(payload, request="acme-mx")
    assert [f for f, _ in info.value.errors] == [
        "registration_tax_id_code",
        "registration_legal_name_company",
        "contact_name",
        "admin_password",
    ]
    assert "password1" not in str(info.value)


@pytest.mark.parametrize("country", COUNTRIES)
def test_valid_stays_valid(country, tmp_path):
    assert fields(account_payload(country)) == {}
    assert fields(account_payload(country, admin_password=STRONG)) == {}
    assert (
        admin_password_problems(
            ADMIN_PASSWORD,
            company_name=LEGAL_NAMES[country],
            admin_email="ana@empresa.example.com",
            tax_id_code=TAX_IDS[country][1],
        )
        == []
    )
    # The same company through provisioning: references resolved from files, then validated.
    request = parse_request(provisioning_request(country, tmp_path), source="test", default_id="r")
    payload, secret_errors = full_payload(request, SecretResolver(tmp_path, mask=lambda value: None))
    assert secret_errors == [] and account_errors(payload)[0] == []
