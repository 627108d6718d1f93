"""One ``POST /auth`` per token life for the whole deployment: four processes that find the cached
token rejected at once log in once between them (the "401 storm"), through the shared store's lock."""

from __future__ import annotations

import multiprocessing

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import token_store_for

PROCESSES = 4


def _read_documents(conn_id: str, store_url: str, base_url: str, api_user: str, start, results) -> None:
    hook = KoyweHook(
        conn_id,
        token_store=token_store_for(store_url, base_url=base_url, api_user=api_user),
        shared_state_url=store_url,
    )
    start.wait(60)
    list(hook.list_documents())
    results.put(hook.token_store.load().access_token)


def test_four_processes_with_a_revoked_token_log_in_once(koywe_conn, clean_sandbox, tmp_path):
    conn_id = koywe_conn()
    store_url = f"sqlite:///{tmp_path / 'shared.db'}"
    base_url, api_user = clean_sandbox.base_url, clean_sandbox.credentials["username"]
    first = KoyweHook(
        conn_id,
        token_store=token_store_for(store_url, base_url=base_url, api_user=api_user),
        shared_state_url=store_url,
    )
    list(first.list_documents())  # the deployment's token, cached in the shared store
    assert clean_sandbox.stats()["auth_calls"] == 1
    clean_sandbox.set_faults(revoke_tokens=True)  # Koywe now refuses it: every process gets a 401

    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=_read_documents, args=(conn_id, store_url, base_url, api_user, start, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    start.set()
    tokens = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    assert clean_sandbox.stats()["auth_calls"] == 2  # the first login, and ONE renewal for all four
    assert len(set(tokens)) == 1


def test_a_token_cached_for_another_api_user_is_never_used(koywe_conn, clean_sandbox, tmp_path):
    store_url = f"sqlite:///{tmp_path / 'shared.db'}"
    base_url = clean_sandbox.base_url
    other = token_store_for(store_url, base_url="https://api-billing.koywe.com/V1", api_user="someone-else")
    from datetime import UTC, datetime, timedelta

    from koywe_provider.hooks.token_store import CachedToken

    other.save(CachedToken("token-of-another-user", datetime.now(UTC) + timedelta(hours=1)))
    ours = token_store_for(store_url, base_url=base_url, api_user=clean_sandbox.credentials["username"])
    hook = KoyweHook(koywe_conn(), token_store=ours, shared_state_url=store_url)
    assert hook.get_token() != "token-of-another-user"
    assert clean_sandbox.stats()["auth_calls"] == 1
