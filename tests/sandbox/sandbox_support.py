"""Helpers shared by the sandbox tests (imported by ``conftest.py`` and the test modules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests

from koywe_sandbox.testing import SandboxProcess, wait_for


@dataclass
class CallbackReceiver:
    """Webhook receiver: ``url``; ``received`` holds ``{"path", "auth": (user, password), "body"}``."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def wait(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` callbacks arrived; returns them all."""
        wait_for(lambda: len(self.received) >= count, timeout, message=f"{count} callbacks")
        return list(self.received)


def get_token(sb: SandboxProcess) -> str:
    response = requests.post(
        f"{sb.base_url}/auth", json={"grant_type": "password", **sb.credentials}, timeout=5
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def session_for(sb: SandboxProcess) -> requests.Session:
    """An authenticated ``requests`` session against ``sb`` (``session.base`` is its /V1 URL)."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {get_token(sb)}"
    session.base = sb.base_url  # type: ignore[attr-defined]
    return session


def subscribe(api: requests.Session, receiver: CallbackReceiver, account_id: Any = 423) -> None:
    """Subscribe ``receiver`` to ``DOCUMENT.STATUSUPDATE`` of ``account_id`` (user ``hook``, password ``pw``)."""
    body = {
        "account_id": account_id,
        "callback_url": receiver.url,
        "callback_username": "hook",
        "callback_password": "pw",
        "event_id": "DOCUMENT.STATUSUPDATE",
    }
    response = api.post(f"{api.base}/webhook_subscriptions", json=body)
    assert response.status_code == 201, response.text
