"""Local validation of POST /accounts bodies: every country, valid and invalid, and Koywe's own examples."""

from __future__ import annotations

import json

import pytest

from koywe_account_support import (
    ADMIN_PASSWORD,
    PFX_PASSWORD,
    SAT_PASSWORD,
    TAX_IDS,
    account_payload,
    b64,
    cer_der,
    cer_pem,
    key_der,
    key_pem,
    pdf,
    pfx,
    png,
    registration_data,
)
from koywe_provider.models.accounts import AccountValidationError, account_errors, validate_account
from koywe_test_support import shared_koywe_or_skip

COUNTRIES = sorted(TAX_IDS)


def fields(payload: dict) -> dict[str, str]:
    errors, _ = account_errors(payload)
    return dict(errors)


@pytest.mark.parametrize("country", COUNTRIES)
def test_valid_account_of_every_country_is_normalised(country):
    body = validate_account(account_payload(country))
    assert body["registration_tax_id_code"] == TAX_IDS[country][2]  # Koywe format: no dots
    assert body["registration_company_size"] == "2"
    assert body["country_id"] == country
    assert body["account_config"] == {"rounding_format": 0, "time_zone": "UTC-3"}


@pytest.mark.parametrize(
    ("country", "bad_code"),
    [
        (253, "76086428-4"),
        (66, "900123456-1"),
        (80, "EKU9003199"),
        (83, "12345678901"),
        (89, "00-0000000"),
        (88, "20267565390"),
    ],
)
def test_bad_tax_id_of_every_country(country, bad_code):
    errors = fields(account_payload(country, registration_tax_id_code=bad_code))
    assert list(errors) == ["registration_tax_id_code"]
    assert bad_code in errors["registration_tax_id_code"]
    assert TAX_IDS[country][0] in errors["registration_tax_id_code"]


@pytest.mark.parametrize("country", COUNTRIES)
def test_phone_must_belong_to_the_country(country):
    other = "+51999888777" if country != 83 else "+56984105522"
    errors = fields(account_payload(country, contact_phone=other))
    assert list(errors) == ["contact_phone"] and "E.164" in errors["contact_phone"]
    assert "E.164" in fields(account_payload(country, contact_phone="984105522"))["contact_phone"]


def test_tax_id_type_must_match_the_country():
    errors = fields(account_payload(253, registration_tax_id_type="PE-RUC"))
    assert errors == {
        "registration_tax_id_type": "'PE-RUC' is not a tax id type of Chile (country_id 253); use CL-RUT"
    }
    assert (
        fields(account_payload(89, registration_tax_id_type="US-SSN", registration_tax_id_code="536-90-4399"))
        == {}
    )


def test_generic_mexican_rfc_is_refused_as_the_account_rfc():
    # A receiver-only placeholder, never a company (more in test_account_rules.py).
    errors = fields(account_payload(80, registration_tax_id_code="XAXX010101000"))
    assert list(errors) == ["registration_tax_id_code"]
    assert "generic RFC" in errors["registration_tax_id_code"]


def test_chile_certificate_rules():
    def chile(data):
        return fields(account_payload(253, registration_additional_data=data))

    key = "registration_additional_data.certificate_file"
    assert (
        "expired on 2024-01-31"
        in chile({"certificate_file": b64(pfx(expired=True)), "certificate_password": PFX_PASSWORD})[key]
    )
    assert (
        "certificate_password"
        in chile({"certificate_file": b64(pfx()), "certificate_password": "wrong"})[key]
    )
    assert "PKCS#12" in chile({"certificate_file": b64(pdf()), "certificate_password": PFX_PASSWORD})[key]
    assert (
        "base64"
        in chile({"certificate_file": "MIIZhQIBAzCCGU8GCSqGSIb3DQE...", "certificate_password": "x"})[key]
    )
    missing = chile({})
    assert set(missing) == {key, "registration_additional_data.certificate_password"}


def test_mexico_certificate_rules():
    def mexico(**data):
        base = registration_data(80)
        base.update(data)
        return fields(
            account_payload(80, registration_additional_data={k: v for k, v in base.items() if v is not None})
        )

    cer, key = "registration_additional_data.certificate_cer", "registration_additional_data.certificate_key"
    assert "expired on 2024-01-31" in mexico(certificate_cer=b64(cer_der(expired=True)))[cer]
    assert "DER" in mexico(certificate_cer=b64(cer_pem()))[cer]  # SAT files are DER, not PEM
    assert "does not belong" in mexico(certificate_cer=b64(cer_der(key_index=1)))[key]
    assert "with certificate_password" in mexico(certificate_password="wrong")[key]
    assert "not encrypted" in mexico(certificate_key=b64(key_der(None)))[key]
    assert "registration_additional_data.certificate_password" in mexico(certificate_password=None)


