"""Fixtures shared by the whole suite: PostgreSQL availability, a sandbox, Koywe connections."""

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
