"""KoyweHook against the sandbox over real HTTP: token caching, classification, pagination, secrets."""

from __future__ import annotations

import socket

import pytest

from koywe_provider.exceptions import (
    KoyweAuthError,
    KoyweConfigurationError,
    KoyweNotFoundError,
    KoyweOutcomeUnknownError,
    KoyweRateLimitedError,
    KoyweRejectedError,
    KoyweTransientError,
)
from koywe_provider.hooks.koywe import KoyweHook, parse_retry_after
from koywe_provider.hooks.token_store import CachedToken, MemoryTokenStore
from koywe_provider.models.answers import DocumentAnswer, DocumentPage
from koywe_provider.models.references import merge_internal_reference
from koywe_provider.models.statuses import DocumentStatus


def hook_for(conn_id: str, store: MemoryTokenStore | None = None) -> KoyweHook:
    return KoyweHook(conn_id, token_store=store or MemoryTokenStore())


def test_one_auth_for_many_calls_and_hooks(koywe_conn, clean_sandbox, factura):
    conn_id = koywe_conn()
    store = MemoryTokenStore()
    hook = hook_for(conn_id, store)
    for i in range(5):
        doc = hook.create_document(factura(), reference=f"REF-{i}")
        assert isinstance(doc, DocumentAnswer) and doc.document_id
    assert len(list(hook.list_documents())) == 5
    # another hook in the same process, and one in a "new process" that only shares the store
    hook_for(conn_id, store).get_document(doc.document_id)
    from koywe_provider.hooks import koywe as hook_module

    hook_module._process_tokens.clear()
    hook_for(conn_id, store).get_document(doc.document_id)
    assert clean_sandbox.stats()["auth_calls"] == 1


def test_token_is_refreshed_when_nearly_expired(koywe_conn, clean_sandbox):
    conn_id = koywe_conn()
    store = MemoryTokenStore()
    hook = hook_for(conn_id, store)
    hook.get_token()
    first = store.load()
    # four minutes left: under the five-minute margin, so the next call logs in again
    from datetime import timedelta

    store.save(
        CachedToken(first.access_token, first.expires_at - timedelta(seconds=first.seconds_left() - 240))
    )
    from koywe_provider.hooks import koywe as hook_module

    hook_module._process_tokens.clear()
    hook.get_token()
    assert clean_sandbox.stats()["auth_calls"] == 2
    assert store.load().seconds_left() > 3000


def test_revoked_token_triggers_exactly_one_refresh(koywe_conn, clean_sandbox, factura):
    conn_id = koywe_conn()
    hook = hook_for(conn_id)
    hook.create_document(factura(), reference="A")
    clean_sandbox.set_faults(revoke_tokens=True)
    hook.create_document(factura(), reference="B")
    hook.create_document(factura(), reference="C")
    stats = clean_sandbox.stats()
    assert stats["auth_calls"] == 2
    assert stats["documents_created"] == 3
    assert stats["duplicate_references"] == 0


def test_refresh_reuses_a_token_another_process_already_refreshed(koywe_conn, clean_sandbox):
    conn_id = koywe_conn()
    store = MemoryTokenStore()
    a, b = hook_for(conn_id, store), hook_for(conn_id, store)
    a.get_token()
    clean_sandbox.set_faults(revoke_tokens=True)
    from koywe_provider.hooks import koywe as hook_module

    stale = store.load().access_token
    fresh = a._token(min_seconds_left=300, failed=stale)  # "process A" refreshes after its 401
    hook_module._process_tokens.clear()
    hook_module._process_tokens[b._token_key] = CachedToken(
        stale, fresh.expires_at
    )  # "process B" still has the old one
    list(b.list_documents())
    assert clean_sandbox.stats()["auth_calls"] == 2  # B took A's token from the store: no third login


def test_placeholder_credentials_are_refused_locally(koywe_conn, clean_sandbox):
    for bad in ("", "0", "YOUR_CLIENT_ID", "<client_id>"):
        creds = {**clean_sandbox.credentials, "client_id": bad}
        conn_id = koywe_conn(f"koywe_bad_{abs(hash(bad))}", credentials=creds)
        with pytest.raises(KoyweConfigurationError, match="client_id is empty or a placeholder"):
            hook_for(conn_id).get_token()
    assert clean_sandbox.stats()["auth_calls"] == 0


def test_wrong_credentials_raise_auth_error_without_secrets(koywe_conn, clean_sandbox):
    creds = {**clean_sandbox.credentials, "password": "definitely-wrong-password"}
    conn_id = koywe_conn(credentials=creds)
    with pytest.raises(KoyweAuthError) as info:
        hook_for(conn_id).get_token()
    assert "definitely-wrong-password" not in str(info.value)
    assert clean_sandbox.credentials["client_secret"] not in str(info.value)


