"""Fixtures of the reconciliation and archive tests: a ledger and a hook on the sandbox, and helpers that
issue documents through the real engine and plant the differences a reconciliation must find."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from koywe_provider.hooks.koywe import KoyweHook
from koywe_provider.hooks.token_store import MemoryTokenStore
from koywe_provider.ledger import IngestItem, Ledger
from koywe_provider.models.references import merge_internal_reference
from koywe_provider.services.issuance import Issuer
from koywe_test_support import chile_factura, mexico_ingreso, peru_factura

CONN = "koywe_recon_test"
DAY = "2026-11-20"


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


def payloads(day: str = DAY) -> dict[str, dict]:
    """One document per country that answers synchronously (Peru, Mexico) and a Chile factura (the
    tax bureau validates it later), all dated ``day``."""
    return {
        "CL-1": chile_factura(day),
        "CL-2": chile_factura(day, net=20_000),
        "PE-1": peru_factura(issue_date=day),
        "MX-1": mexico_ingreso(issue_date=day),
    }


def ingest(ledger: Ledger, documents: dict[str, dict]) -> dict[str, int]:
    """Ingest ``{reference: payload}`` (account from the payload); ``{reference: row id}``."""
    ledger.ingest_many(
        IngestItem(ref, str(p["header"]["account_id"]), p, None, "t.jsonl", i)
        for i, (ref, p) in enumerate(documents.items(), start=1)
    )
    return {
        ref: ledger.get_by_reference(str(p["header"]["account_id"]), ref)["id"]
        for ref, p in documents.items()
    }


def issue(env: SimpleNamespace, documents: dict[str, dict], **issuer_kwargs) -> dict[str, dict]:
    """Ingest and issue ``documents`` through the engine; ``{reference: ledger row}``."""
    ids = ingest(env.ledger, documents)
    Issuer(env.hook, env.ledger, owner="test-issue", **issuer_kwargs).issue_range(
        min(ids.values()), max(ids.values())
    )
    return {ref: env.ledger.get(pk) for ref, pk in ids.items()}


def plant(sandbox, payload: dict, reference: str | None) -> dict:
    """A document created at Koywe out of band (``reference``: its internal reference, code 5)."""
    body = copy.deepcopy(payload)
    if reference is not None:
        body = merge_internal_reference(body, reference)
    return sandbox.plant_document(body)


def age(ledger: Ledger, pk: int, *, hours: float = 7, column: str = "issued_at") -> None:
    """Move row ``pk``'s ``column`` (and, for ``attempts``, its attempts) ``hours`` into the past."""
    when = datetime.now(UTC) - timedelta(hours=hours)
    with ledger.engine.begin() as conn:
        if column == "attempts":
            conn.execute(
                sa.text("UPDATE koywe_attempts SET attempted_at = :t WHERE document_pk = :pk"),
                {"t": when.replace(tzinfo=None), "pk": pk},
            )
        else:
            conn.execute(
                sa.text(f"UPDATE koywe_documents SET {column} = :t WHERE id = :pk"),
                {"t": when.replace(tzinfo=None), "pk": pk},
            )
