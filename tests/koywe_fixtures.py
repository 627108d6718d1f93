"""The fixtures shared by the whole suite (one plugin, registered by ``tests/conftest.py``).

PostgreSQL availability and throwaway databases, the sandbox (one subprocess per test module, reset per
test), Koywe connections to it, a migrated SQLite ledger (and the same on PostgreSQL), ingestion of
payloads into it, and a small Chile factura.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from koywe_test_support import chile_factura, koywe_connection_json, postgres_or_skip


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database; yields its SQLAlchemy URL and drops it afterwards."""
    from koywe_demo.databases import throwaway_database

    with throwaway_database(admin_url=postgres_or_skip()) as url:
        yield url


@pytest.fixture(scope="module")
def sandbox():
    """A sandbox subprocess shared by a test module (reset before each test by ``clean_sandbox``)."""
    from koywe_sandbox.testing import run_sandbox

    with run_sandbox(seed=7) as sb:
        yield sb


@pytest.fixture
def clean_sandbox(sandbox):
    sandbox.reset()
    sandbox.set_faults(
        latency_ms=0,
        error_5xx_rate=0,
        lost_response_rate=0,
        slow_response_rate=0,
        burst_429=None,
        revoke_after_documents=None,
    )
    return sandbox


@pytest.fixture
def koywe_conn(clean_sandbox, monkeypatch):
    """Factory: define connection ``conn_id`` (env var) to the sandbox or ``base_url``, with extras; returns the id."""
    from koywe_provider.hooks import koywe as hook_module

    hook_module._process_tokens.clear()

    def make(
        conn_id: str = "koywe_test", *, base_url: str | None = None, credentials: dict | None = None, **extra
    ) -> str:
        extra.setdefault("requests_per_second", 200)
        value = koywe_connection_json(
            base_url or clean_sandbox.base_url, credentials or clean_sandbox.credentials, **extra
        )
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        return conn_id

    yield make
    hook_module._process_tokens.clear()


@pytest.fixture
def factura():
    return chile_factura


@pytest.fixture
def ledger(tmp_path):
    """A migrated ledger on a SQLite file of its own."""
    from koywe_provider.ledger import Ledger

    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    led.migrate()
    yield led
    led.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_on_each_backend(request, tmp_path):
    """A migrated ledger on SQLite, then on a throwaway PostgreSQL database."""
    from koywe_provider.ledger import Ledger

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("pg_database").replace("postgresql://", "postgresql+psycopg2://", 1)
    led = Ledger(url)
    led.migrate()
    yield led
    led.dispose()


@pytest.fixture
def ingest():
    """``ingest(ledger, {reference: payload}, account_id="4201")`` -> ``{reference: row id}`` (valid
    ``pending`` rows)."""
    from koywe_provider.ledger import IngestItem

    def run(ledger, payloads: dict[str, dict], *, account_id: str = "4201") -> dict[str, int]:
        ledger.ingest_many(
            IngestItem(
                reference=ref,
                account_id=account_id,
                payload=payload,
                payload_hash=None,
                source="test.jsonl",
                line_no=n,
            )
            for n, (ref, payload) in enumerate(payloads.items(), start=1)
        )
        return {ref: ledger.get_by_reference(account_id, ref)["id"] for ref in payloads}

    return run