def test_argentina_needs_key_and_certificate():
    errors = fields(account_payload(88, registration_additional_data={}))
    assert set(errors) == {
        "registration_additional_data.certificate_cer",
        "registration_additional_data.certificate_key",
    }
    ok = {"certificate_cer": b64(cer_der()), "certificate_key": b64(key_der(None))}  # DER is accepted too
    assert fields(account_payload(88, registration_additional_data=ok)) == {}
    expired = {"certificate_cer": b64(cer_pem(expired=True)), "certificate_key": b64(key_pem())}
    assert (
        "expired on"
        in fields(account_payload(88, registration_additional_data=expired))[
            "registration_additional_data.certificate_cer"
        ]
    )


def test_colombia_needs_test_set_and_a_real_pdf():
    errors = fields(account_payload(66, registration_additional_data={"registration_form_rut": b64(png())}))
    assert "TEST SET ID" in errors["registration_additional_data.registration_test_set_id"]
    assert "not a PDF" in errors["registration_additional_data.registration_form_rut"]


def test_enums_and_account_config():
    errors = fields(
        account_payload(
            83,
            registration_company_size="5",
            registration_terms_of_use=0,
            registration_type_use=2,
            account_config={
                "rounding_format": 2,
                "time_zone": "Santiago",
                "display_tax_receipt": 2,
                "colour": 1,
            },
            registration_additional_data={"company_logo": b64(pdf())},
        )
    )
    assert set(errors) == {
        "registration_company_size",
        "registration_terms_of_use",
        "registration_type_use",
        "account_config.rounding_format",
        "account_config.time_zone",
        "account_config.colour",
        "registration_additional_data.company_logo",
    }
    assert "terms of use" in errors["registration_terms_of_use"]


def test_every_error_is_reported_and_no_secret_is_echoed():
    payload = account_payload(
        253,
        admin_password="short",
        contact_phone="+1",
        registration_tax_id_code="1-1",
        registration_additional_data={
            "certificate_file": b64(pfx()),
            "certificate_password": "not-" + PFX_PASSWORD,
        },
    )
    with pytest.raises(AccountValidationError) as info:
        validate_account(payload, request="acme-cl")
    message = str(info.value)
    assert message.startswith("account request 'acme-cl' is invalid: ")
    assert {f for f, _ in info.value.errors} == {
        "admin_password",
        "contact_phone",
        "registration_tax_id_code",
        "registration_additional_data.certificate_file",
    }
    for secret in ("short", PFX_PASSWORD, SAT_PASSWORD, ADMIN_PASSWORD, b64(pfx())[:30]):
        assert secret not in message


# --- Koywe's own examples (read from ../shared, never copied) ------------------------------------
# Every Koywe example names the company "my company" / "My company name" and gives a placeholder
# admin password ("nuevaclave", "enternewpassword", "admin_password"): both are refused.
PLACEHOLDERS = {"registration_legal_name_company", "admin_password"}
EXPECTED = {
    # example file: fields that must fail (after replacing Koywe's truncated "…" files with generated ones)
    "api_reference__create_a_new_account.json": {
        "country_id",
        "admin_email",
        "registration_company_size",
        "registration_tax_id_type",
        "contact_name",
    }
    | PLACEHOLDERS,
    "chile__create_a_new_account.json": PLACEHOLDERS,
    "colombia__create_a_new_account.json": {"registration_tax_id_code", "contact_phone"} | PLACEHOLDERS,
    "m_xico__create_a_new_account.json": PLACEHOLDERS,
    "per__create_a_new_account.json": {"registration_tax_id_code"} | PLACEHOLDERS,
}


def _with_generated_files(example: dict) -> dict:
    data = example.get("registration_additional_data") or {}
    country = example.get("country_id")
    generated = registration_data(country) if country in TAX_IDS else {}
    for name, value in list(data.items()):
        if isinstance(value, str) and value.endswith("..."):
            data[name] = generated.get(name, b64(png()) if name == "company_logo" else value)
    if "certificate_password" in data and "certificate_password" in generated:
        data["certificate_password"] = generated["certificate_password"]
    return example


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_koywe_account_examples(name):
    folder = shared_koywe_or_skip() / "examples" / "requests"
    example = json.loads((folder / name).read_text())
    raw_errors = fields(example)
    if any(
        isinstance(v, str) and v.endswith("...")
        for v in (example.get("registration_additional_data") or {}).values()
    ):
        # As published, the truncated files are refused for what they are.
        assert any("base64" in m or "PDF" in m or "PNG" in m for f, m in account_errors(example)[0])
        assert raw_errors
    errors = fields(_with_generated_files(example))
    assert set(errors) == EXPECTED[name], errors
    if name.startswith("colombia"):
        assert "1707975798-1" in errors["registration_tax_id_code"]  # check digit: DIAN's DV is 8
    if name.startswith("per"):
        assert "12345678901" in errors["registration_tax_id_code"]
    if name.startswith("api_reference"):
        assert "253 (Chile)" in errors["country_id"]