def test_rejected_400_names_the_field(koywe_conn, clean_sandbox, factura):
    hook = hook_for(koywe_conn())
    payload = factura()
    del payload["header"]["currency_id"]
    with pytest.raises(KoyweRejectedError) as info:
        hook.create_document(payload, reference="R-400")
    assert info.value.status_code == 400
    assert "currency_id" in info.value.error_message
    assert clean_sandbox.stats()["documents_created"] == 0


def test_rate_limited_429_keeps_retry_after(koywe_conn):
    from koywe_sandbox.testing import run_sandbox

    with run_sandbox(rate_limit=1) as limited:
        hook = hook_for(
            koywe_conn("koywe_limited", base_url=limited.base_url, credentials=limited.credentials)
        )
        with pytest.raises(KoyweRateLimitedError) as info:
            for _ in range(5):
                list(hook.list_documents(per_page=1))
        assert info.value.retry_after is not None and info.value.retry_after >= 1
        assert limited.stats()["rate_limited"] >= 1


def test_server_errors_are_transient_and_create_nothing(koywe_conn, clean_sandbox, factura):
    hook = hook_for(koywe_conn())
    hook.get_token()
    clean_sandbox.set_faults(error_5xx_rate=1.0)
    with pytest.raises(KoyweTransientError):
        hook.create_document(factura(), reference="T-1")
    clean_sandbox.set_faults(error_5xx_rate=0)
    assert clean_sandbox.stats()["documents_created"] == 0


def test_lost_response_is_outcome_unknown_and_the_document_exists(koywe_conn, clean_sandbox, factura):
    hook = hook_for(koywe_conn())
    hook.get_token()
    clean_sandbox.set_faults(lost_response_rate=1.0)
    with pytest.raises(KoyweOutcomeUnknownError):
        hook.create_document(factura(), reference="LOST-1")
    clean_sandbox.set_faults(lost_response_rate=0)
    found = hook.find_documents_by_reference("LOST-1", account_id=4201)
    assert len(found) == 1


def test_read_timeout_after_post_is_outcome_unknown(koywe_conn, clean_sandbox, factura):
    hook = hook_for(koywe_conn(timeout=1))
    hook.get_token()
    clean_sandbox.set_faults(slow_response_rate=1.0, slow_response_ms=2500)
    with pytest.raises(KoyweOutcomeUnknownError, match="Koywe may have acted on it"):
        hook.create_document(factura(), reference="SLOW-1")
    clean_sandbox.set_faults(slow_response_rate=0)
    assert clean_sandbox.stats()["documents_created"] == 1


def test_connection_refused_is_transient(koywe_conn, clean_sandbox, factura):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    conn_id = koywe_conn("koywe_closed", base_url=f"http://127.0.0.1:{port}/V1")
    store = MemoryTokenStore()
    from datetime import UTC, datetime, timedelta

    store.save(CachedToken("cached-token", datetime.now(UTC) + timedelta(hours=1)))
    with pytest.raises(KoyweTransientError, match="connection failed"):
        hook_for(conn_id, store).create_document(factura(), reference="REFUSED-1")


def test_not_found(koywe_conn, clean_sandbox):
    with pytest.raises(KoyweNotFoundError):
        hook_for(koywe_conn()).get_document(999999)


@pytest.mark.parametrize("envelope", ["hal", "flat", "data"])
def test_list_documents_paginates_every_envelope(envelope, koywe_conn, factura):
    from koywe_sandbox.testing import run_sandbox

    with run_sandbox(list_envelope=envelope) as sb:
        hook = hook_for(koywe_conn(f"koywe_{envelope}", base_url=sb.base_url, credentials=sb.credentials))
        for i in range(23):
            hook.create_document(factura(), reference=f"P-{i}")
        docs = list(hook.list_documents(per_page=10))
        assert len(docs) == 23
        assert len({d.document_id for d in docs}) == 23
        assert sb.stats()["list_calls"] == 3


def test_find_by_reference_filters_account_and_reports_duplicates(koywe_conn, clean_sandbox, factura):
    hook = hook_for(koywe_conn())
    hook.create_document(factura(account_id=4201), reference="DUP-1")
    hook.create_document(factura(account_id=4201), reference="DUP-1")
    hook.create_document(factura(account_id=9999), reference="DUP-1")
    assert len(hook.find_documents_by_reference("DUP-1", account_id=4201)) == 2
    assert len(hook.find_documents_by_reference("DUP-1")) == 3
    assert hook.find_documents_by_reference("NOPE") == []
    assert clean_sandbox.stats()["lookups"] == 3


