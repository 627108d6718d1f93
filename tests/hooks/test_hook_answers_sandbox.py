"""The hook reads Koywe's answers through the typed vocabulary, against the sandbox over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from koywe_provider.exceptions import KoyweOutcomeUnknownError
from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_provider.models.answers import DocumentAnswer
from koywe_provider.models.statuses import (
    CounterpartyStatus,
    DocumentStatus,
    ResultStatus,
    TaxBureauValidationStatus,
)


def hook_for(conn_id: str) -> KoyweHook:
    return KoyweHook(conn_id, token_store=MemoryTokenStore())


@pytest.mark.parametrize("shape", ["empty", "error"])
def test_a_2xx_without_document_id_is_an_unknown_outcome(shape, koywe_conn, clean_sandbox, factura):
    clean_sandbox.set_faults(no_document_id_rate=1, no_document_id_body=shape)
    with pytest.raises(KoyweOutcomeUnknownError, match="without a document_id"):
        hook_for(koywe_conn()).create_document(factura(), reference="NOID-1")
    assert clean_sandbox.stats()["no_document_id_responses"] == 1


def test_result_status_2_is_a_document_that_exists_and_is_not_sent(koywe_conn, clean_sandbox, factura):
    clean_sandbox.set_faults(result_status_2_rate=1)
    document = hook_for(koywe_conn()).create_document(factura(), reference="RS2-1")
    assert document.result_status is ResultStatus.NOT_SENT
    assert document.document_id and document.document_number
    assert "1033" in document.result.error_message


@pytest.mark.parametrize("shape", ["hal", "flat", "data"])
def test_a_lookup_keeps_folio_and_statuses_of_flat_list_items(shape, koywe_conn, clean_sandbox, factura):
    hook = hook_for(koywe_conn())
    created = hook.create_document(factura(), reference="FLAT-1")
    hook.create_document(factura(), reference="OTHER-1")
    clean_sandbox.set_faults(list_shape=shape, list_items="flat")
    (found,) = hook.find_documents_by_reference("FLAT-1", account_id=4201)
    assert found.shape == "flat"
    assert found.document_id == created.document_id
    assert found.document_number == created.document_number
    assert found.document_status is DocumentStatus.ISSUED
    assert found.content().total_amount == created.totals.total_amount
    assert found.content().document_type_id == created.header.document_type_id


def test_header_document_status_is_the_counterparty_view(koywe_conn, clean_sandbox, factura):
    hook = hook_for(koywe_conn())
    created = hook.create_document(factura(), reference="CP-1")
    clean_sandbox.set_counterparty_status(created.document_id, 3)
    document = hook.get_document(created.document_id)
    assert document.counterparty_status is CounterpartyStatus.ACCEPTED
    assert document.document_status is DocumentStatus.ISSUED  # not "cancelled"


def test_a_status_put_answers_what_koywe_says_not_the_target(koywe_conn, clean_sandbox):
    from koywe_test_support import mexico_ingreso

    clean_sandbox.set_validation(cancel_pending_acceptance=True)
    hook = hook_for(koywe_conn())
    created = hook.create_document(mexico_ingreso(), reference="MX-CANCEL-1")
    answered = hook.update_document_status(created.document_id, DocumentStatus.CANCELLED)
    assert answered.document_status is DocumentStatus.ISSUED
    assert answered.model_extra["cancellation_status"] == "pending_acceptance"
    clean_sandbox.complete_cancellation(created.document_id, "accepted")
    assert hook.get_document(created.document_id).document_status is DocumentStatus.CANCELLED


def test_async_reads_match_the_sync_ones(koywe_conn, clean_sandbox, factura):
    hook = hook_for(koywe_conn())
    ids = [hook.create_document(factura(), reference=f"ASYNC-{i}").document_id for i in range(3)]
    clean_sandbox.reject_references()
    today = hook.get_document(ids[0]).header.issue_date

    async def read():
        listed = [d async for d in hook.alist_documents(per_page=2)]
        by_id = await hook.aget_documents(ids)
        windowed = await hook.aget_documents(ids, issue_date_from=today, issue_date_to=today)
        return listed, by_id, windowed

    listed, by_id, windowed = asyncio.run(read())
    assert [d.document_id for d in listed] == [d.document_id for d in hook.list_documents(per_page=2)]
    assert set(by_id) == set(windowed) == set(ids)
    assert all(isinstance(d, DocumentAnswer) for d in by_id.values())
    assert hook.get_documents(ids, issue_date_from=today, issue_date_to=today).keys() == set(ids)


def test_a_bureau_rejection_is_read_from_the_answer(koywe_conn, clean_sandbox):
    from koywe_test_support import peru_factura

    clean_sandbox.reject_references("PE-REJ-1")
    document = hook_for(koywe_conn()).create_document(peru_factura(), reference="PE-REJ-1")
    assert document.taxbureau_validation_status is TaxBureauValidationStatus.CONTENT_REJECTED
    assert document.bureau_final and document.taxbureau_validation_comments
