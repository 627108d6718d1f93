"""Authentication: token issue, wrong credentials, missing/unknown/expired/revoked tokens."""

from __future__ import annotations

import pytest
import requests

from koywe_sandbox.testing import run_sandbox


def test_auth_success_returns_opaque_bearer_token(sandbox):
    response = requests.post(
        f"{sandbox.base_url}/auth", json={"grant_type": "password", **sandbox.credentials}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 32
    assert sandbox.stats()["auth_calls"] == 1


def test_auth_wrong_credentials_is_401(sandbox):
    payload = {"grant_type": "password", **sandbox.credentials, "password": "wrong"}
    response = requests.post(f"{sandbox.base_url}/auth", json=payload)
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid credentials"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"client_id": None}, "client_id"),
        ({"grant_type": "client_credentials"}, "grant_type"),
        ({"username": ""}, "username"),
    ],
)
def test_auth_bad_request_is_400_naming_the_field(sandbox, change, field):
    payload = {"grant_type": "password", **sandbox.credentials, **change}
    payload = {k: v for k, v in payload.items() if v is not None}
    response = requests.post(f"{sandbox.base_url}/auth", json=payload)
    assert response.status_code == 400
    assert field in response.json()["error"]


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_missing_or_unknown_token_is_401(sandbox, header):
    headers = {"Authorization": header} if header else {}
    for method, path in [
        ("GET", "/documents"),
        ("GET", "/documents/1000"),
        ("POST", "/documents"),
        ("POST", "/accounts"),
    ]:
        response = requests.request(method, f"{sandbox.base_url}{path}", headers=headers, json={})
        assert response.status_code == 401, (method, path)
        assert response.json() == {"error": "Invalid or expired token"}


def test_expired_token_is_401():
    """Frozen sandbox clock: the token lives exactly ``token_ttl`` seconds of sandbox time, however slow
    the machine is."""
    with run_sandbox(token_ttl=1, manual_clock=True) as sb:
        token = requests.post(f"{sb.base_url}/auth", json={"grant_type": "password", **sb.credentials}).json()
        assert token["expires_in"] == 1
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert requests.get(f"{sb.base_url}/documents", headers=headers).status_code == 200
        sb.advance_clock(0.999)
        assert requests.get(f"{sb.base_url}/documents", headers=headers).status_code == 200
        sb.advance_clock(0.001)  # expiry = issue time + ttl, and a token at its expiry is expired
        response = requests.get(f"{sb.base_url}/documents", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "Invalid or expired token"}


def test_expired_token_on_the_real_clock(sandbox, token_for):
    """Without a frozen clock, advancing the sandbox clock past the default 3600 s lifetime expires it."""
    headers = {"Authorization": f"Bearer {token_for(sandbox)}"}
    assert requests.get(f"{sandbox.base_url}/documents", headers=headers).status_code == 200
    sandbox.advance_clock(3600)
    assert requests.get(f"{sandbox.base_url}/documents", headers=headers).status_code == 401
    fresh = {"Authorization": f"Bearer {token_for(sandbox)}"}
    assert requests.get(f"{sandbox.base_url}/documents", headers=fresh).status_code == 200


def test_custom_credentials_are_the_only_ones_accepted():
    with run_sandbox(client_id="cid", client_secret="csec", username="u", password="p") as sb:
        assert sb.credentials == {
            "client_id": "cid",
            "client_secret": "csec",
            "username": "u",
            "password": "p",
        }
        ok = requests.post(f"{sb.base_url}/auth", json={"grant_type": "password", **sb.credentials})
        assert ok.status_code == 200
        defaults = {
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "username": "sandbox-user",
            "password": "sandbox-password",
        }
        assert (
            requests.post(f"{sb.base_url}/auth", json={"grant_type": "password", **defaults}).status_code
            == 401
        )


def test_revoke_tokens_invalidates_every_issued_token(sandbox, token_for):
    tokens = [token_for(sandbox), token_for(sandbox)]
    faults = sandbox.set_faults(revoke_tokens=True)
    assert faults["revoke_tokens"] is False  # one-shot action, never stored
    for token in tokens:
        response = requests.get(f"{sandbox.base_url}/documents", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
    fresh = token_for(sandbox)
    assert requests.get(f"{sandbox.base_url}/documents", headers={"Authorization": f"Bearer {fresh}"}).ok
    assert sandbox.stats()["revocations"] == 1


def test_revoke_after_documents(sandbox, token_for, make_doc):
    sandbox.set_faults(revoke_after_documents=2)
    headers = {"Authorization": f"Bearer {token_for(sandbox)}"}
    assert requests.post(f"{sandbox.base_url}/documents", json=make_doc(), headers=headers).status_code == 201
    assert requests.get(f"{sandbox.base_url}/documents", headers=headers).status_code == 200
    assert requests.post(f"{sandbox.base_url}/documents", json=make_doc(), headers=headers).status_code == 201
    assert requests.get(f"{sandbox.base_url}/documents", headers=headers).status_code == 401
    headers = {"Authorization": f"Bearer {token_for(sandbox)}"}
    assert requests.post(f"{sandbox.base_url}/documents", json=make_doc(), headers=headers).status_code == 201
    assert requests.get(f"{sandbox.base_url}/documents", headers=headers).status_code == 200  # fires once
    assert sandbox.stats()["revocations"] == 1
