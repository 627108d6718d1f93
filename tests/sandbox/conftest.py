"""Fixtures for the sandbox tests: one shared sandbox process per module, reset before each test."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from koywe_sandbox.testing import SandboxProcess, run_sandbox

NO_FAULTS = {
    "latency_ms": 0,
    "error_5xx_rate": 0,
    "burst_429": None,
    "lost_response_rate": 0,
    "slow_response_rate": 0,
    "slow_response_ms": 0,
    "revoke_after_documents": None,
    "rate_limit": 0,
    "seed": 1,
}

CHILE_INVOICE: dict[str, Any] = {
    "header": {
        "account_id": 423,
        "document_type_id": "2",
        "issue_date": "2025-04-15",
        "currency_id": 39,
        "receiver_tax_id_code": "76086428-5",
        "receiver_legal_name": "Cliente Demo",
    },
    "details": [
        {"quantity": 1, "line_description": "Servicio", "unit_price": 1000, "total_amount_line": 1000}
    ],
    "totals": {"net_amount": 1000, "taxes_amount": 190, "total_amount": 1190},
}


@pytest.fixture(scope="module")
def sandbox_process() -> Iterator[SandboxProcess]:
    with run_sandbox(seed=1) as sb:
        yield sb


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset and without faults."""
    sandbox_process.reset()
    sandbox_process.set_faults(**NO_FAULTS)
    return sandbox_process


def get_token(sb: SandboxProcess) -> str:
    response = requests.post(
        f"{sb.base_url}/auth", json={"grant_type": "password", **sb.credentials}, timeout=5
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture
def token_for() -> Callable[[SandboxProcess], str]:
    return get_token


@pytest.fixture
def api(sandbox: SandboxProcess) -> Iterator[requests.Session]:
    """An authenticated session against the module sandbox (``api.base`` is its /V1 URL)."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {get_token(sandbox)}"
    session.base = sandbox.base_url  # type: ignore[attr-defined]
    yield session
    session.close()


@pytest.fixture
def make_doc() -> Callable[..., dict[str, Any]]:
    """``make_doc(type_id=2, account_id=423, issue_date=..., ref=None, **header)`` -> a valid document body."""

    def build(
        type_id: int | str = 2, ref: str | None = None, draft: bool = False, **header: Any
    ) -> dict[str, Any]:
        body = copy.deepcopy(CHILE_INVOICE)
        body["header"]["document_type_id"] = type_id
        body["header"].update(header)
        if ref is not None:
            body["references"] = [{"reference_code": 5, "reference_number": ref, "description": "Internal"}]
        if draft:
            body["options"] = {"draft_only": 1}
        return body

    return build