def test_every_post_carries_the_internal_reference(koywe_conn, clean_sandbox, factura):
    payload = factura()
    payload["references"] = [
        {"reference_code": "801", "reference_number": "OC-7", "description": "Orden de compra"}
    ]
    hook_for(koywe_conn()).create_document(payload, reference="INT-9")
    (stored,) = clean_sandbox.documents()
    refs = stored["references"]
    assert refs[0]["reference_number"] == "OC-7"
    assert {
        "reference_code": 5,
        "reference_number": "INT-9",
        "description": "Internal transaction ID",
    } in refs
    assert "references" not in factura()  # the caller's payload is not modified


def test_client_secret_never_becomes_a_header(koywe_conn, clean_sandbox):
    hook = hook_for(koywe_conn())
    session = hook.get_conn()
    values = " ".join(f"{k}={v}" for k, v in session.headers.items())
    assert clean_sandbox.credentials["client_secret"] not in values
    assert "client_id" not in values
    assert session.auth is None


def test_status_update_and_accounts(koywe_conn, clean_sandbox, factura):
    hook = hook_for(koywe_conn())
    draft = factura()
    draft["options"] = {"draft_only": True}
    doc = hook.create_document(draft, reference="DRAFT-1")
    assert doc.document_status is DocumentStatus.DRAFT
    updated = hook.update_document_status(doc.document_id, 1)
    assert updated.document_status is DocumentStatus.ISSUED
    account_id = hook.create_account(
        {
            "country_id": 253,
            "contact_name": "Ana",
            "contact_phone": "+56912345678",
            "admin_email": "ana@example.com",
            "admin_password": "s3cret-pass",
            "registration_legal_name_company": "Demo SpA",
            "registration_tax_id_code": "76086428-5",
            "registration_tax_id_type": "CL-RUT",
            "registration_company_size": "1",
            "registration_terms_of_use": 1,
            "registration_type_use": 1,
            "registration_additional_data": {"certificate_file": "UEZYLi4u", "certificate_password": "pfx"},
        }
    )
    assert hook.get_account(account_id).account_id == account_id


# --- pure functions -----------------------------------------------------------------------------
def test_envelopes_and_next_page():
    hal = {
        "_embedded": {"documents": [{"document_id": 1}]},
        "_links": {"self": {}},
        "page_count": 3,
        "page": 1,
    }
    page = DocumentPage.parse(hal, 1)
    assert [d.document_id for d in page.documents] == ["1"]
    assert page.next_page is None  # HAL without _links.next
    hal["_links"]["next"] = {"href": "?page=2"}
    assert DocumentPage.parse(hal, 1).next_page == 2
    assert DocumentPage.parse({**hal, "page_count": 1}, 1).next_page is None
    flat = {"documents": [{"document_id": 1}], "page_count": 2}
    assert DocumentPage.parse(flat, 1).next_page == 2 and DocumentPage.parse(flat, 2).next_page is None
    data = {"data": [{"document_id": 1}], "pagination": {"total": 15, "per_page": 10, "current_page": 1}}
    assert DocumentPage.parse(data, 1).next_page == 2
    last = {**data, "pagination": {"total": 15, "per_page": 10, "current_page": 2}}
    assert DocumentPage.parse(last, 2).next_page is None
    assert DocumentPage.parse({"documents": []}, 1).next_page is None


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_merge_internal_reference_is_idempotent():
    once = merge_internal_reference({"references": []}, "X-1")
    twice = merge_internal_reference(once, "X-1")
    assert (
        twice["references"]
        == once["references"]
        == [{"reference_code": 5, "reference_number": "X-1", "description": "Internal transaction ID"}]
    )
    assert merge_internal_reference(
        {"references": [{"reference_code": "05", "reference_number": "X-1"}]}, "X-1"
    )["references"] == [{"reference_code": "05", "reference_number": "X-1"}]
    # a later generation replaces the earlier generation's internal reference, keeping the others
    own = {"reference_code": "801", "reference_number": "OC-7"}
    second = merge_internal_reference({"references": [own, *once["references"]]}, "X-1~2")
    assert second["references"] == [
        own,
        {"reference_code": 5, "reference_number": "X-1~2", "description": "Internal transaction ID"},
    ]


def test_cached_token_repr_hides_the_token():
    from datetime import UTC, datetime

    token = CachedToken("secret-token-value", datetime.now(UTC))
    assert "secret-token-value" not in repr(token)
