"""Fixtures of the issuance tests: a migrated ledger (SQLite file) and an Issuer factory on the sandbox."""

from __future__ import annotations

import pytest

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_provider.issuance import IssuancePolicy, Issuer
from koywe_provider.ledger import IngestItem, Ledger


def _ingest(ledger: Ledger, payloads: dict[str, dict], *, account_id: str = "4201") -> dict[str, int]:
    ledger.ingest_many(
        IngestItem(
            reference=ref,
            account_id=account_id,
            payload=payload,
            payload_hash=None,
            source="issuance-test.jsonl",
            line_no=n,
        )
        for n, (ref, payload) in enumerate(payloads.items(), start=1)
    )
    return {ref: ledger.get_by_reference(account_id, ref)["id"] for ref in payloads}


@pytest.fixture
def ingest():
    """``ingest(ledger, {reference: payload})`` -> ``{reference: row id}`` (valid ``pending`` rows)."""
    return _ingest


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    led.migrate()
    yield led
    led.dispose()


@pytest.fixture
def make_issuer(koywe_conn):
    """Factory: an Issuer on the sandbox connection with an in-memory token store (no real waits)."""

    def make(ledger: Ledger, *, conn_id: str | None = None, owner: str = "test-issuer", **kwargs) -> Issuer:
        hook = KoyweHook(conn_id or koywe_conn(), token_store=MemoryTokenStore())
        kwargs.setdefault("policy", IssuancePolicy(retry_base_seconds=60))
        return Issuer(hook, ledger, owner=owner, run_id="test-run", task="issue", **kwargs)

    return make
