"""Fixtures for the sandbox tests: one shared sandbox process per module, reset before each test.

``sandbox`` runs on the real monotonic clock, ``manual_sandbox`` on a frozen one (``--manual-clock``: time
moves only with ``advance_clock``); ``callbacks`` is a local HTTP server recording webhook deliveries.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from sandbox_support import CallbackReceiver, get_token, session_for

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


DEFAULT_VALIDATION = {"delay_seconds": None, "outcomes": {"3": 1}}


def _clean(sb: SandboxProcess) -> SandboxProcess:
    sb.reset()
    sb.set_faults(**NO_FAULTS)
    sb.set_validation(**DEFAULT_VALIDATION)
    return sb


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset, without faults, validation only on demand."""
    return _clean(sandbox_process)


@pytest.fixture(scope="module")
def manual_sandbox_process() -> Iterator[SandboxProcess]:
    with run_sandbox(seed=1, manual_clock=True) as sb:
        yield sb


@pytest.fixture
def manual_sandbox(manual_sandbox_process: SandboxProcess) -> SandboxProcess:
    """The module's frozen-clock sandbox (``--manual-clock``), reset, without faults."""
    return _clean(manual_sandbox_process)


@pytest.fixture
def callbacks() -> Iterator[CallbackReceiver]:
    """A threaded HTTP server on a free port that answers 200 to every POST and records it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
            user, _, password = (
                base64.b64decode(encoded).decode().partition(":") if scheme == "Basic" else ("",) * 3
            )
            received.append({"path": self.path, "auth": (user, password), "body": json.loads(raw or b"null")})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield CallbackReceiver(url=f"http://127.0.0.1:{server.server_address[1]}/koywe", received=received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def token_for() -> Callable[[SandboxProcess], str]:
    return get_token


@pytest.fixture
def api(sandbox: SandboxProcess) -> Iterator[requests.Session]:
    """An authenticated session against the module sandbox (``api.base`` is its /V1 URL)."""
    session = session_for(sandbox)
    yield session
    session.close()


@pytest.fixture
def make_doc() -> Callable[..., dict[str, Any]]:
    """``make_doc(type_id=2, ref=None, draft=False, **header)`` -> a valid document body (Chile factura by
    default; ``ref`` adds the internal reference ``references[]`` entry with reference_code 5)."""

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
