"""One rate budget for the whole deployment: two processes calling Koywe through the hook never go
over the connection's ``requests_per_second`` together, as the sandbox counts it (all endpoints,
sliding one-second window)."""

from __future__ import annotations

import multiprocessing

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import token_store_for

RATE = 5
CALLS_EACH = 8


def _call_koywe(conn_id: str, store_url: str, base_url: str, api_user: str, start, done) -> None:
    hook = KoyweHook(
        conn_id,
        token_store=token_store_for(store_url, base_url=base_url, api_user=api_user),
        shared_state_url=store_url,
    )
    start.wait(60)
    for _ in range(CALLS_EACH):
        list(hook.list_documents(per_page=1))
    done.put(hook.calls)


def test_two_processes_share_one_budget(koywe_conn, clean_sandbox, tmp_path):
    conn_id = koywe_conn("koywe_budget", requests_per_second=RATE)
    store_url = f"sqlite:///{tmp_path / 'shared.db'}"
    base_url, api_user = clean_sandbox.base_url, clean_sandbox.credentials["username"]
    KoyweHook(
        conn_id,
        token_store=token_store_for(store_url, base_url=base_url, api_user=api_user),
        shared_state_url=store_url,
    ).get_token()
    context = multiprocessing.get_context("spawn")
    start, done = context.Event(), context.Queue()
    processes = [
        context.Process(target=_call_koywe, args=(conn_id, store_url, base_url, api_user, start, done))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    start.set()
    calls = [done.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    stats = clean_sandbox.stats()
    assert sum(calls) == 2 * CALLS_EACH and stats["auth_calls"] == 1
    assert stats["rate_limited"] == 0
    assert stats["max_requests_in_any_second"] <= RATE
