"""Fixtures of the issuance tests: an Issuer factory on the sandbox (the ledger comes from ``koywe_fixtures``)."""

from __future__ import annotations

import pytest

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_provider.ledger import Ledger
from koywe_provider.services.issuance import IssuancePolicy, Issuer


@pytest.fixture
def make_issuer(koywe_conn):
    """Factory: an Issuer on the sandbox connection with an in-memory token store (no real waits)."""

    def make(ledger: Ledger, *, conn_id: str | None = None, owner: str = "test-issuer", **kwargs) -> Issuer:
        hook = KoyweHook(conn_id or koywe_conn(), token_store=MemoryTokenStore())
        kwargs.setdefault("policy", IssuancePolicy(retry_base_seconds=60))
        return Issuer(hook, ledger, owner=owner, run_id="test-run", task="issue", **kwargs)

    return make
