"""POST/GET /V1/accounts: creation, validation, secrets never echoed."""

from __future__ import annotations

import pytest

ACCOUNT = {
    "country_id": 253,
    "contact_name": "Ana",
    "admin_email": "ana@example.com",
    "admin_password": "s3cret!",
    "registration_legal_name_company": "Demo SpA",
    "registration_tax_id_code": "76086428-5",
    "registration_tax_id_type": "CL-RUT",
    "registration_terms_of_use": 1,
    "registration_type_use": 1,
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
    assert body["registration_tax_id_code"] == "76086428-5"
    assert "admin_password" not in body
    assert not [k for k in body if k.startswith("certificate_")]
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
    account_id = api.post(f"{api.base}/accounts", json={**ACCOUNT, "country_id": 80}).json()["account_id"]
    doc = api.post(f"{api.base}/documents", json=make_doc(type_id=700, account_id=account_id)).json()
    assert doc["header"]["document_type_taxbureau"] == "700"
    cancelled = api.put(f"{api.base}/documents/{doc['document_id']}", json={"document_status": "2"})
    assert cancelled.status_code == 200  # Mexico account: cancellation allowed
