"""POST/GET /V1/accounts: creation, validation, secrets never echoed."""

from __future__ import annotations

import pytest

ACCOUNT = {
    "country_id": 253,
    "contact_name": "Ana",
    "contact_phone": "+56912345678",
    "admin_email": "ana@example.com",
    "admin_password": "s3cret!",
    "registration_legal_name_company": "Demo SpA",
    "registration_tax_id_code": "76086428-5",
    "registration_tax_id_type": "CL-RUT",
    "registration_company_size": "1",
    "registration_terms_of_use": 1,
    "registration_type_use": 1,
    "registration_additional_data": {},
    "certificate_file": "UEZYLi4u",
    "certificate_password": "pfx-pass",
}


def test_create_and_get_account_without_secrets(api, sandbox):
    response = api.post(f"{api.base}/accounts", json=ACCOUNT)
    assert response.status_code == 201
    account_id = response.json()["account_id"]
    assert isinstance(account_id, str)
    second = api.post(f"{api.base}/accounts", json=ACCOUNT).json()["account_id"]
    assert second != account_id
    stored = api.get(f"{api.base}/accounts/{account_id}")
    assert stored.status_code == 200
    body = stored.json()
    assert body["account_id"] == account_id
    created = body["account_created"]  # OpenAPI AccountsResponseGet
    assert created["registration_tax_id_code"] == "76086428-5"
    assert "admin_password" not in created
    assert not [k for k in created if k.startswith("certificate_")]
    assert "s3cret!" not in stored.text and "pfx-pass" not in stored.text
    assert sandbox.stats()["accounts_created"] == 2


@pytest.mark.parametrize("field", ["country_id", "registration_tax_id_code"])
def test_account_required_fields(api, field):
    body = {k: v for k, v in ACCOUNT.items() if k != field}
    response = api.post(f"{api.base}/accounts", json=body)
    assert response.status_code == 400
    assert field in response.json()["error"]


def test_unknown_account_is_404(api):
    response = api.get(f"{api.base}/accounts/12345")
    assert response.status_code == 404
    assert response.json() == {"error": "Account not found"}


def test_document_country_falls_back_to_the_account(api, make_doc):
    mexico = {
        **ACCOUNT,
        "country_id": 80,
        "contact_phone": "+525512345678",
        "registration_tax_id_type": "MX-RFC",
        "registration_tax_id_code": "EKU9003199C1",
        "registration_additional_data": {
            "certificate_key": "S0VZ",
            "certificate_cer": "Q0VS",
            "certificate_password": "x",
        },
    }
    account_id = api.post(f"{api.base}/accounts", json=mexico).json()["account_id"]
    doc = api.post(f"{api.base}/documents", json=make_doc(type_id=700, account_id=account_id)).json()
    assert doc["header"]["document_type_taxbureau"] == "700"
    cancelled = api.put(f"{api.base}/documents/{doc['document_id']}", json={"document_status": "2"})
    assert cancelled.status_code == 200  # Mexico account: cancellation allowed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"country_id": 1}, "country_id 1 is not supported"),
        (
            {"registration_tax_id_type": "PE-RUC"},
            "registration_tax_id_type PE-RUC does not match country_id 253",
        ),
        (
            {"registration_tax_id_code": "76086428-4"},
            "registration_tax_id_code 76086428-4 is not a valid CL-RUT",
        ),
        ({"registration_tax_id_code": "76.086.428-5"}, "without dots"),
        ({"contact_phone": "+5491123456789"}, "contact_phone must start with +56"),
        ({"registration_company_size": "5"}, "registration_company_size must be 1, 2, 3 or 4"),
        ({"registration_terms_of_use": 0}, "registration_terms_of_use must be 1"),
        (
            {"certificate_file": None},
            "registration_additional_data.certificate_file is required for country_id 253",
        ),
        ({"contact_phone": ""}, "contact_phone is required"),
    ],
)
def test_account_validated_like_koywe(api, sandbox, change, message):
    response = api.post(f"{api.base}/accounts", json={**ACCOUNT, **change})
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert sandbox.stats()["accounts_created"] == 0
