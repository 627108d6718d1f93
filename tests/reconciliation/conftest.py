"""Fixtures of the reconciliation and archive tests: a ledger and a hook on the sandbox (the helpers that
issue and plant documents are in ``koywe_reconciliation_support``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_provider.ledger import Ledger
from koywe_reconciliation_support import CONN


@pytest.fixture
def env(koywe_conn, clean_sandbox, tmp_path, monkeypatch) -> Iterator[SimpleNamespace]:
    """``ledger`` (SQLite file, also the connection ``koywe_ledger``), ``hook`` on the sandbox (token
    primed), ``sandbox`` (reset)."""
    koywe_conn(CONN)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_KOYWE_LEDGER", json.dumps({"conn_type": "sqlite", "extra": {"sqlalchemy_url": url}})
    )
    ledger = Ledger(url)
    ledger.migrate()
    hook = KoyweHook(CONN, token_store=MemoryTokenStore())
    hook.get_token()
    yield SimpleNamespace(ledger=ledger, hook=hook, url=url, tmp_path=tmp_path, sandbox=clean_sandbox)
    ledger.dispose()
